"""Approximate aggregates over Spark tables: sampled tables, the Spark reader, the diagnosis queries.

A *sampled table* (:func:`write_sampled`) is a Parquet table with a stored uniform column ``_u`` in
[0, 1), range-partitioned into files by ``_u`` and sorted by it within each file in small row groups,
with a sidecar ``_scilens_sample.json`` (what it is: column, seed, key, rows). The sample of fraction
``f`` is the rows with ``_u < f``; each row group's footer statistics hold its ``_u`` range, so the
Parquet reader skips every row group starting at or above ``f`` and a sample reads about ``f`` of the
row groups (:func:`sample_read_cost` counts them from the footers). ``df.sample(f)`` draws the same
kind of sample but decodes every row to draw it.

``_u`` is ``F.rand(seed)`` by default: reproducible for a given input partitioning. Given ``key`` (a
column that identifies rows), it is a hash of the key and the seed instead, the same whatever the
partitioning, so a rewritten table samples the same rows.

:func:`approx` (a path or a DataFrame) returns the builder of :mod:`scilens.guarantees.approx` over a
:class:`SparkReader`: every step is one Spark aggregation over the rows with ``f_{k-1} <= _u < f_k``
(means and totals: ``count``, ``avg``, ``var_samp`` per group in the JVM; quantiles: the slice's values
collected to the driver through Arrow, which the order-statistic interval needs whole). A DataFrame
without ``_u`` is still answered, with a warning: ``_u`` is drawn on the fly (``F.rand(seed)``), so every
step scans the whole table; write it once with :func:`write_sampled` to read less.

The diagnosis queries of :mod:`scilens.diagnosis.queries` on an activation store (layers are array
columns) get intervals through :func:`approx_mean_activation` (Q1), :func:`approx_compare_mean_activation` (Q3),
:func:`approx_top_k_neurons` (Q2, Q5's top neurons) and :func:`approx_max_neuron_distribution` (Q5's
argmax histogram). They take the store's items group as a Spark Column, a SQL string, or any object
with a ``condition()`` method returning one (``scilens.diagnosis.queries.Group``; the study is not
imported: studies do not import each other). Q4 (SVCCA) has no interval here: it is not a mean of
per-row values, and would need the bootstrap over items.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from scilens.core import compat
from scilens.core.parquet import ROW_GROUP_BYTES, ReadCost, write_sorted
from scilens.core.session import get_spark
from scilens.guarantees.approx import U_COLUMN, Answer, Approx, Moments, Spec, Step
from scilens.guarantees.config import ORACLE_OUTPUTS

__all__ = [
    "ORACLE_COLUMN",
    "ORACLE_OUTPUTS",
    "SAMPLE_FILE",
    "ModelOracle",
    "SampledTable",
    "SparkEstimate",
    "SparkOracle",
    "SparkReader",
    "SparkSelection",
    "approx",
    "approx_compare_mean_activation",
    "approx_max_neuron_distribution",
    "approx_mean_activation",
    "approx_top_k_neurons",
    "estimate_mean_spark",
    "open_table",
    "proxy_scores",
    "sample_read_cost",
    "select_spark",
    "uniform_column",
    "write_sampled",
]

SAMPLE_FILE = "_scilens_sample.json"
"""The sidecar of a sampled table (Spark's readers skip files starting with ``_``)."""

_FORMAT = "scilens.sampled/1"
_HASH_BITS = 53  # a double holds 53-bit integers exactly: u = (hash mod 2^53) / 2^53 in [0, 1)


@dataclass(frozen=True)
class SampledTable:
    """What the sidecar of a sampled table says.

    Attributes
    ----------
    path : str
        The table directory.
    rows : int
        Rows in the table.
    seed : int
        Seed of ``_u``.
    key : str, optional
        The column ``_u`` is a hash of (none: ``F.rand(seed)``).
    """

    path: str
    rows: int
    seed: int
    key: str | None = None

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> SampledTable:
        """Read the sidecar of the sampled table at ``path``.

        Raises
        ------
        ValueError
            ``path`` holds no sidecar (not written by :func:`write_sampled`), naming the remedy.
        """
        meta = Path(path) / SAMPLE_FILE
        if not meta.exists():
            raise ValueError(f"{path}: not a sampled table (no {SAMPLE_FILE}); write one with write_sampled()")
        info = json.loads(meta.read_text())
        if info.get("format") != _FORMAT:
            raise ValueError(f"{meta}: format {info.get('format')!r}, expected {_FORMAT!r}")
        return cls(os.fspath(path), int(info["rows"]), int(info["seed"]), info.get("key"))


def uniform_column(seed: int, key: str | None = None) -> Column:
    """The ``_u`` column: ``F.rand(seed)``, or a seeded 53-bit hash of ``key`` scaled to [0, 1)."""
    if key is None:
        return F.rand(seed)
    bits = F.xxhash64(F.lit(seed), F.col(key)).bitwiseAND(F.lit((1 << _HASH_BITS) - 1))
    return bits.cast("double") / float(1 << _HASH_BITS)


def write_sampled(df: DataFrame, path: str | os.PathLike[str], *, seed: int, key: str | None = None,
                  row_group_bytes: int = ROW_GROUP_BYTES, files: int | None = None) -> SampledTable:
    """Write ``df`` as a sampled table: a stored uniform ``_u``, files and row groups in ``_u`` order.

    Parameters
    ----------
    df : pyspark.sql.DataFrame
        The rows (without a ``_u`` column).
    path : path-like
        The table directory (overwritten); a local or mounted path (the sidecar is written there).
    seed : int
        Seed of ``_u``.
    key : str, optional
        A column identifying rows: ``_u`` is then a hash of it and ``seed`` (independent of the
        partitioning) instead of ``F.rand(seed)``.
    row_group_bytes : int, default 256 KiB
        Row-group size (uncompressed): the granularity of a sample's read. The files hold consecutive
        ``_u`` ranges, so a fraction ``f`` reads about ``f`` of the row groups plus the one it ends in
        (and every file's footer); keep ``1 / f`` well below the number of row groups. Given in bytes, not
        rows, because Parquet's writer closes a row group on its buffered size
        (:func:`scilens.core.parquet.write_sorted`, the one writer of sorted tables).
    files : int, optional
        Output files, each a ``_u`` range (default: the session's default parallelism).

    Returns
    -------
    SampledTable
        The sidecar's content.

    Raises
    ------
    ValueError
        ``df`` already has a ``_u`` column, or no column ``key``.
    """
    if U_COLUMN in df.columns:
        raise ValueError(f"the frame already has a {U_COLUMN!r} column: it is the sampled table's own")
    if key is not None and key not in df.columns:
        raise ValueError(f"no key column {key!r}; columns are {', '.join(df.columns)}")
    files = files or df.sparkSession.sparkContext.defaultParallelism
    write_sorted(df.withColumn(U_COLUMN, uniform_column(seed, key)), path, [U_COLUMN],
                 row_group_bytes=row_group_bytes, files=files)
    rows = df.sparkSession.read.parquet(os.fspath(path)).count()
    table = SampledTable(os.fspath(path), rows, seed, key)
    (Path(path) / SAMPLE_FILE).write_text(json.dumps(
        {"format": _FORMAT, "column": U_COLUMN, "rows": rows, "seed": seed, "key": key,
         "row_group_bytes": row_group_bytes, "files": files}, indent=1))
    return table


def sample_read_cost(path: str | os.PathLike[str], fraction: float) -> tuple[ReadCost, ReadCost]:
    """Row groups and bytes the sample ``_u < fraction`` reads, from the footers of a sampled table.

    A row group is read when its ``_u`` minimum is below ``fraction`` (the statistics filter skips the
    others); all its column chunks count.

    Parameters
    ----------
    path : path-like
        A sampled table.
    fraction : float
        The sample's fraction.

    Returns
    -------
    tuple of ReadCost
        ``(read, whole table)``.
    """
    import pyarrow.parquet as pq

    read, whole = ReadCost(), ReadCost()
    for part in sorted(Path(path).rglob("*.parquet")):
        meta = pq.ParquetFile(part).metadata
        u_index = meta.schema.to_arrow_schema().get_field_index(U_COLUMN)
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            size = sum(group.column(c).total_compressed_size for c in range(group.num_columns))
            whole.row_groups += 1
            whole.bytes += size
            stats = group.column(u_index).statistics
            if stats is None or not stats.has_min_max or stats.min < fraction:
                read.row_groups += 1
                read.bytes += size
    return read, whole


def _condition(where: Any) -> Column:
    """A Spark condition from a Column, a SQL string, or an object with ``condition()`` (a diagnosis Group)."""
    if isinstance(where, Column):
        return where
    if isinstance(where, str):
        return F.expr(where)
    if hasattr(where, "condition"):
        return where.condition()
    raise TypeError(f"a condition is a Column, a SQL string or has condition(); got {type(where).__name__}")


class SparkReader:
    """The statistics of a slice of ``_u`` of a Spark table, for :class:`~scilens.guarantees.approx.Approx`.

    Parameters
    ----------
    df : pyspark.sql.DataFrame
        The table, with a ``_u`` column.
    rows_total : int
        Rows in it.
    """

    def __init__(self, df: DataFrame, rows_total: int) -> None:
        self.df = df
        self.rows_total = int(rows_total)
        self.columns = list(df.columns)

    def _is_array(self, column: str) -> bool:
        return isinstance(self.df.schema[column].dataType, T.ArrayType)

    def read(self, spec: Spec, low: float, high: float) -> Step:
        """Statistics of ``spec`` over the rows with ``low <= _u < high``."""
        part = self.df.where((F.col(U_COLUMN) >= F.lit(low)) & (F.col(U_COLUMN) < F.lit(high)))
        keep = F.lit(True)
        for where in spec.where:
            keep = keep & F.coalesce(_condition(where), F.lit(False))
        keys = [F.col(c) for c in spec.by]
        if spec.kind == "quantile":
            rows: pd.DataFrame = part.select(*keys, F.when(keep, F.col(str(spec.column)).cast("double"))
                                             .alias("_v")).toPandas()
            values = rows.dropna(subset=["_v"])
            groups: dict[tuple, Any] = {}
            parts = values.groupby(list(spec.by), dropna=False) if spec.by else [((), values)]
            for key, group in parts:
                groups[key if isinstance(key, tuple) else (key,)] = group["_v"].to_numpy(dtype=np.float64)
            return Step(len(rows), groups)
        if spec.kind == "mean" and self._is_array(str(spec.column)):
            return self._vector_mean(part, spec, keep)
        if spec.kind == "count":
            value = F.when(keep, F.lit(1.0)).otherwise(F.lit(0.0))
        elif spec.kind == "sum":
            value = F.when(keep, F.coalesce(F.col(str(spec.column)).cast("double"), F.lit(0.0))).otherwise(0.0)
        else:
            value = F.when(keep, F.col(str(spec.column)).cast("double"))
        counted = F.count(F.lit(1)) if spec.is_total else F.count(value)
        result = part.groupBy(*keys).agg(F.count(F.lit(1)).alias("_rows"), counted.alias("_n"),
                                         F.avg(value).alias("_mean"), F.var_samp(value).alias("_var")).collect()
        step = Step(sum(r["_rows"] for r in result), {})
        for r in result:
            if r["_n"]:
                step.groups[tuple(r[c] for c in spec.by)] = Moments.from_variance(r["_n"], r["_mean"], r["_var"])
        return step

    def _vector_mean(self, part: DataFrame, spec: Spec, keep: Column) -> Step:
        """Elementwise moments of an array column (an activation layer) with Spark ML's Summarizer.

        The Summarizer takes no null vector and fails on a group of zero weight, so it runs over the kept
        rows only, and the slice's rows are counted by a second job.
        """
        from pyspark.ml.functions import array_to_vector, vector_to_array
        from pyspark.ml.stat import Summarizer

        column = F.col(str(spec.column))
        summary = Summarizer.metrics("mean", "variance", "count").summary(array_to_vector(column))
        keys = [F.col(c) for c in spec.by]
        stats = (part.where(keep & column.isNotNull()).groupBy(*keys).agg(summary.alias("_s"))
                 .select(*keys, F.col("_s.count").alias("_n"), vector_to_array(F.col("_s.mean")).alias("_mean"),
                         vector_to_array(F.col("_s.variance")).alias("_var")).collect())
        step = Step(part.count(), {})
        for r in stats:
            step.groups[tuple(r[c] for c in spec.by)] = Moments.from_variance(
                r["_n"], np.asarray(r["_mean"]), np.asarray(r["_var"]))
        return step


def _open(source: DataFrame | str | os.PathLike[str], spark: SparkSession | None,
          seed: int) -> tuple[DataFrame, int]:
    """The frame (with ``_u``) and its row count, from a sampled table's path or a DataFrame."""
    if isinstance(source, DataFrame):
        if U_COLUMN not in source.columns:
            warnings.warn(f"the frame has no stored {U_COLUMN!r} column: drawing it on the fly, so every sample "
                          f"scans the whole table; write it once with write_sampled(df, path, seed=...) and "
                          f"pass the path to read about f of it", stacklevel=3)
            source = source.withColumn(U_COLUMN, uniform_column(seed))
        return source, source.count()
    table = SampledTable.open(source)
    session = spark or get_spark()  # the active session when there is one
    return session.read.parquet(table.path), table.rows


def approx(source: DataFrame | str | os.PathLike[str], *, spark: SparkSession | None = None,
           seed: int = 0) -> Approx:
    """Approximate aggregates over a sampled table (a path) or any DataFrame (see the module doc).

    ``approx(path).group_by("g").mean("x").within_ci(0.95, error=0.01)``; each answer is an
    :class:`~scilens.guarantees.approx.Answer` (estimate, low, high, rows read, rows in the table).

    Parameters
    ----------
    source : DataFrame or path-like
        A sampled table's directory (its size is read from the sidecar), or a DataFrame: with a ``_u``
        column (e.g. a sampled table read and filtered), counted once; without, ``_u`` is drawn on the
        fly with a warning (every step then scans the table).
    spark : SparkSession, optional
        Session reading a path (default: :func:`scilens.core.session.get_spark`, the active one if any).
    seed : int
        Seed of an on-the-fly ``_u``.

    Returns
    -------
    Approx
        The builder: ``mean``, ``sum``, ``count(where=)``, ``quantile``, ``group_by``, ``where``.
    """
    df, rows = _open(source, spark, seed)
    return Approx(SparkReader(df, rows))


def _query(source: DataFrame | str | os.PathLike[str], layer: str, group: Any, confidence: float,
           error: float | None, seconds: float | None, fraction: float | None, build: Any) -> Answer:
    """Run ``build(Approx)`` (a Query) within ``error``, ``seconds``, or at ``fraction``: exactly one of them."""
    if sum(x is not None for x in (error, seconds, fraction)) != 1:
        raise ValueError("give exactly one of error=, seconds= or fraction=")
    df, rows = _open(source, None, 0)
    if layer not in df.columns:
        raise ValueError(f"no layer {layer!r} in the store; columns are {', '.join(df.columns)}")
    builder = Approx(SparkReader(df.withColumn("_neuron", (compat.array_position(
        F.col(layer), F.array_max(F.col(layer))) - 1).cast("int")), rows))
    if group is not None:
        builder = builder.where(_condition(group))
    query = build(builder)
    if error is not None:
        return query.within_ci(confidence, error=error)
    if seconds is not None:
        return query.within_time(seconds, confidence)
    return query.at(float(fraction or 1.0), confidence)


def approx_mean_activation(source: DataFrame | str | os.PathLike[str], layer: str, group: Any = None, *,
                           confidence: float = 0.95, error: float | None = None, seconds: float | None = None,
                           fraction: float | None = None) -> Answer:
    """Q1/Q3: the mean activation of every neuron of ``layer`` over ``group``, with intervals.

    Parameters
    ----------
    source : DataFrame or path-like
        A sampled activation store table (:func:`write_sampled` of the store's ``activations.parquet``).
    layer : str
        The layer column (flattened arrays).
    group : Column, str or diagnosis Group, optional
        The items (default all).
    confidence : float
        Two-sided coverage of each neuron's interval.
    error, seconds, fraction : float
        Exactly one: stop when every neuron's half-width is at most ``error``, within ``seconds``, or
        read the fixed sample ``_u < fraction``.

    Returns
    -------
    Answer
        ``estimate``, ``low``, ``high``: arrays of one value per neuron (CLT + FPC, per neuron).
    """
    return _query(source, layer, group, confidence, error, seconds, fraction, lambda a: a.mean(layer))


def approx_compare_mean_activation(source: DataFrame | str | os.PathLike[str], layer: str, group_a: Any,
                                   group_b: Any, *, confidence: float = 0.95, error: float | None = None,
                                   seconds: float | None = None,
                                   fraction: float | None = None) -> tuple[Answer, Answer, np.ndarray]:
    """Q3: the mean activation pattern of two groups (class ``a`` incorrect vs correct), with intervals.

    Parameters
    ----------
    source, layer, confidence, error, seconds, fraction
        As :func:`approx_mean_activation` (``seconds`` is each group's budget).
    group_a, group_b : Column, str or diagnosis Group
        The two groups.

    Returns
    -------
    a, b : Answer
        Each group's :func:`approx_mean_activation`.
    differs : numpy.ndarray
        Per neuron, whether the two intervals are disjoint (the means differ, at ``1 - 2 (1 - confidence)``
        jointly by the union bound).
    """
    a, b = (approx_mean_activation(source, layer, g, confidence=confidence, error=error, seconds=seconds,
                                   fraction=fraction) for g in (group_a, group_b))
    differs = (np.asarray(a.low) > np.asarray(b.high)) | (np.asarray(b.low) > np.asarray(a.high))
    return a, b, differs


def approx_top_k_neurons(source: DataFrame | str | os.PathLike[str], layer: str, k: int, group: Any = None, *,
                         confidence: float = 0.95, error: float | None = None, seconds: float | None = None,
                         fraction: float | None = None) -> tuple[np.ndarray, Answer, bool]:
    """Q2/Q5: the ``k`` neurons of ``layer`` with the largest estimated mean activation over ``group``.

    Parameters
    ----------
    source, layer, group, confidence, error, seconds, fraction
        As :func:`approx_mean_activation`.
    k : int
        Neurons wanted.

    Returns
    -------
    neurons : numpy.ndarray
        Their indices, largest estimate first.
    means : Answer
        Every neuron's mean and interval.
    certain : bool
        Whether the intervals separate the set: the ``k``-th neuron's low end is above every other
        neuron's high end (each interval at ``confidence``; no multiplicity correction).
    """
    means = approx_mean_activation(source, layer, group, confidence=confidence, error=error, seconds=seconds,
                                   fraction=fraction)
    estimate = np.asarray(means.estimate)
    order = np.argsort(-estimate, kind="stable")
    top, rest = order[:k], order[k:]
    certain = bool(rest.size == 0 or np.min(np.asarray(means.low)[top]) > np.max(np.asarray(means.high)[rest]))
    return top, means, certain


def approx_max_neuron_distribution(source: DataFrame | str | os.PathLike[str], layer: str, neurons: int,
                                   group: Any = None, *, confidence: float = 0.95, error: float | None = None,
                                   seconds: float | None = None, fraction: float | None = None) -> Answer:
    """Q5/S3: how many items of ``group`` have their largest activation at each neuron, with intervals.

    Parameters
    ----------
    source, layer, group, confidence, error, seconds, fraction
        As :func:`approx_mean_activation` (``error`` in items).
    neurons : int
        Neurons of the layer.

    Returns
    -------
    Answer
        ``estimate``, ``low``, ``high``: arrays of one count per neuron (a neuron no sampled item peaks
        at has estimate 0 and the exact binomial upper end of the group's rows).
    """
    answer = _query(source, layer, group, confidence, error, seconds, fraction,
                    lambda a: a.group_by("_neuron").count())
    groups = answer.groups or {}
    estimate, low, high = np.zeros(neurons), np.zeros(neurons), np.zeros(neurons)
    unseen = (1.0 - ((1.0 - confidence) / 2.0) ** (1.0 / max(answer.rows_read, 1))) * answer.rows_total
    high[:] = 0.0 if answer.rows_read >= answer.rows_total else unseen
    for (neuron,), a in groups.items():
        if neuron is not None and 0 <= neuron < neurons:
            estimate[neuron], low[neuron], high[neuron] = a.estimate, a.low, a.high
    return Answer(estimate, low, high, answer.rows_read, answer.rows_total, confidence, answer.method,
                  answer.fraction, answer.seconds)



# --- aggregation and selection with an oracle, on Spark -------------------------------------------------------

ORACLE_COLUMN = "oracle"
"""The oracle's values in the frames :class:`SparkOracle` returns."""

_SHOWN_IDS = 10  # ids named in an error message


def _as_spark(df: DataFrame | pd.DataFrame) -> DataFrame:
    """A Spark frame (a pandas frame, for small data, becomes one in the active session)."""
    if isinstance(df, DataFrame):
        return df
    return get_spark().createDataFrame(df)


def _named(ids: Any) -> str:
    ids = list(ids)
    more = f" and {len(ids) - _SHOWN_IDS} more" if len(ids) > _SHOWN_IDS else ""
    return ", ".join(str(i) for i in ids[:_SHOWN_IDS]) + more


def proxy_scores(df: DataFrame, proxy: str) -> pd.DataFrame:
    """``id`` and ``proxy`` of every row, on the driver, ordered by ``id``.

    The in-memory methods need the whole proxy column (strata, ranking, sampling weights): one id and
    one double per row, ~16 bytes, which bounds the table at ~10^8 rows on a default driver (a few GB
    of memory). Ordering by ``id`` makes the draw independent of the table's partitioning.

    Parameters
    ----------
    df : pyspark.sql.DataFrame
        The population, with an ``id`` column.
    proxy : str
        The proxy column.

    Returns
    -------
    pandas.DataFrame
        Columns ``id`` and ``proxy`` (float64), one row per table row.

    Raises
    ------
    scilens.core.inputs.InputError
        A column is missing, an id repeats or a proxy value is null (naming the ids).
    """
    from scilens.core.inputs import InputError
    from scilens.core.session import restored_conf

    missing = [c for c in ("id", proxy) if c not in df.columns]
    if missing:
        raise InputError(f"no column {', '.join(map(repr, missing))} in the table (columns: {', '.join(df.columns)})")
    spark = df.sparkSession
    # two numbers per row: batches of 64k rows, not the session's default sized for images
    with restored_conf(spark, "spark.sql.execution.arrow.maxRecordsPerBatch", "65536"):
        scores: pd.DataFrame = df.select(F.col("id"), F.col(proxy).cast("double").alias("proxy")).orderBy("id") \
            .toPandas()
    nulls = scores.loc[scores["proxy"].isna(), "id"]
    if len(nulls):
        raise InputError(f"proxy {proxy!r} is null (or not a number) for {len(nulls)} rows, ids {_named(nulls)}: "
                         f"fill them or leave them out with where")
    repeated = scores.loc[scores["id"].duplicated(), "id"]
    if len(repeated):
        raise InputError(f"id is not unique: ids {_named(repeated.unique())} repeat")
    return scores.reset_index(drop=True)


class ModelOracle:
    """A saved Keras model as the oracle, run on the executors on the asked rows' images only.

    :class:`SparkOracle` hands it the table's rows with the sampled ids (a broadcast semi-join); it runs
    the model on those rows alone with :func:`scilens.vision.inference.model_outputs` (one
    ``predict_batch_udf`` pass: the model is loaded once per Python worker, images decoded by the
    inference module) and returns one value per row. The model, the image column and the class are
    checked here, on the driver, before anything is sampled.

    Parameters
    ----------
    df : pyspark.sql.DataFrame
        The table (for the image column's layout).
    model : str or path-like
        A saved single-input Keras classifier (``model.save("m.keras")``), readable from every executor.
    image : str
        The image column: a scilens tensor column or a flattened numeric array.
    image_shape : sequence of int, optional
        One image's shape when ``image`` is a flattened array.
    oracle_class : int
        The class the oracle is about (a single sigmoid unit: 1 is ``p``, 0 is ``1 - p``).
    output : str
        ``"flag"``: 1 where the model says ``oracle_class``, else 0 (with ``threshold`` null, the model's
        predicted class, i.e. the argmax (a single sigmoid unit: ``p > 0.5``); with a threshold ``t``,
        the class's probability ``>= t``); ``"probability"``: the class's probability.
    threshold : float, optional
        See ``output``.
    batch_size : int
        Images per model call.

    Attributes
    ----------
    inferred : list of numpy.ndarray
        The ids the model ran on, one array per call (what the tests check against the sample).

    Raises
    ------
    scilens.core.inputs.InputError
        The model file is missing (named) or not a Keras classifier, the image column is missing or
        does not fit the model's input, or the class is not one of the model's.
    """

    def __init__(self, df: DataFrame, model: str | os.PathLike[str], image: str = "image",
                 image_shape: list[int] | None = None, oracle_class: int = 1, output: str = "flag",
                 threshold: float | None = None, batch_size: int = 128) -> None:
        from scilens.core.inputs import InputError
        from scilens.vision.inference import check_model_input, describe_model, image_layout

        if output not in ORACLE_OUTPUTS:
            raise ValueError(f"output must be one of {ORACLE_OUTPUTS}, not {output!r}")
        if not Path(model).is_file():  # describe_model says so too; here before TensorFlow is imported
            raise InputError(f"oracle_model {os.fspath(model)}: no such file")
        self.info = describe_model(Path(model))
        if not 0 <= oracle_class < self.info.n_classes:
            raise InputError(f"oracle_class {oracle_class}: model {self.info.path} has classes 0 .. "
                             f"{self.info.n_classes - 1}")
        self.layout = image_layout(df, image, image_shape)
        self.shape = check_model_input(self.info, self.layout, "oracle_model")
        self.oracle_class, self.output, self.threshold = oracle_class, output, threshold
        self.batch_size = batch_size
        self.inferred: list[np.ndarray] = []

    def __repr__(self) -> str:
        """What the answer files name as the oracle."""
        how = (f"probability of class {self.oracle_class}" if self.output == "probability" else
               f"class {self.oracle_class} predicted" if self.threshold is None else
               f"probability of class {self.oracle_class} >= {self.threshold}")
        return f"model {self.info.path} ({how})"

    def evaluate(self, rows: DataFrame) -> pd.DataFrame:
        """``id`` and ``oracle`` (double) of ``rows`` whose image the model can take, inferred on the executors.

        Parameters
        ----------
        rows : pyspark.sql.DataFrame
            The asked rows of the table (every column).

        Returns
        -------
        pandas.DataFrame
            One row per valid image; a row left out (null or malformed image) has no value, which
            :class:`SparkOracle` reports by id.
        """
        from scilens.vision.inference import PREDICTION, PROBABILITIES, invalid_image_reason, model_outputs

        # the UDF must not see an image it cannot decode: those rows are dropped before it, not masked after
        valid = rows.where(invalid_image_reason(self.layout, self.shape).isNull())
        outputs = model_outputs(self.info, [PROBABILITIES, PREDICTION], self.layout, self.batch_size)
        scored = valid.select("id", outputs.alias("_out"))
        p = F.col("_out").getField(PROBABILITIES)
        single = self.info.layers[self.info.final_dense][-1] == 1  # one sigmoid unit: p is class 1's
        prob = (p[0] if self.oracle_class == 1 else 1.0 - p[0]) if single else p[self.oracle_class]
        if self.output == "probability":
            value = prob.cast("double")
        elif self.threshold is None:
            value = (F.col("_out").getField(PREDICTION) == self.oracle_class).cast("double")
        else:
            value = (prob >= F.lit(float(self.threshold))).cast("double")
        found: pd.DataFrame = scored.select("id", value.alias(ORACLE_COLUMN)).toPandas()
        self.inferred.append(found["id"].to_numpy())
        return found


class SparkOracle:
    """The oracle's values of sampled rows, fetched from the Spark table by id (one Spark job per call).

    Wrapped in :class:`scilens.guarantees.oracle.Oracle`, which counts the rows; this records them
    with their values and the call that evaluated them.

    Parameters
    ----------
    df : pyspark.sql.DataFrame
        The table, with ``id``.
    source : str, ModelOracle or callable
        A column of ``df`` (read for the sampled rows only), a :class:`ModelOracle` (run on the
        executors on the sampled rows only), or a function from a pandas frame of the sampled rows
        (every column of ``df``, on the driver) to one value per row.
    value_range : tuple of float, optional
        Values outside it are an error naming the ids.
    """

    def __init__(self, df: DataFrame, source: str | Any,
                 value_range: tuple[float, float] | None = None) -> None:
        from scilens.core.inputs import InputError

        if isinstance(source, str) and source not in df.columns:
            raise InputError(f"no oracle column {source!r} in the table (columns: {', '.join(df.columns)})")
        self.df = df
        self.source = source
        self.value_range = value_range
        self.drawn: list[pd.DataFrame] = []

    def __call__(self, rows: pd.DataFrame) -> np.ndarray:
        """Oracle values of ``rows`` (a frame with ``id``), in their order."""
        from scilens.core.inputs import InputError

        ids = rows[["id"]].reset_index(drop=True)
        wanted = self.df.sparkSession.createDataFrame(ids)
        asked = self.df.join(F.broadcast(wanted), "id", "left_semi")
        if isinstance(self.source, ModelOracle):  # the values are made by Spark, not on the driver
            fetched = self.source.evaluate(asked)
        elif isinstance(self.source, str):
            fetched = asked.select(F.col("id"), F.col(self.source).cast("double").alias(ORACLE_COLUMN)).toPandas()
        else:
            fetched = asked.toPandas()
        fetched = ids.merge(fetched, on="id", how="left", validate="one_to_one")
        if isinstance(self.source, (str, ModelOracle)):
            values = fetched[ORACLE_COLUMN].to_numpy(dtype=np.float64)
        else:
            values = np.asarray(self.source(fetched), dtype=np.float64).reshape(-1)
        bad = np.isnan(values)
        if self.value_range is not None:
            bad |= (values < self.value_range[0]) | (values > self.value_range[1])
        if bad.any():
            where = f" outside {list(self.value_range)}" if self.value_range is not None else ""
            why = " (the model's: a null or malformed image gives none)" if isinstance(self.source, ModelOracle) \
                else ""
            raise InputError(f"oracle value null{where}{why} for ids {_named(ids['id'][bad])}")
        self.drawn.append(pd.DataFrame({"id": ids["id"].to_numpy(), "oracle": values, "call": len(self.drawn) + 1}))
        return values

    def sample(self, scores: pd.DataFrame, drawn_ids: np.ndarray) -> pd.DataFrame:
        """The evaluated rows in draw order: ``draw``, ``draws``, ``call``, ``id``, ``proxy``, ``oracle``.

        Parameters
        ----------
        scores : pandas.DataFrame
            :func:`proxy_scores`.
        drawn_ids : numpy.ndarray
            Every draw's id in draw order (repeats: draws with replacement).

        Returns
        -------
        pandas.DataFrame
            One row per evaluated row, ordered by its first draw (``draw``, from 0); ``draws`` is how
            often it was drawn and ``call`` the oracle call that evaluated it (a call's rows are
            fetched in id order).
        """
        drawn = (pd.concat(self.drawn, ignore_index=True) if self.drawn
                 else pd.DataFrame({"id": scores["id"].iloc[:0], "oracle": [], "call": []}))
        out = drawn.merge(scores, on="id", how="left")
        ids, first, counts = np.unique(np.asarray(drawn_ids), return_index=True, return_counts=True)
        where = np.searchsorted(ids, out["id"].to_numpy())
        if len(ids) != len(out) or not np.array_equal(ids[np.minimum(where, len(ids) - 1)], out["id"].to_numpy()):
            raise RuntimeError(f"the method drew {len(ids)} rows, the oracle evaluated {len(out)}")
        out["draw"] = np.argsort(np.argsort(first[where], kind="stable"), kind="stable")
        out["draws"] = counts[where]
        return out.sort_values("draw")[["draw", "draws", "call", "id", "proxy", "oracle"]].reset_index(drop=True)


@dataclass
class SparkEstimate:
    """What :func:`estimate_mean_spark` returns: the answer and the sample it was computed from.

    Attributes
    ----------
    estimate : scilens.guarantees.aggregation.Estimate
        Estimate, interval, oracle calls, history.
    sample : pandas.DataFrame
        The evaluated rows in draw order (:meth:`SparkOracle.sample`).
    rows : int
        Rows in the population.
    """

    estimate: Any
    sample: pd.DataFrame
    rows: int


def estimate_mean_spark(df: DataFrame | pd.DataFrame, proxy: str, oracle: str | Any, error: float, delta: float,
                        method: str = "blazeit++", seed: int = 0, *, budget: int | None = None,
                        **options: Any) -> SparkEstimate:
    """:func:`~scilens.guarantees.aggregation.estimate_mean` over a Spark table.

    The proxy column is collected to the driver (:func:`proxy_scores`: one double per row, which bounds
    the table at ~10^8 rows on a default driver) and the in-memory method runs on it, ordered by ``id``:
    the same seed draws the same sample and gives the same answer as ``estimate_mean`` on the table's
    rows sorted by id. The oracle reads only the sampled rows, fetched from Spark by id, and is counted
    by an :class:`~scilens.guarantees.oracle.Oracle`.

    Parameters
    ----------
    df : pyspark.sql.DataFrame or pandas.DataFrame
        The population with an ``id`` column (pandas: small data).
    proxy : str
        The proxy column.
    oracle : str, ModelOracle or callable
        An oracle column, a model (:class:`ModelOracle`), or a function of a pandas frame of sampled
        rows (see :class:`SparkOracle`).
    error, delta : float
        Half-width and failure probability.
    method : str
        One of :data:`scilens.guarantees.aggregation.METHODS`.
    seed : int
        Seed of every random choice.
    budget : int, optional
        Most rows the oracle may evaluate (:class:`~scilens.guarantees.oracle.BudgetExceeded` past it).
    **options
        ``value_range``, ``pilot``, ``strata``, ``first_stage``, ``relative`` of ``estimate_mean``.

    Returns
    -------
    SparkEstimate
        The estimate, the sample with its oracle values, the population's rows.
    """
    from scilens.guarantees.aggregation import estimate_mean
    from scilens.guarantees.oracle import Oracle

    if not 0.0 < delta < 1.0 or error <= 0.0:  # before any Spark job
        raise ValueError(f"need 0 < delta < 1 and error > 0, got delta={delta}, error={error}")
    frame = _as_spark(df)
    spark_oracle = SparkOracle(frame, oracle, options.get("value_range", (0.0, 1.0)))
    scores = proxy_scores(frame, proxy)
    counted = Oracle(spark_oracle, budget)
    answer = estimate_mean(scores, "proxy", counted, error, delta, method, seed, **options)
    if answer.oracle_calls != counted.calls:
        raise RuntimeError(f"oracle counted {counted.calls} rows, the method reports {answer.oracle_calls}")
    return SparkEstimate(answer, spark_oracle.sample(scores, answer.drawn_ids), len(scores))


@dataclass
class SparkSelection:
    """What :func:`select_spark` returns.

    Attributes
    ----------
    selection : scilens.guarantees.selection.Selection
        Threshold, selected ids (on the driver), oracle calls.
    selected : pyspark.sql.DataFrame
        The selected rows of the table: ``proxy >= threshold`` union the sampled positives.
    sample : pandas.DataFrame
        The evaluated rows in draw order (:meth:`SparkOracle.sample`) and ``mass``, each row's
        importance mass ``(1/|D|) / q``.
    rows : int
        Rows in the population.
    """

    selection: Any
    selected: DataFrame
    sample: pd.DataFrame
    rows: int


def select_spark(df: DataFrame | pd.DataFrame, proxy: str, oracle: str | Any, target: str, target_value: float,
                 delta: float, budget: int, method: str = "supg", bound: str = "clt",
                 seed: int = 0) -> SparkSelection:
    """:func:`~scilens.guarantees.selection.select_recall` or ``select_precision`` over a Spark table.

    The proxy column is collected to the driver (:func:`proxy_scores`, ~10^8 rows at most on a default
    driver), the in-memory method draws the sample and finds the proxy cut, and the selection is a
    Spark filter ``proxy >= threshold`` union the sampled positives (a broadcast semi-join by id).

    Parameters
    ----------
    df : pyspark.sql.DataFrame or pandas.DataFrame
        The population with an ``id`` column.
    proxy : str
        The proxy column (scores in [0, 1]).
    oracle : str, ModelOracle or callable
        An oracle column (0/1), a model (:class:`ModelOracle`, a 0/1 flag) or a function of a pandas
        frame of sampled rows.
    target : str
        ``"recall"`` or ``"precision"``.
    target_value : float
        The recall or precision to guarantee.
    delta : float
        Failure probability.
    budget : int
        Importance draws; the oracle evaluates at most this many rows.
    method, bound : str
        As in :func:`~scilens.guarantees.selection.select_recall`.
    seed : int
        Seed of every random choice.

    Returns
    -------
    SparkSelection
        The selection, the selected rows as a Spark frame, the sample.
    """
    from scilens.guarantees.oracle import Oracle
    from scilens.guarantees.selection import sampling_weights, select_precision, select_recall

    if target not in ("recall", "precision"):
        raise ValueError(f"target must be recall or precision, not {target!r}")
    if not 0.0 < target_value <= 1.0 or not 0.0 < delta < 1.0 or budget < 2:
        raise ValueError(f"need 0 < target_value <= 1, 0 < delta < 1, budget >= 2; got {target_value}, {delta}, "
                         f"{budget}")
    frame = _as_spark(df)
    spark_oracle = SparkOracle(frame, oracle, (0.0, 1.0))
    scores = proxy_scores(frame, proxy)
    counted = Oracle(spark_oracle, budget)
    chooser = select_recall if target == "recall" else select_precision
    answer = chooser(scores, "proxy", counted, target_value, delta, budget, method, bound, seed)
    if answer.oracle_calls != counted.calls:
        raise RuntimeError(f"oracle counted {counted.calls} rows, the method reports {answer.oracle_calls}")
    sample = spark_oracle.sample(scores, answer.drawn_ids)
    # each sampled row's importance mass (1/|D|) / q, for plotting recall over the population
    values = scores["proxy"].to_numpy()
    order = np.argsort(-values, kind="stable")
    masses = np.empty(len(values))
    masses[order] = (1.0 / len(values)) / sampling_weights(values[order], method)
    sample["mass"] = masses[np.searchsorted(scores["id"].to_numpy(), sample["id"].to_numpy())]
    positives = frame.sparkSession.createDataFrame(
        pd.DataFrame({"id": sample.loc[sample["oracle"] > 0, "id"].to_numpy()}),
        schema=T.StructType([T.StructField("id", frame.schema["id"].dataType)]))
    score = F.col(proxy).cast("double")
    cut = frame.where(score >= F.lit(answer.threshold))
    extra = frame.join(F.broadcast(positives), "id", "left_semi").where(~(score >= F.lit(answer.threshold)))
    return SparkSelection(answer, cut.unionByName(extra), sample, len(scores))


def open_table(spark: SparkSession, inputs: list[str], where: str | None) -> DataFrame:
    """The one Parquet table of a guarantees job, restricted by ``where``.

    Parameters
    ----------
    spark : pyspark.sql.SparkSession
    inputs : list of str
        The job's inputs: exactly one table.
    where : str or None
        Spark SQL condition choosing the population.

    Returns
    -------
    pyspark.sql.DataFrame
    """
    from scilens.core.inputs import InputError

    if len(inputs) != 1:
        raise InputError(f"give exactly one table as input, got {len(inputs)}")
    frame = spark.read.parquet(inputs[0])
    if "id" not in frame.columns:
        raise InputError(f"{inputs[0]} has no id column (columns: {', '.join(frame.columns)})")
    return frame.where(where) if where else frame
