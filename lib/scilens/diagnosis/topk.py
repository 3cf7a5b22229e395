"""Exact top-k activation queries over a DeepEverest index (:mod:`scilens.diagnosis.topk_index`).

Two queries, both exact and both returning a pandas DataFrame ``(id, score)``
ordered best first with ties broken by id ascending:

* :meth:`ActivationIndex.highest` -- the ``k`` items with the highest
  aggregate (``sum``, ``mean`` or ``max``) activation over a neuron group;
* :meth:`ActivationIndex.nearest` -- the ``k`` items nearest (L2 over the
  group's activations) to a given item, the item itself included (distance 0).

Scores are computed in float64 from the float32 activations, accumulating
over the group's neurons in the order given (``sum``, ``mean = sum / g``,
``max``; L2 = ``sqrt(sum (a - q)**2)``), so a brute force using the same
definition gives bit-identical scores.

How the index answers a query (a threshold algorithm, after Fagin's TA and
the paper's Neural Threshold Algorithm): the group's MAI lists give exact
activations of each neuron's top items (sorted access); for every other
(item, neuron) the item's packed partition id gives its partition's
``[lo, hi]``. Hence every item has a bound on its score -- an upper bound
for ``highest`` (``hi`` or the exact value per neuron), a lower bound on the
distance for ``nearest`` (0 inside ``[lo, hi]``, else the gap to the nearer
end) -- and the bound *is* the score when all the group's neurons hold the
item in their MAI. Items are visited in order of bound (best first, ties by
id) in growing batches; only those whose score is not already known and
whose bound can still enter the current top k are fetched; the scan stops
at the first unvisited item that cannot precede the current k-th result in
(score, id) order -- every later item is bounded no better, so the result is
exact, ties included. Float rounding keeps the argument intact: the bound
and the score are the same float expression with every operand moved the
same way, and rounding is monotone. Items whose bound is worse than the
k-th best *guaranteed* score (from the opposite bounds) are never visited.

Activations are fetched through a small interface (:class:`ActivationSource`:
a digest, and per layer a callable from an int64 id array to the
``(len(ids), n_neurons)`` activations), so the same query runs over an
in-memory matrix (:class:`MatrixSource`), a Parquet activation store
(:class:`ParquetSource`) or re-inference of the model on the candidates
only (:class:`~scilens.diagnosis.topk_stages.InferenceSource`). The
source's digest must equal the one recorded at build time: the MAI's exact
values stand in for fetched ones.

A layer's index tables are read whole at its first query and kept;
:attr:`ActivationIndex.last_stats` counts the index bytes a selective reader
needs for the group (its MAI rows, packed partition ids and bounds), since
that is the cost once tables are read per neuron.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from scilens.diagnosis.topk_index import (
    LayerIndex,
    activation_digest,
    read_index_meta,
    read_item_ids,
    read_layer_index,
)

__all__ = [
    "AGGREGATES",
    "ActivationIndex",
    "ActivationSource",
    "Fetch",
    "MatrixSource",
    "ParquetSource",
    "QueryStats",
]

Fetch = Callable[[np.ndarray], np.ndarray]
AGGREGATES = ("sum", "mean", "max")
METRICS = ("l2",)


class ActivationSource(Protocol):
    """Where candidate activations come from: a digest and one fetch callable per layer."""

    @property
    def digest(self) -> str:
        """Digest of the activations (must equal the index's ``source.digest``)."""
        ...

    @property
    def kind(self) -> str:
        """What the source is (``"matrix"``, ``"store"``, ``"inference"``), reported per query."""
        ...

    def fetcher(self, layer: str) -> Fetch:
        """Return a callable: ids (int64 array) -> (len(ids), n_neurons) activations of ``layer``."""
        ...


class MatrixSource:
    """Activations held in memory, one (N, ...) array per layer.

    Parameters
    ----------
    layers : mapping of str to numpy.ndarray
        Layer name to (N, ...) activations (flattened per item to neurons).
    ids : numpy.ndarray, optional
        (N,) item ids of the rows (default ``0..N-1``).
    """

    kind = "matrix"

    def __init__(self, layers: Mapping[str, np.ndarray], ids: np.ndarray | None = None) -> None:
        first = next(iter(layers.values()))
        item_ids = np.arange(len(first), dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        order = np.argsort(item_ids, kind="stable")
        self._ids = item_ids[order]
        self._layers = {
            name: np.ascontiguousarray(np.asarray(a)[order].reshape(len(a), -1), dtype=np.float32)
            for name, a in layers.items()
        }
        self._digest = activation_digest(layers, ids)

    @property
    def digest(self) -> str:
        """Digest of the matrices (:func:`~scilens.diagnosis.topk_index.activation_digest`)."""
        return self._digest

    def fetcher(self, layer: str) -> Fetch:
        """Return the row lookup for ``layer``.

        Parameters
        ----------
        layer : str
            Layer name.

        Returns
        -------
        Fetch
            ids -> (len(ids), n_neurons) float32.
        """
        matrix = self._layers[layer]
        ids = self._ids

        def fetch(wanted: np.ndarray) -> np.ndarray:
            return matrix[np.searchsorted(ids, wanted)]

        return fetch


class ParquetSource:
    """Activations read from a Parquet table (the activation store's ``activations.parquet``), by id.

    At construction the id column is read once to map every id to its file,
    row group and row (:class:`~scilens.core.parquet.KeyedParquet`: 8 bytes
    per item read, about 24 held); a fetch then decodes only the one layer
    column of the row groups holding the asked ids. The activations job
    writes its store sorted by id in small row groups
    (:func:`~scilens.core.parquet.write_sorted`), so that is a few hundred
    rows per candidate; a store with large row groups is read correctly, just
    with more decoding. :attr:`cost` accumulates the row groups and bytes decoded.

    Parameters
    ----------
    table : path-like
        A Parquet file or directory with an integer ``id_column`` and one
        ``list<float>`` column per layer, flattened per item.
    digest : str
        The digest recorded for these activations when the store was written
        (computing one here would read the whole store, which the index exists to avoid).
    id_column : str, default "id"
        The item id column.
    """

    kind = "store"

    def __init__(self, table: str | os.PathLike[str], digest: str, id_column: str = "id") -> None:
        from scilens.core.parquet import KeyedParquet, ReadCost

        self._table = KeyedParquet(table, id_column)
        self._digest = digest
        self.cost = ReadCost()

    @property
    def digest(self) -> str:
        """Return the digest given for the store."""
        return self._digest

    def fetcher(self, layer: str) -> Fetch:
        """Return the row lookup for ``layer``.

        Parameters
        ----------
        layer : str
            Layer column.

        Returns
        -------
        Fetch
            ids -> (len(ids), n_neurons) float32, in the order asked.
        """
        from scilens.core.parquet import MissingKeys

        def fetch(wanted: np.ndarray) -> np.ndarray:
            try:
                table, cost = self._table.read(wanted, [layer])
            except MissingKeys as err:
                shown = ", ".join(map(str, err.absent[:5].tolist()))
                raise ValueError(f"the store lacks {err.absent.size} of the item ids asked for, e.g. {shown}") from err
            self.cost.row_groups += cost.row_groups
            self.cost.bytes += cost.bytes
            column = table.column(layer).combine_chunks()
            values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
            return values.reshape(len(column), -1)

        return fetch


@dataclass
class QueryStats:
    """What the last query cost.

    Attributes
    ----------
    rows_fetched : int
        Candidate items whose activations were fetched (the query item included).
    partitions_read : int
        Distinct (neuron, partition) pairs whose members were fetched (partition 0 = MAI).
    bytes_read : int
        Index bytes a selective reader needs for the group (its MAI rows, packed
        partition ids and bounds) plus fetched rows x neurons x 4.
    seconds : float
        Wall time of the query.
    source : str
        Where the candidates came from (the source's ``kind``).
    n_items : int
        ``N``, to read ``rows_fetched`` as a fraction.
    store_row_groups : int
        Row groups of the store decoded for the query's fetches (0 for a
        source that reads no Parquet: matrix, re-inference).
    store_bytes : int
        Compressed bytes of the store's column chunks decoded for them:
        what the fetches really read, whole row groups of the layer column
        (``bytes_read`` counts only the fetched rows' values).
    """

    rows_fetched: int
    partitions_read: int
    bytes_read: int
    seconds: float
    source: str
    n_items: int
    store_row_groups: int = 0
    store_bytes: int = 0


@dataclass
class _Group:
    """Per-item bounds of a neuron group: (N, g) float64 ``lo``/``hi`` (exact where in MAI)."""

    cols: np.ndarray
    rows: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    exact: np.ndarray
    pids: np.ndarray
    index_bytes: int


def _aggregate(values: np.ndarray, agg: str) -> np.ndarray:
    """Score (n, g) float64 activations; left-to-right so it is one fixed float expression per row."""
    if agg == "max":
        return np.asarray(values.max(axis=1))
    total = values[:, 0].copy()
    for c in range(1, values.shape[1]):
        total += values[:, c]
    return total / values.shape[1] if agg == "mean" else total


def _l2(diffs: np.ndarray) -> np.ndarray:
    total = diffs[:, 0] * diffs[:, 0]
    for c in range(1, diffs.shape[1]):
        total += diffs[:, c] * diffs[:, c]
    return np.sqrt(total)


class ActivationIndex:
    """An activation index on disk, opened against the activations it was built from.

    Use :meth:`open`; queries are :meth:`highest` and :meth:`nearest`, and
    :attr:`last_stats` tells what the last one cost.
    """

    def __init__(self, path: str, meta: dict[str, Any], ids: np.ndarray, source: ActivationSource) -> None:
        self.path = path
        self.meta = meta
        self.ids = ids
        self.source = source
        self.last_stats: QueryStats | None = None
        self._layers: dict[str, LayerIndex] = {}

    @classmethod
    def open(cls, path: str | os.PathLike[str], source: ActivationSource) -> ActivationIndex:
        """Open the index at ``path``; refuse it if ``source`` is not what it was built from.

        Parameters
        ----------
        path : path-like
            The index directory (holding ``index.json``).
        source : ActivationSource
            Where candidate activations are fetched from.

        Returns
        -------
        ActivationIndex
            The opened index.

        Raises
        ------
        ValueError
            When the source's digest differs from the one recorded at build time.
        """
        meta = read_index_meta(path)
        built = meta["source"].get("digest")
        if source.digest != built:
            raise ValueError(
                f"digest mismatch: the index at {path} was built from activations with digest {built}, "
                f"but the {source.kind} source given has digest {source.digest}; rebuild the index"
            )
        return cls(os.fspath(path), meta, read_item_ids(path), source)

    @property
    def layers(self) -> list[str]:
        """Return the indexed layers."""
        return list(self.meta["layers"])

    @property
    def n_items(self) -> int:
        """Return ``N``."""
        return int(self.meta["N"])

    # ------------------------------------------------------------------------------------ validation

    def _check_layer(self, layer: str) -> int:
        if layer not in self.meta["layers"]:
            raise ValueError(f"unknown layer {layer!r}; the index has layers {self.layers}")
        return int(self.meta["layers"][layer]["neurons"])

    def _check_group(self, layer: str, neurons: int | Sequence[int], k: int) -> np.ndarray:
        n_neurons = self._check_layer(layer)
        group = np.atleast_1d(np.asarray(neurons))
        if group.ndim != 1 or group.size == 0 or not np.issubdtype(group.dtype, np.integer):
            raise ValueError(f"neurons must be a non-empty list of integers, got {neurons!r}")
        bad = group[(group < 0) | (group >= n_neurons)]
        if bad.size:
            raise ValueError(f"neuron {int(bad[0])} out of range for layer {layer!r} (neurons 0..{n_neurons - 1})")
        uniq, counts = np.unique(group, return_counts=True)
        if (counts > 1).any():
            raise ValueError(f"neuron {int(uniq[counts > 1][0])} repeated in the group {group.tolist()}")
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= self.n_items:
            raise ValueError(f"k must be an integer in 1..N={self.n_items}, got {k!r}")
        return group.astype(np.int64)

    def _position(self, item_id: int) -> int:
        if isinstance(item_id, bool) or not isinstance(item_id, int | np.integer):
            raise ValueError(f"item id must be an integer, got {item_id!r}")
        pos = int(np.searchsorted(self.ids, item_id))
        if pos >= self.n_items or self.ids[pos] != item_id:
            raise ValueError(f"item id {item_id!r} is not in the index ({self.n_items} items)")
        return pos

    # ------------------------------------------------------------------------------------ machinery

    def _layer(self, layer: str) -> LayerIndex:
        if layer not in self._layers:
            self._layers[layer] = read_layer_index(self.path, layer, self.meta, self.ids)
        return self._layers[layer]

    def _group(self, layer: str, group: np.ndarray) -> _Group:
        li = self._layer(layer)
        rows = np.searchsorted(li.neurons, group)
        n, g = li.n_items, len(group)
        lo, hi = np.empty((n, g)), np.empty((n, g))
        exact = np.zeros((n, g), dtype=bool)
        pids = np.empty((n, g), dtype=np.uint16)
        index_bytes = 0
        for c, r in enumerate(rows):
            pid = li.partition_ids(int(r))
            pids[:, c] = pid
            lo[:, c] = li.lo[r, pid]
            hi[:, c] = li.hi[r, pid]
            # The MAI holds the exact value: the bound collapses to it.
            lo[li.mai_pos[r], c] = hi[li.mai_pos[r], c] = li.mai_act[r]
            exact[li.mai_pos[r], c] = True
            index_bytes += li.mai_pos.shape[1] * 12 + len(li.packed[r]) + li.n_partitions * 16
        return _Group(group, rows, lo, hi, exact.all(axis=1), pids, index_bytes)

    def _fetch(self, layer: str, fetch: Fetch, positions: np.ndarray, cols: np.ndarray) -> np.ndarray:
        n_neurons = int(self.meta["layers"][layer]["neurons"])
        got = np.asarray(fetch(self.ids[positions]))
        if got.shape != (len(positions), n_neurons):
            raise ValueError(
                f"the {self.source.kind} source returned shape {got.shape} for {len(positions)} items of "
                f"layer {layer!r}, expected {(len(positions), n_neurons)}"
            )
        return got[:, cols].astype(np.float64)

    def _run(
        self,
        layer: str,
        grp: _Group,
        key_bound: np.ndarray,
        key_worst: np.ndarray,
        score_key: Callable[[np.ndarray], np.ndarray],
        k: int,
        fetched: list[np.ndarray],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Visit items by bound on ``key`` (smaller is better) until none can enter the top k.

        ``key_bound`` is a lower bound of every item's key (equal to it where
        ``grp.exact``); ``key_worst`` an upper bound. Returns (positions, keys)
        of the top k, best first, ties by position (= id).
        """
        fetch = self.source.fetcher(layer)
        # At least k items have key <= tau, so an item whose bound exceeds tau can never enter.
        tau = np.partition(key_worst, k - 1)[k - 1]
        cand = np.flatnonzero(key_bound <= tau)
        cand = cand[np.lexsort((cand, key_bound[cand]))]
        best_pos = np.empty(0, dtype=np.int64)
        best_key = np.empty(0)
        i, batch = 0, k
        while i < len(cand):
            if len(best_pos) == k and (best_key[-1], best_pos[-1]) < (key_bound[cand[i]], cand[i]):
                break
            chunk = cand[i : i + batch]
            i, batch = i + len(chunk), batch + batch // 2 + 1
            known = chunk[grp.exact[chunk]]
            pos = np.concatenate([best_pos, known])
            keys = np.concatenate([best_key, key_bound[known]])
            top = np.lexsort((pos, keys))[:k]
            best_pos, best_key = pos[top], keys[top]
            need = chunk[~grp.exact[chunk]]
            if len(best_pos) == k:
                kth = (best_key[-1], best_pos[-1])
                need = need[(key_bound[need] < kth[0]) | ((key_bound[need] == kth[0]) & (need < kth[1]))]
            if need.size:
                fetched.append(need)
                keys_need = score_key(self._fetch(layer, fetch, need, grp.cols))
                pos = np.concatenate([best_pos, need])
                keys = np.concatenate([best_key, keys_need])
                top = np.lexsort((pos, keys))[:k]
                best_pos, best_key = pos[top], keys[top]
        return best_pos, best_key

    def _store_cost(self) -> tuple[int, int]:
        """(row groups, bytes) the source has decoded so far; (0, 0) for sources without a ``cost``."""
        cost = getattr(self.source, "cost", None)
        return (int(cost.row_groups), int(cost.bytes)) if cost is not None else (0, 0)

    def _finish(
        self, layer: str, grp: _Group, fetched: list[np.ndarray], started: float, cost_before: tuple[int, int]
    ) -> None:
        rows = np.unique(np.concatenate(fetched)) if fetched else np.empty(0, dtype=np.int64)
        parts = sum(len(np.unique(grp.pids[rows, c])) for c in range(len(grp.cols)))
        n_neurons = int(self.meta["layers"][layer]["neurons"])
        seconds = time.perf_counter() - started
        cost_after = self._store_cost()
        self.last_stats = QueryStats(
            rows_fetched=int(rows.size),
            partitions_read=int(parts),
            bytes_read=int(grp.index_bytes + rows.size * n_neurons * 4),
            seconds=seconds,
            source=self.source.kind,
            n_items=self.n_items,
            store_row_groups=cost_after[0] - cost_before[0],
            store_bytes=cost_after[1] - cost_before[1],
        )

    # ------------------------------------------------------------------------------------ queries

    def highest(self, layer: str, neurons: int | Sequence[int], k: int, agg: str = "sum") -> pd.DataFrame:
        """Return the ``k`` items with the highest aggregate activation over ``neurons``.

        Parameters
        ----------
        layer : str
            Indexed layer.
        neurons : int or sequence of int
            The group: distinct flat neuron numbers of the layer.
        k : int
            Number of items, ``1..N``.
        agg : {"sum", "mean", "max"}, default "sum"
            Aggregate over the group.

        Returns
        -------
        pandas.DataFrame
            Columns ``id`` (int64) and ``score`` (float64), highest first, ties by id.
        """
        group = self._check_group(layer, neurons, k)
        if agg not in AGGREGATES:
            raise ValueError(f"unknown aggregate {agg!r}; use one of {AGGREGATES}")
        started, cost_before = time.perf_counter(), self._store_cost()
        grp = self._group(layer, group)
        fetched: list[np.ndarray] = []
        pos, key = self._run(
            layer,
            grp,
            key_bound=-_aggregate(grp.hi, agg),
            key_worst=-_aggregate(grp.lo, agg),
            score_key=lambda rows: -_aggregate(rows, agg),
            k=k,
            fetched=fetched,
        )
        self._finish(layer, grp, fetched, started, cost_before)
        return pd.DataFrame({"id": self.ids[pos], "score": -key})

    def nearest(
        self, layer: str, neurons: int | Sequence[int], item_id: int, k: int, metric: str = "l2"
    ) -> pd.DataFrame:
        """Return the ``k`` items nearest to ``item_id`` in the group's activations (itself included).

        Parameters
        ----------
        layer : str
            Indexed layer.
        neurons : int or sequence of int
            The group: distinct flat neuron numbers of the layer.
        item_id : int
            The query item (must be indexed).
        k : int
            Number of items, ``1..N``.
        metric : {"l2"}, default "l2"
            Distance.

        Returns
        -------
        pandas.DataFrame
            Columns ``id`` (int64) and ``score`` (float64, the distance), nearest first, ties by id.
        """
        group = self._check_group(layer, neurons, k)
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; use one of {METRICS}")
        target = self._position(item_id)
        started, cost_before = time.perf_counter(), self._store_cost()
        grp = self._group(layer, group)
        fetched = [np.array([target])]
        q = self._fetch(layer, self.source.fetcher(layer), fetched[0], grp.cols)[0]
        # Per neuron, the nearest a partition's member can be: 0 inside [lo, hi], else the gap.
        gap = np.maximum(np.maximum(grp.lo - q, q - grp.hi), 0.0)
        far = np.maximum(np.abs(grp.hi - q), np.abs(grp.lo - q))
        pos, key = self._run(
            layer,
            grp,
            key_bound=_l2(gap),
            key_worst=_l2(far),
            score_key=lambda rows: _l2(rows - q),
            k=k,
            fetched=fetched,
        )
        self._finish(layer, grp, fetched, started, cost_before)
        return pd.DataFrame({"id": self.ids[pos], "score": key})
