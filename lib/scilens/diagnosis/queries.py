"""Diagnosis queries Q1-Q7 (Table 4.2) on an activation store, as Spark DataFrame code.

A query runs over a group of items -- any mix of true class, predicted class
and correct/incorrect (:class:`Group`) -- and a layer column of the store
(:mod:`scilens.diagnosis.activations`):

=====  ========================================================  =================================
Q1     mean activation of every neuron of a layer                :func:`mean_activation`
Q2     top-k neurons of a layer for the misclassified            :func:`top_k_neurons` (Group(correct=False))
Q3     mean activation pattern, class a incorrect vs correct     :func:`mean_activation` twice
Q4     similarity of a layer and the logits, for class a         :func:`svcca` (layer, "logits")
Q5     maximally activated neurons for class a predicted as b    :func:`top_k_neurons`, :func:`max_neuron_distribution`
Q6     how fast a class's representation forms over checkpoints  :func:`svcca_between` (checkpoint t vs final)
Q7     similarity of two models' representations                 :func:`svcca_between` (model A vs model B)
=====  ========================================================  =================================

Means are Spark ML's ``Summarizer`` over ``array_to_vector`` of the layer
column and argmax histograms ``array_position(array_max)``, both in the JVM;
SVCCA of a small group (fewer items than neurons) is solved on the driver
from its rows; of a large one from moments summed per partition with
``mapInPandas`` (:mod:`scilens.diagnosis.similarity`). A neuron's index is its
position in the flattened (C-order) layer output.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from scilens.core import compat, tensor
from scilens.core.inputs import InputError
from scilens.diagnosis.metrics import GroupStats, top_k
from scilens.diagnosis.similarity import Moments, SVCCAResult, svcca_from_moments
from scilens.diagnosis.similarity import svcca as svcca_in_memory

__all__ = [
    "Group",
    "group_statistics",
    "max_neuron_distribution",
    "mean_activation",
    "representation_moments",
    "svcca",
    "svcca_between",
    "top_k_neurons",
]


@dataclass(frozen=True)
class Group:
    """Which items a query covers; unset fields do not restrict.

    Attributes
    ----------
    label : int, optional
        True class.
    prediction : int, optional
        Predicted class.
    correct : bool, optional
        Correctly (True) or incorrectly (False) classified.
    """

    label: int | None = None
    prediction: int | None = None
    correct: bool | None = None

    def condition(self) -> Column:
        """The group as a filter on the store's columns (true for every row when nothing is fixed)."""
        cond = F.lit(True)
        for name in ("label", "prediction", "correct"):
            value = getattr(self, name)
            if value is not None:
                cond = cond & (F.col(name) == F.lit(value))
        return cond

    def __str__(self) -> str:
        parts = [f"{n}={getattr(self, n)}" for n in ("label", "prediction", "correct") if getattr(self, n) is not None]
        return ", ".join(parts) or "all items"


def _check_layer(df: DataFrame, layer: str) -> None:
    if layer not in df.columns:
        raise InputError(f"no layer {layer!r} in the store; columns are {', '.join(df.columns)}")


def _vector_mean(layer: str) -> Column:
    from pyspark.ml.functions import array_to_vector, vector_to_array
    from pyspark.ml.stat import Summarizer

    return vector_to_array(Summarizer.mean(array_to_vector(F.col(layer))))


def mean_activation(df: DataFrame, layer: str, group: Group = Group()) -> np.ndarray:
    """Q1/Q3: the mean activation of every neuron of ``layer`` over ``group``."""
    _check_layer(df, layer)
    row = df.where(group.condition()).agg(_vector_mean(layer).alias("mean"), F.count("*").alias("n")).first()
    if row is None or row["n"] == 0:
        raise InputError(f"no items with {group} in the store")
    return np.asarray(row["mean"], dtype=np.float64)


def top_k_neurons(df: DataFrame, layer: str, k: int, group: Group = Group()) -> np.ndarray:
    """Q2/Q5: the ``k`` neurons of ``layer`` with the largest mean activation over ``group``, largest first."""
    return top_k(mean_activation(df, layer, group), k)


def _argmax(layer: str) -> Column:
    return (compat.array_position(F.col(layer), F.array_max(F.col(layer))) - 1).cast("int")


def max_neuron_distribution(df: DataFrame, layer: str, neurons: int, group: Group = Group()) -> np.ndarray:
    """Q5/S3: how many items of ``group`` have their largest activation at each neuron, shape (neurons,)."""
    _check_layer(df, layer)
    counts = np.zeros(neurons, dtype=np.int64)
    for row in df.where(group.condition()).groupBy(_argmax(layer).alias("neuron")).count().collect():
        counts[row["neuron"]] = row["count"]
    return counts


def group_statistics(df: DataFrame, layer: str, neurons: int,
                     by: Sequence[str] = ("label", "correct")) -> dict[tuple, GroupStats]:
    """:class:`~scilens.diagnosis.metrics.GroupStats` of ``layer`` for every group of the ``by`` columns.

    What query sets S1-S3 need, in two aggregations over the store.
    """
    _check_layer(df, layer)
    keys = [F.col(c) for c in by]
    means = df.groupBy(*keys).agg(_vector_mean(layer).alias("mean"), F.count("*").alias("n")).collect()
    hist = df.groupBy(*keys, _argmax(layer).alias("neuron")).count().collect()
    out = {tuple(r[c] for c in by): GroupStats(int(r["n"]), np.asarray(r["mean"], dtype=np.float64),
                                               np.zeros(neurons, dtype=np.int64)) for r in means}
    for r in hist:
        out[tuple(r[c] for c in by)].argmax_counts[r["neuron"]] = r["count"]
    return out


_MOMENT_SCHEMA = T.StructType([T.StructField("n", T.LongType()), *[tensor.tensor_field(name) for name in
                                                                     ("sum_a", "sum_b", "aa", "bb", "ab")]])


def representation_moments(df: DataFrame, column_a: str, column_b: str) -> Moments:
    """:class:`~scilens.diagnosis.similarity.Moments` of two array columns, summed over partitions.

    Each task adds up its rows' cross-products in float64 and returns one
    row; the frame is first coalesced to the default parallelism so only
    that many neurons x neurons matrices reach the driver.
    """
    def moments(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        total = None
        for pdf in batches:
            if not len(pdf):
                continue
            a = np.stack(pdf["a"].to_numpy()).astype(np.float64)
            b = np.stack(pdf["b"].to_numpy()).astype(np.float64)
            part = Moments(len(a), a.sum(0), b.sum(0), a.T @ a, b.T @ b, a.T @ b)
            total = part if total is None else total + part
        if total is not None:
            yield pd.DataFrame({"n": [total.n], **{name: tensor.encode_column([getattr(total, name)])
                                                   for name in ("sum_a", "sum_b", "aa", "bb", "ab")}})

    parallelism = df.sparkSession.sparkContext.defaultParallelism
    rows = (df.select(F.col(column_a).alias("a"), F.col(column_b).alias("b"))
              .coalesce(parallelism).mapInPandas(moments, _MOMENT_SCHEMA).collect())
    if not rows:
        raise InputError("no items to compare")
    parts = [Moments(r["n"], *(tensor.decode(r[name]) for name in ("sum_a", "sum_b", "aa", "bb", "ab")))
             for r in rows]
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


COLLECT_MAX_VALUES = 20_000_000
"""SVCCA of at most this many activation values (items x neurons), and no more items than neurons, is
computed on the driver from the rows (SVD, O(n^2 p)); larger groups go through moments (O(n p^2 + p^3))."""


def _svcca_of(pairs: DataFrame, keep: float) -> SVCCAResult:
    """SVCCA of the two array columns ``a`` and ``b`` of ``pairs``, by the cheaper of the two algorithms."""
    n = pairs.count()
    if n < 2:
        raise InputError(f"SVCCA needs at least two items; the group has {n}")
    sizes = pairs.select(F.size("a"), F.size("b")).first()
    if sizes is None:  # counted above: the frame has rows
        raise InputError("SVCCA: the group has no items")
    p, q = sizes
    if n <= p + q and n * (p + q) <= COLLECT_MAX_VALUES:
        rows: pd.DataFrame = pairs.toPandas()
        return svcca_in_memory(np.stack(rows["a"].to_numpy()), np.stack(rows["b"].to_numpy()), keep)
    return svcca_from_moments(representation_moments(pairs, "a", "b"), keep)


def svcca(df: DataFrame, layer_a: str, layer_b: str, group: Group = Group(), keep: float = 0.99) -> SVCCAResult:
    """Q4: SVCCA similarity of two layers of one store (e.g. a conv layer and ``logits``) over ``group``."""
    _check_layer(df, layer_a)
    _check_layer(df, layer_b)
    return _svcca_of(df.where(group.condition()).select(F.col(layer_a).alias("a"), F.col(layer_b).alias("b")), keep)


def svcca_between(df_a: DataFrame, layer_a: str, df_b: DataFrame, layer_b: str, group: Group = Group(),
                  keep: float = 0.99) -> SVCCAResult:
    """Q6/Q7: SVCCA of a layer of one store and a layer of another, over the items both hold.

    The stores are joined on ``id``; ``group`` is evaluated on the first
    store's label, prediction and correctness (for two models, whose
    predictions differ, say which one's).
    """
    _check_layer(df_a, layer_a)
    _check_layer(df_b, layer_b)
    left = df_a.where(group.condition()).select("id", F.col(layer_a).alias("a"))
    right = df_b.select("id", F.col(layer_b).alias("b"))
    return _svcca_of(left.join(right, "id").select("a", "b"), keep)
