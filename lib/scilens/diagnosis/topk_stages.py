"""Spark build of the DeepEverest activation index (:mod:`scilens.diagnosis.topk_index`).

Neurons are independent, so a layer's index is built by transposing the
activations by neuron (``posexplode`` of the layer's ``array<float>`` column:
one row per item and neuron) and building each neuron's MAI and NPI in one
task with the same kernel as the in-memory build
(:func:`~scilens.diagnosis.topk_index.build_layer_index` on one column), so
both builds are equal by construction. A task holds one neuron's column
(``N`` activations) -- the memory bound -- and nothing but counts and at most
one offending row ever reaches the driver. The per-neuron results are then
written as the three Parquet tables of the layer (directories of parts, read
back by :func:`~scilens.diagnosis.topk_index.read_layer_index`).

Input: a DataFrame with an integer id column and one ``array<float>`` column
per layer, each item's activations flattened in C order -- the activation
store's ``activations.parquet`` (:mod:`scilens.diagnosis.activations`), or
the same rows computed by one inference pass over an image table
(:func:`~scilens.diagnosis.stages.compute_activations`) and never stored.

An index built from an inference pass is queried through
:class:`InferenceSource`: candidate activations are computed again by
running the model (``predict_batch_udf``) on the candidate rows of the image
table only. Its digest (:func:`inference_digest`) covers the model file, the
image table's Parquet files and the table's column settings, so a query with
a changed model or table is refused.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from scilens.core.digest import file_digest, parquet_digest, table_root
from scilens.core.inputs import list_files
from scilens.diagnosis import stages
from scilens.diagnosis.config import ImageTableConfig
from scilens.diagnosis.image_table import ImageTable, model_info, open_image_table
from scilens.diagnosis.topk_index import build_layer_index, layer_meta, mai_size, table_bytes, write_index_meta
from scilens.vision.inference import ModelInfo, resolve_outputs

__all__ = [
    "INFERENCE_KIND",
    "InferenceSource",
    "build_index_spark",
    "build_layer_index_spark",
    "check_layer_column",
    "digest_of_parts",
    "inference_digest",
    "inference_digest_parts",
]

INFERENCE_KIND = "inference"
"""``source.kind`` of an index built by inference over an image table (and the kind of :class:`InferenceSource`)."""

ISIN_MAX = 10_000
"""Most candidate ids fetched with a literal ``isin`` filter (pushed to Parquet's row-group statistics);
more go through a broadcast semi-join."""

_NEURON_SCHEMA = (
    "neuron int, packed binary, count array<bigint>, lo array<float>, hi array<float>, "
    "mai_id array<bigint>, mai_act array<float>"
)


def check_layer_column(df: DataFrame, layer: str, id_column: str = "id") -> tuple[int, int]:
    """Refuse a layer column with missing, NaN or infinite activations, ragged rows or duplicate ids.

    Parameters
    ----------
    df : pyspark.sql.DataFrame
        The activations.
    layer : str
        The layer's ``array<float>`` column.
    id_column : str, default "id"
        The item id column.

    Returns
    -------
    tuple of int
        ``(N, n_neurons)``.

    Raises
    ------
    ValueError
        Naming the layer and the first offending item (and neuron).
    """
    if layer not in df.columns:
        raise ValueError(f"unknown layer {layer!r}; the activations have columns {df.columns}")
    inf = F.lit(float("inf"))
    broken = F.col(layer).isNull() | F.exists(layer, lambda x: x.isNull() | F.isnan(x) | (F.abs(x) == inf))
    bad = df.filter(broken).select(F.col(id_column).alias("id"), F.col(layer).alias("acts")).limit(1).collect()
    if bad:
        item, acts = bad[0]["id"], bad[0]["acts"]
        if acts is None:
            raise ValueError(f"layer {layer!r}: no activations for item id {item}")
        values = np.array([np.nan if v is None else v for v in acts], dtype=np.float64)
        neuron = int(np.flatnonzero(~np.isfinite(values))[0])
        what = "NaN" if np.isnan(values[neuron]) else "infinite"
        raise ValueError(f"layer {layer!r}: {what} activation for item id {item} at neuron {neuron}; the model or "
                         "store is broken")
    stats = df.agg(F.count(F.lit(1)).alias("n"), F.countDistinct(id_column).alias("ids"),
                   F.min(F.size(layer)).alias("lo"), F.max(F.size(layer)).alias("hi")).first()
    if stats is None or stats["n"] == 0:
        raise ValueError(f"layer {layer!r}: no items")
    if stats["ids"] != stats["n"]:
        raise ValueError(f"{stats['n'] - stats['ids']} duplicate item ids in column {id_column!r}")
    if stats["lo"] != stats["hi"]:
        raise ValueError(f"layer {layer!r}: rows hold {stats['lo']} to {stats['hi']} activations, expected one size")
    return int(stats["n"]), int(stats["hi"])


def _neuron_builder(layer: str, n_partitions: int, ratio: float) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def build(pdf: pd.DataFrame) -> pd.DataFrame:
        neuron = int(pdf["neuron"].iloc[0])
        li = build_layer_index(pdf["activation"].to_numpy(dtype=np.float32), layer=layer, n_partitions=n_partitions,
                               ratio=ratio, ids=pdf["id"].to_numpy(dtype=np.int64), first_neuron=neuron)
        return pd.DataFrame({
            "neuron": [neuron], "packed": [li.packed[0]], "count": [li.count[0].tolist()],
            "lo": [li.lo[0].tolist()], "hi": [li.hi[0].tolist()],
            "mai_id": [li.ids[li.mai_pos[0]].tolist()], "mai_act": [li.mai_act[0].tolist()],
        })

    return build


def build_layer_index_spark(df: DataFrame, layer: str, output: str | os.PathLike[str], *, n_partitions: int = 64,
                            ratio: float = 0.05, id_column: str = "id",
                            shape: Sequence[int] | None = None) -> dict[str, Any]:
    """Build and write one layer's index with Spark, under ``<output>/<layer>/``.

    Parameters
    ----------
    df : pyspark.sql.DataFrame
        Id column and the layer's ``array<float>`` column.
    layer : str
        The layer column (also the index's layer name).
    output : path-like
        The index directory (a local or mounted path).
    n_partitions : int, default 64
        ``P``.
    ratio : float, default 0.05
        MAI ratio.
    id_column : str, default "id"
        Item id column.
    shape : sequence of int, optional
        The layer's per-item shape (default ``(n_neurons,)``).

    Returns
    -------
    dict
        The layer's ``index.json`` entry (:func:`~scilens.diagnosis.topk_index.layer_meta`).
    """
    n_items, n_neurons = check_layer_column(df, layer, id_column)
    if shape is not None and math.prod(shape) != n_neurons:
        raise ValueError(f"layer {layer!r}: shape {tuple(shape)} does not hold {n_neurons} neurons")
    transposed = df.select(F.col(id_column).cast("long").alias("id"),
                           F.posexplode(F.col(layer).cast("array<float>")).alias("neuron", "activation"))
    per_neuron = (transposed.groupBy("neuron")
                  .applyInPandas(_neuron_builder(layer, n_partitions, ratio), _NEURON_SCHEMA)
                  .persist(StorageLevel.MEMORY_AND_DISK))
    try:
        tables = {
            "mai": per_neuron.select("neuron", F.posexplode(F.arrays_zip("mai_id", "mai_act")))
                             .select("neuron", F.col("pos").cast("int").alias("rank"),
                                     F.col("col.mai_id").alias("id"), F.col("col.mai_act").alias("activation")),
            "npi": per_neuron.select("neuron", "packed"),
            "bounds": per_neuron.select("neuron", F.posexplode(F.arrays_zip("count", "lo", "hi")))
                                .select("neuron", F.col("pos").cast("int").alias("partition"),
                                        F.col("col.count").alias("count"), F.col("col.lo").alias("lo"),
                                        F.col("col.hi").alias("hi")),
        }
        folder = Path(output) / layer
        sizes = {}
        for name, table in tables.items():
            table.write.mode("overwrite").parquet(str(folder / f"{name}.parquet"))
            sizes[name] = table_bytes(folder / f"{name}.parquet")
    finally:
        per_neuron.unpersist()
    return layer_meta(tuple(shape) if shape is not None else (n_neurons,), mai_size(n_items, ratio), sizes)


def build_index_spark(df: DataFrame, layers: Sequence[str], output: str | os.PathLike[str], *,
                      source: Mapping[str, Any], n_partitions: int = 64, ratio: float = 0.05, id_column: str = "id",
                      shapes: Mapping[str, Sequence[int]] | None = None) -> dict[str, Any]:
    """Build the index of every layer in ``layers`` with Spark and write ``ids.parquet`` and ``index.json``.

    Parameters
    ----------
    df : pyspark.sql.DataFrame
        Id column and one ``array<float>`` column per layer (an activation store's table).
    layers : sequence of str
        Layers to index.
    output : path-like
        The index directory.
    source : mapping
        What the index is built from, with a ``digest`` the queries check.
    n_partitions : int, default 64
        ``P``.
    ratio : float, default 0.05
        MAI ratio.
    id_column : str, default "id"
        Item id column.
    shapes : mapping of str to sequence of int, optional
        Per-item shape of each layer (default flat).

    Returns
    -------
    dict
        The metadata written to ``index.json``.
    """
    if not layers:
        raise ValueError("no layers to index")
    if "digest" not in source:
        raise ValueError("source must carry a 'digest' so that queries on another store are refused")
    shapes = shapes or {}
    metas = {layer: build_layer_index_spark(df, layer, output, n_partitions=n_partitions, ratio=ratio,
                                            id_column=id_column, shape=shapes.get(layer)) for layer in layers}
    ids = df.select(F.col(id_column).cast("long").alias("id"))
    ids.write.mode("overwrite").parquet(str(Path(output) / "ids.parquet"))
    n_items = ids.sparkSession.read.parquet(str(Path(output) / "ids.parquet")).count()
    return write_index_meta(output, n_items=n_items, n_partitions=n_partitions, ratio=ratio, layers=metas,
                            source=source)


# --- re-inference: candidate activations from the model, never from a store -----------------------------------


def inference_digest_parts(model: str | os.PathLike[str], images: Sequence[str | os.PathLike[str]],
                           columns: ImageTableConfig | None = None) -> dict[str, Any]:
    """What :func:`inference_digest` combines, so that a mismatch can name what changed.

    Parameters
    ----------
    model : path-like
        The saved Keras model.
    images : sequence of path-like
        The image table's inputs (Parquet files, directories or globs).
    columns : ImageTableConfig, optional
        Which columns hold id, label and image (default: the defaults).

    Returns
    -------
    dict
        ``model`` (:func:`~scilens.core.digest.file_digest`), ``images``
        (per input, :func:`~scilens.core.digest.parquet_digest` of the Parquet
        files read, named relative to the input's directory, so that a table
        copied or moved whole keeps its digest) and ``columns`` (the column settings).
    """
    tables = []
    for path in images:
        item = os.fspath(path)
        tables.append(parquet_digest(list_files([item], (".parquet",)), root=table_root(item)))
    return {"model": file_digest(model), "images": tables, "columns": (columns or ImageTableConfig()).to_dict()}


def inference_digest(model: str | os.PathLike[str], images: Sequence[str | os.PathLike[str]],
                     columns: ImageTableConfig | None = None) -> str:
    """Digest of the activations an inference pass computes: the model's bytes, the table's files and columns.

    Parameters
    ----------
    model : path-like
        The saved Keras model.
    images : sequence of path-like
        The image table's inputs.
    columns : ImageTableConfig, optional
        Which columns hold id, label and image.

    Returns
    -------
    str
        ``"inference:sha256:<hex>"``.
    """
    return digest_of_parts(inference_digest_parts(model, images, columns))


def digest_of_parts(parts: Mapping[str, Any]) -> str:
    """Combine :func:`inference_digest_parts` into the one digest an index records.

    Parameters
    ----------
    parts : mapping
        From :func:`inference_digest_parts`.

    Returns
    -------
    str
        ``"inference:sha256:<hex>"``.
    """
    return "inference:sha256:" + hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


class InferenceSource:
    """Candidate activations computed by running the model on the candidate rows of an image table only.

    Implements :class:`~scilens.diagnosis.topk.ActivationSource`. The digest
    is computed at construction (cheap: the model's bytes and the table's
    Parquet footers); the model is described and the table opened and
    checked at the first fetch, once per source. Each fetch keeps only the
    asked ids of the table and runs one ``predict_batch_udf`` pass over them
    (:func:`~scilens.diagnosis.stages.compute_activations`), so the rows
    fetched are the rows inferred.

    Parameters
    ----------
    spark : SparkSession
    images : sequence of path-like
        The image table's inputs (as given to the index build).
    model : path-like
        The saved Keras model.
    columns : ImageTableConfig, optional
        Which columns hold id, label and image.
    batch_size : int, default 128
        Images per model call.
    """

    kind = INFERENCE_KIND

    def __init__(self, spark: SparkSession, images: Sequence[str | os.PathLike[str]], model: str | os.PathLike[str],
                 columns: ImageTableConfig | None = None, batch_size: int = 128) -> None:
        self.spark = spark
        self.images = [os.fspath(p) for p in images]
        self.model = os.fspath(model)
        self.columns = columns or ImageTableConfig()
        self.batch_size = int(batch_size)
        self.parts = inference_digest_parts(self.model, self.images, self.columns)
        self._digest = digest_of_parts(self.parts)
        self._opened: tuple[ModelInfo, ImageTable] | None = None

    @property
    def digest(self) -> str:
        """Return :func:`inference_digest` of the model, table and columns."""
        return self._digest

    def opened(self) -> tuple[ModelInfo, ImageTable]:
        """Return the model's description and the checked image table (opened at the first call only).

        Returns
        -------
        tuple
            (:class:`~scilens.vision.inference.ModelInfo`, :class:`~scilens.diagnosis.image_table.ImageTable`).
        """
        if self._opened is None:
            info = model_info(self.model)
            self._opened = info, open_image_table(self.spark, self.images, self.columns, info)
        return self._opened

    def fetcher(self, layer: str) -> Callable[[np.ndarray], np.ndarray]:
        """Return the re-inference of ``layer`` for asked ids.

        Parameters
        ----------
        layer : str
            A layer of the model.

        Returns
        -------
        Fetch
            ids (int64 array) -> (len(ids), n_neurons) float32, in the order asked;
            an id absent from the table (or rejected there) raises ValueError naming it.
        """
        info, table = self.opened()
        resolve_outputs(info, [layer])
        n_neurons = math.prod(info.output_shape(layer))

        def fetch(wanted: np.ndarray) -> np.ndarray:
            wanted = np.asarray(wanted, dtype=np.int64)
            unique = np.unique(wanted)
            if unique.size == 0:
                return np.empty((0, n_neurons), dtype=np.float32)
            got, values = self._infer(info, table, layer, unique)
            absent = np.setdiff1d(unique, got)
            if absent.size:
                shown = ", ".join(map(str, absent[:10].tolist())) + (", ..." if absent.size > 10 else "")
                raise ValueError(f"item id {shown} not in the image table {table.source} (or rejected there)")
            order = np.argsort(got)
            return values[order[np.searchsorted(got[order], wanted)]]

        return fetch

    def _infer(self, info: ModelInfo, table: ImageTable, layer: str,
               ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids found, (n, n_neurons) float32) of the table's rows with these ids, by one inference pass."""
        frame = table.frame
        if ids.size <= ISIN_MAX:
            rows = frame.where(F.col("id").isin([int(i) for i in ids]))
        else:
            wanted = self.spark.createDataFrame(pd.DataFrame({"id": ids.astype(np.int64)}))
            rows = stages.keep_ids(frame, wanted)
        acts = stages.compute_activations(rows, info, [layer], table.layout, self.batch_size).select("id", layer)
        with stages.activation_batches(self.spark, info, [layer], self.batch_size):
            pdf: pd.DataFrame = acts.toPandas()
        got = pdf["id"].to_numpy(dtype=np.int64)
        n_neurons = math.prod(info.output_shape(layer))
        values = (np.stack(pdf[layer].to_numpy()).astype(np.float32) if len(pdf)
                  else np.empty((0, n_neurons), dtype=np.float32))
        return got, values.reshape(len(got), n_neurons)
