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
store's ``activations.parquet`` (:mod:`scilens.diagnosis.activations`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from scilens.diagnosis.topk_index import build_layer_index, layer_meta, mai_size, table_bytes, write_index_meta

__all__ = ["build_index_spark", "build_layer_index_spark", "check_layer_column"]

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
