"""Exact queries over masks by filter-verify on a mask index (:mod:`scilens.masks.index`).

``CP(mask, roi, t)`` is the number of pixels of the half-open box ``roi =
(y0, y1, x0, x1)`` whose normalised value is ``> t``; ``roi`` is one box for
every mask, or one box per mask (a mapping id -> box, whose keys are then the
masks queried, or an (M, 4) array in the index's id order). A query ranks or
compares one measure of each mask (``by``):

* ``count`` -- ``CP`` itself;
* ``fraction`` -- ``CP / area`` of the box (float64 division);
* ``share`` -- ``CP(roi) / CP(whole mask)``: the share of the mask's pixels
  above ``t`` that lie inside the box (0 for a mask with none), so "more than
  40% of the salient pixels outside the retinal band" is ``share < 0.6`` over
  the band. Its bounds are ``lo(roi) / hi(whole)`` and ``hi(roi) /
  max(lo(whole), hi(roi))``.

Query forms:

* :meth:`MaskIndex.filter` -- ids whose CP (or fraction) satisfies ``op value``
  (``>``, ``>=``, ``<``, ``<=``), ascending;
* :meth:`MaskIndex.topk` -- the ``k`` masks of highest (``desc``) or lowest
  (``asc``) CP or fraction, ties broken by id ascending;
* :meth:`MaskIndex.aggregate` -- per group (the values of a key column, e.g.
  the image id over several saliency methods) the mean CP of its masks,
  ``sum(CP) / n_masks`` in float64; the groups whose mean satisfies ``op
  value`` (ascending group), or the top ``k`` groups (ties by group ascending).

Each runs filter-verify: CHI bounds (:func:`scilens.masks.chi.bounds`) decide
most masks (an upper bound already failing the condition: out; a lower bound
already meeting it: in; a bound that cannot reach the top k: out), and only
the undecided masks are fetched from the :class:`MaskSource` and counted
exactly with the same quantiser. Bounds of a fraction or a mean are the same
float expression over the count bounds, and float division and summation of
integers below 2**53 are monotone, so the decisions are exact.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from scilens.core.digest import table_digest
from scilens.core.tensor import decode
from scilens.masks.chi import bounds, check_boxes, check_thresholds, exact_cp
from scilens.masks.index import BuiltIndex, mask_digest, read_index, stack_masks

__all__ = ["BY", "OPS", "InMemorySource", "MaskIndex", "MaskSource", "ParquetMaskSource", "QueryStats"]

OPS = (">", ">=", "<", "<=")
BY = ("count", "fraction", "share")
VERIFY_BATCH = 256
"""Undecided units a filter verifies per fetch (bounds memory; about the fastest batch on 224 x 224 masks)."""
Roi = tuple[int, int, int, int] | Mapping[int, Any] | np.ndarray


class MaskSource(Protocol):
    """Where masks come from: a digest, and masks by id (with the bytes that cost)."""

    @property
    def digest(self) -> str:
        """Digest of the mask table (must equal the index's ``source.digest``)."""
        ...

    @property
    def kind(self) -> str:
        """What the source is (``"memory"``, ``"parquet"``)."""
        ...

    def fetch(self, ids: np.ndarray) -> tuple[np.ndarray, int]:
        """Return the (n, H, W) masks of ``ids`` in the order asked, and the bytes read."""
        ...


class InMemorySource:
    """Masks held in memory.

    Parameters
    ----------
    masks : numpy.ndarray
        (M, H, W).
    ids : array-like, optional
        (M,) ids (default ``0..M-1``).
    """

    kind = "memory"

    def __init__(self, masks: np.ndarray, ids: np.ndarray | None = None) -> None:
        arr = np.asarray(masks)
        item = np.arange(arr.shape[0], dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        order = np.argsort(item, kind="stable")
        self._ids, self._masks = item[order], arr[order]
        self._digest = mask_digest(arr, item)

    @property
    def digest(self) -> str:
        """Return :func:`~scilens.masks.index.mask_digest` of the masks."""
        return self._digest

    def fetch(self, ids: np.ndarray) -> tuple[np.ndarray, int]:
        """Return the masks of ``ids`` and their bytes.

        Parameters
        ----------
        ids : numpy.ndarray
            Wanted ids.

        Returns
        -------
        tuple
            (n, H, W) masks and bytes.
        """
        want = np.asarray(ids, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self._ids, want), len(self._ids) - 1)
        missing = self._ids[pos] != want
        if missing.any():
            raise ValueError(f"the in-memory masks lack mask id {int(want[missing][0])}")
        got = self._masks[pos]
        return got, int(got.nbytes)


class ParquetMaskSource:
    """Masks read by id from a Parquet mask table (tensor column ``mask_column``, int64 ``id_column``).

    A fetch decodes only the mask column of the row groups holding the wanted
    ids (:class:`~scilens.core.parquet.KeyedParquet`: the id column is read
    once, at construction); the mask tables scilens writes are sorted by id
    in small row groups, so that is a few masks per wanted id. ``bytes`` is
    the compressed size of the column chunks read.

    Parameters
    ----------
    table : path-like
        A Parquet file or a directory of them.
    mask_column : str, default "mask"
        Tensor column (``struct<shape, dtype, data>``, :mod:`scilens.core.tensor`).
    id_column : str, default "id"
        Mask id column.
    """

    kind = "parquet"

    def __init__(self, table: str | os.PathLike[str], mask_column: str = "mask", id_column: str = "id") -> None:
        from scilens.core.parquet import KeyedParquet

        root = Path(table)
        self._digest = table_digest(root)
        self._table = KeyedParquet(root, id_column)
        self._mask = mask_column
        for f in self._table.files:
            if mask_column not in f.schema_arrow.names:
                raise ValueError(f"the mask table {root} has no column {mask_column!r}; it has {f.schema_arrow.names}")

    @property
    def digest(self) -> str:
        """Return :func:`scilens.core.digest.table_digest` of the table."""
        return self._digest

    @property
    def table(self) -> Any:
        """The :class:`~scilens.core.parquet.KeyedParquet` masks are read from (other columns by id, too)."""
        return self._table

    def fetch(self, ids: np.ndarray) -> tuple[np.ndarray, int]:
        """Return the masks of ``ids`` (in the order asked) and the bytes of the column chunks read.

        Parameters
        ----------
        ids : numpy.ndarray
            Wanted ids.

        Returns
        -------
        tuple
            (n, H, W) masks and bytes read.
        """
        from scilens.core.parquet import MissingKeys

        ids = np.asarray(ids, dtype=np.int64)
        try:
            table, cost = self._table.read(ids, [self._mask])
        except MissingKeys as err:
            raise ValueError(f"the mask table lacks mask id {int(err.absent[0])} ({err.absent.size} missing)") from err
        masks = [decode(rec) for rec in table.column(self._mask).to_pylist()]
        return stack_masks(masks, ids), cost.bytes


@dataclass
class QueryStats:
    """What the last query cost.

    Attributes
    ----------
    masks : int
        Masks the query ranged over.
    decided_by_index : int
        Masks decided from the CHI bounds alone.
    decoded : int
        Masks fetched and counted exactly.
    bytes_read : int
        Bytes the source read for them.
    seconds : float
        Wall time.
    """

    masks: int
    decided_by_index: int
    decoded: int
    bytes_read: int
    seconds: float


def _decide(lo: np.ndarray, hi: np.ndarray, op: str, value: float) -> tuple[np.ndarray, np.ndarray]:
    """Which units bounds ``lo <= s <= hi`` put surely in, surely out, for ``s op value``."""
    if op == ">":
        return lo > value, hi <= value
    if op == ">=":
        return lo >= value, hi < value
    if op == "<":
        return hi < value, lo >= value
    return hi <= value, lo > value


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` in float64, 0 where ``den`` is 0 (a mask with no pixel above the threshold)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def _holds(s: np.ndarray, op: str, value: float) -> np.ndarray:
    return {">": s > value, ">=": s >= value, "<": s < value, "<=": s <= value}[op]


def _filter(lo: np.ndarray, hi: np.ndarray, op: str, value: float,
            exact: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Positions of units meeting ``op value``: bounds decide, ``exact(positions)`` verifies the rest."""
    surely_in, surely_out = _decide(lo, hi, op, value)
    todo = np.flatnonzero(~surely_in & ~surely_out)
    keep = surely_in.copy()
    # in batches: a selective query may leave thousands of masks undecided, and fetching them all at once
    # holds them all (and their float64 normalisation) in memory
    for start in range(0, todo.size, VERIFY_BATCH):
        part = todo[start : start + VERIFY_BATCH]
        keep[part] = _holds(exact(part), op, value)
    return np.flatnonzero(keep)


def _topk(lo: np.ndarray, hi: np.ndarray, k: int, desc: bool,
          exact: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The k best units (key ascending, ties by position), visiting them by bound until none can enter."""
    key_lo, key_hi = (-hi, -lo) if desc else (lo, hi)
    # k units have key <= tau: a unit whose best possible key exceeds tau never enters.
    tau = np.partition(key_hi, k - 1)[k - 1]
    cand = np.flatnonzero(key_lo <= tau)
    cand = cand[np.lexsort((cand, key_lo[cand]))]
    best_pos, best_key = np.empty(0, dtype=np.int64), np.empty(0)
    i, batch = 0, max(k, 64)
    while i < len(cand):
        if len(best_pos) == k and (best_key[-1], best_pos[-1]) < (key_lo[cand[i]], cand[i]):
            break
        chunk = cand[i : i + batch]
        i += len(chunk)
        known = key_lo[chunk] == key_hi[chunk]
        keys = key_lo[chunk].copy()
        need = chunk[~known]
        if len(best_pos) == k:
            kth_key, kth_pos = best_key[-1], best_pos[-1]
            need = need[(key_lo[need] < kth_key) | ((key_lo[need] == kth_key) & (need < kth_pos))]
        if need.size:
            got = exact(need)
            where = {int(p): j for j, p in enumerate(chunk)}
            keys[[where[int(p)] for p in need]] = -got if desc else got
        usable = known | np.isin(chunk, need)
        pos = np.concatenate([best_pos, chunk[usable]])
        allk = np.concatenate([best_key, keys[usable]])
        top = np.lexsort((pos, allk))[:k]
        best_pos, best_key = pos[top], allk[top]
    return best_pos, (-best_key if desc else best_key)


class MaskIndex:
    """A mask index opened against the masks it was built from.

    Use :meth:`open` (an index on disk) or :meth:`from_built` (one in memory);
    :attr:`last_stats` tells what the last query cost.
    """

    def __init__(self, index: BuiltIndex, meta: dict[str, Any], source: MaskSource) -> None:
        built = meta.get("source", {}).get("digest")
        if source.digest != built:
            raise ValueError(
                f"the mask table changed since indexing: the index was built from digest {built}, but the "
                f"{source.kind} source has digest {source.digest}; rebuild the index"
            )
        self.index = index
        self.meta = meta
        self.source = source
        self.last_stats: QueryStats | None = None
        self._stats: dict[str, int] = {}
        self._started = 0.0

    @classmethod
    def open(cls, path: str | os.PathLike[str], source: MaskSource | None = None,
             table: str | os.PathLike[str] | None = None) -> MaskIndex:
        """Open the index at ``path``; refuse it if ``source`` is not the table it was built from.

        Parameters
        ----------
        path : path-like
            The index directory.
        source : MaskSource, optional
            Where masks are fetched from; default: a Parquet mask table, ``table``
            or else the one the index records it was built from (``mask-index`` job).
        table : path-like, optional
            The Parquet mask table to fetch from instead of the recorded one (a
            moved copy: its columns are the recorded ones).

        Returns
        -------
        MaskIndex
            The opened index.
        """
        index, meta = read_index(path)
        if source is None:
            built = meta.get("source", {})
            where = table if table is not None else built.get("path")
            if where is None:
                raise ValueError(f"{path}: the index records no mask table path; give the source")
            source = ParquetMaskSource(where, built.get("mask_column", "mask"), meta.get("id_column", "id"))
        return cls(index, meta, source)

    def boxes(self, spec: Sequence[int | str]) -> tuple[int, int, int, int] | np.ndarray:
        """A query's ``roi`` from a spec whose entries are pixels or indexed key columns.

        Parameters
        ----------
        spec : sequence of int or str
            Four entries ``(y0, y1, x0, x1)``; a text entry that is not a number names
            an indexed key column (one value per mask, e.g. a retinal band's top row);
            empty: the whole mask.

        Returns
        -------
        tuple or numpy.ndarray
            One box, or an (M, 4) array of boxes in the index's id order.
        """
        grid = self.index.grid
        if len(spec) == 0:
            return (0, grid.height, 0, grid.width)
        if len(spec) != 4:
            raise ValueError(f"roi needs four entries (y0, y1, x0, x1), got {list(spec)}")
        columns: list[np.ndarray] = []
        for entry in spec:
            text = str(entry).strip()
            try:
                columns.append(np.full(self.index.rows, int(text), dtype=np.int64))
                continue
            except ValueError:
                pass
            if text not in self.index.keys:
                raise ValueError(f"roi entry {text!r} is neither a number nor an indexed key column "
                                 f"({sorted(self.index.keys)})")
            values = self.index.keys[text]
            if not np.issubdtype(np.asarray(values).dtype, np.integer):
                raise ValueError(f"roi column {text!r} holds {np.asarray(values).dtype} values, not integers")
            columns.append(np.asarray(values, dtype=np.int64))
        boxes = np.stack(columns, axis=1)
        if all(isinstance(e, int) or str(e).strip().lstrip("-").isdigit() for e in spec):
            return tuple(int(c) for c in boxes[0])  # type: ignore[return-value]
        return boxes

    @classmethod
    def from_built(cls, index: BuiltIndex, source: MaskSource) -> MaskIndex:
        """Query an index held in memory (built over ``source``'s masks).

        Parameters
        ----------
        index : BuiltIndex
            The index.
        source : MaskSource
            Its masks.

        Returns
        -------
        MaskIndex
            The index.
        """
        return cls(index, {"source": {"digest": source.digest}}, source)

    # ------------------------------------------------------------------------------------ inputs

    def _roi(self, roi: Roi) -> tuple[np.ndarray, np.ndarray]:
        """Rows queried and their (n, 4) boxes."""
        ids, grid = self.index.ids, self.index.grid
        if isinstance(roi, Mapping):
            want = np.asarray(sorted(int(i) for i in roi), dtype=np.int64)
            rows = np.searchsorted(ids, want)
            bad = (rows >= len(ids)) | (ids[np.minimum(rows, len(ids) - 1)] != want)
            if bad.any():
                raise ValueError(f"roi names mask id {int(want[bad][0])}, which is not in the index")
            boxes = np.array([tuple(roi[int(i)]) for i in want]).reshape(len(want), 4)
            return rows, check_boxes(boxes, grid.height, grid.width)
        arr = np.asarray(roi)
        if arr.ndim == 2 and arr.shape[0] != len(ids):
            raise ValueError(f"a per-mask roi array needs one box per indexed mask ({len(ids)}), got {arr.shape[0]}")
        boxes = check_boxes(arr, grid.height, grid.width)
        return np.arange(len(ids)), np.broadcast_to(boxes, (len(ids), 4))

    def _threshold(self, threshold: float) -> float:
        t = check_thresholds(threshold)
        if t.size != 1:
            raise ValueError(f"threshold must be one number, got {threshold!r}")
        return float(t[0])

    # ------------------------------------------------------------------------------------ machinery

    def _begin(self, n: int) -> float:
        """Reset the counters; the query's clock started before its bounds were computed."""
        self._stats = {"masks": n, "decoded": 0, "bytes": 0}
        return self._started

    def _end(self, started: float) -> None:
        s = self._stats
        self.last_stats = QueryStats(s["masks"], s["masks"] - s["decoded"], s["decoded"], s["bytes"],
                                     time.perf_counter() - started)

    def _fetch(self, rows: np.ndarray) -> np.ndarray:
        """The masks of index rows, from the source (counted in the query's stats)."""
        masks, nbytes = self.source.fetch(self.index.ids[rows])
        grid = self.index.grid
        if masks.shape[1:] != (grid.height, grid.width):
            raise ValueError(f"the {self.source.kind} source returned masks of shape {masks.shape[1:]}, "
                             f"the index holds {grid.height} x {grid.width}")
        self._stats["decoded"] += len(rows)
        self._stats["bytes"] += nbytes
        return masks

    def _exact(self, rows: np.ndarray, boxes: np.ndarray, t: float) -> np.ndarray:
        """Exact CP of index rows (fetched from the source)."""
        return self._cp(self._fetch(rows), boxes, t)

    def _cp(self, masks: np.ndarray, boxes: np.ndarray, t: float) -> np.ndarray:
        """Exact CP of fetched masks, one box each, with the index's quantiser."""
        rule = self.index.normalisation
        if len(masks) and (boxes == boxes[0]).all():
            y0, y1, x0, x1 = (int(c) for c in boxes[0])
            crop = rule.apply(masks, (y0, y1, x0, x1))
            return exact_cp(crop, np.array([0, y1 - y0, 0, x1 - x0]), t)
        return exact_cp(rule.apply(masks), boxes, t)

    def _count_bounds(self, rows: np.ndarray, boxes: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        ix = self.index
        return bounds(ix.chi, ix.grid, ix.bins, boxes, t, rows=rows)

    def _whole(self, n: int) -> np.ndarray:
        return np.broadcast_to(np.array([0, self.index.grid.height, 0, self.index.grid.width]), (n, 4))

    def _scores(self, roi: Roi, threshold: float, by: str) -> tuple[
            np.ndarray, np.ndarray, np.ndarray, Callable[[np.ndarray], np.ndarray]]:
        """Rows, score bounds and the exact scorer (by position among the rows) of a per-mask query."""
        if by not in BY:
            raise ValueError(f"by must be one of {BY}, got {by!r}")
        t = self._threshold(threshold)
        rows, boxes = self._roi(roi)
        self._started = time.perf_counter()
        lo, hi = self._count_bounds(rows, boxes, t)
        if by == "share":
            whole_lo, whole_hi = self._count_bounds(rows, self._whole(len(rows)), t)

            def exact_share(pos: np.ndarray) -> np.ndarray:
                masks = self._fetch(rows[pos])
                return _ratio(self._cp(masks, boxes[pos], t), self._cp(masks, self._whole(len(pos)), t))

            return rows, _ratio(lo, whole_hi), _ratio(hi, np.maximum(whole_lo, hi)), exact_share
        area = ((boxes[:, 1] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 2])).astype(np.float64)
        denom = area if by == "fraction" else np.ones(len(rows))

        def exact(pos: np.ndarray) -> np.ndarray:
            return self._exact(rows[pos], boxes[pos], t) / denom[pos]

        return rows, lo / denom, hi / denom, exact

    # ------------------------------------------------------------------------------------ queries

    def CP(self, roi: Roi, threshold: float) -> pd.DataFrame:
        """Exact CP of every mask queried (masks whose bounds agree are not fetched).

        Parameters
        ----------
        roi : box, mapping of id to box, or (M, 4) array
            Half-open ``(y0, y1, x0, x1)``.
        threshold : float
            In ``[0, 1]``.

        Returns
        -------
        pandas.DataFrame
            ``id`` ascending and ``cp`` (int64).
        """
        rows, lo, hi, exact = self._scores(roi, threshold, "count")
        started = self._begin(len(rows))
        cp = lo.copy()
        todo = np.flatnonzero(lo != hi)
        for start in range(0, todo.size, VERIFY_BATCH):
            part = todo[start : start + VERIFY_BATCH]
            cp[part] = exact(part)
        self._end(started)
        return pd.DataFrame({"id": self.index.ids[rows], "cp": cp.astype(np.int64)})

    def filter(self, roi: Roi, threshold: float, op: str, value: float, by: str = "count") -> pd.DataFrame:
        """Masks whose CP (or its fraction of the box, or its share of the mask) satisfies ``op value``.

        Parameters
        ----------
        roi : box, mapping of id to box, or (M, 4) array
            Half-open ``(y0, y1, x0, x1)``.
        threshold : float
            In ``[0, 1]``.
        op : {">", ">=", "<", "<="}
            Comparison.
        value : float
            Compared with.
        by : {"count", "fraction", "share"}, default "count"
            Compare ``CP``, ``CP / area`` or ``CP / CP(whole mask)`` (module doc).

        Returns
        -------
        pandas.DataFrame
            ``id``, ascending.
        """
        if op not in OPS:
            raise ValueError(f"unknown op {op!r}; use one of {OPS}")
        rows, lo, hi, exact = self._scores(roi, threshold, by)
        started = self._begin(len(rows))
        keep = _filter(lo, hi, op, float(value), exact)
        self._end(started)
        return pd.DataFrame({"id": self.index.ids[rows[keep]]})

    def topk(self, roi: Roi, threshold: float, k: int, by: str = "count", order: str = "desc") -> pd.DataFrame:
        """The ``k`` masks of highest (or lowest) CP, fraction or share, ties by id ascending.

        Parameters
        ----------
        roi : box, mapping of id to box, or (M, 4) array
            Half-open ``(y0, y1, x0, x1)``.
        threshold : float
            In ``[0, 1]``.
        k : int
            Number of masks (at most the number queried).
        by : {"count", "fraction", "share"}, default "count"
            Rank by ``CP``, ``CP / area`` or ``CP / CP(whole mask)``.
        order : {"desc", "asc"}, default "desc"
            Highest or lowest first.

        Returns
        -------
        pandas.DataFrame
            ``id`` and ``score`` (float64: CP, fraction or share), best first.
        """
        if order not in ("desc", "asc"):
            raise ValueError(f"order must be desc|asc, got {order!r}")
        rows, lo, hi, exact = self._scores(roi, threshold, by)
        self._check_k(k, len(rows))
        started = self._begin(len(rows))
        pos, score = _topk(lo, hi, int(k), order == "desc", exact)
        self._end(started)
        return pd.DataFrame({"id": self.index.ids[rows[pos]], "score": score})

    @staticmethod
    def _check_k(k: int, n: int) -> None:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= n:
            raise ValueError(f"k must be an integer in 1..{n}, got {k!r}")

    def aggregate(self, roi: Roi, threshold: float, group_by: str, agg: str = "mean", *, k: int | None = None,
                  order: str = "desc", op: str | None = None, value: float | None = None) -> pd.DataFrame:
        """Groups of masks (by a key column) ranked or filtered by the mean CP of their masks.

        The mean CP of a group is ``sum(CP) / n_masks`` over its masks (float64),
        e.g. over the saliency methods of one image. Give either ``k`` (the top
        ``k`` groups, ties by group ascending) or ``op`` and ``value`` (the groups
        meeting ``mean op value``, ascending by group).

        Parameters
        ----------
        roi : box, mapping of id to box, or (M, 4) array
            Half-open ``(y0, y1, x0, x1)`` per mask.
        threshold : float
            In ``[0, 1]``.
        group_by : str
            An indexed key column.
        agg : {"mean"}, default "mean"
            Aggregate.
        k : int, optional
            Number of groups.
        order : {"desc", "asc"}, default "desc"
            With ``k``: highest or lowest mean first.
        op : {">", ">=", "<", "<="}, optional
            With ``value``: the comparison.
        value : float, optional
            Compared with.

        Returns
        -------
        pandas.DataFrame
            With ``k``: ``group_by`` and ``mean_cp`` (float64), best first; with
            ``op``: ``group_by`` only, ascending (surely-in groups are not fetched).
        """
        if agg != "mean":
            raise ValueError(f"unknown agg {agg!r}; use 'mean'")
        if group_by not in self.index.keys:
            raise ValueError(f"group_by={group_by!r} is not an indexed key column; keys: {sorted(self.index.keys)}")
        if (k is None) == (op is None) or (op is not None and (op not in OPS or value is None)):
            raise ValueError(f"give either k, or op (one of {OPS}) and value")
        rows, lo, hi, exact = self._scores(roi, threshold, "count")
        groups, member = np.unique(self.index.keys[group_by][rows], return_inverse=True)
        member = member.ravel()
        size = np.bincount(member, minlength=len(groups)).astype(np.float64)
        g_lo = np.bincount(member, weights=lo, minlength=len(groups)) / size
        g_hi = np.bincount(member, weights=hi, minlength=len(groups)) / size
        known = lo == hi

        def exact_groups(gpos: np.ndarray) -> np.ndarray:
            pos = np.flatnonzero(np.isin(member, gpos))
            cp = lo[pos].copy()
            todo = ~known[pos]
            if todo.any():
                cp[todo] = exact(pos[todo])
            sums = np.bincount(member[pos], weights=cp, minlength=len(groups))
            return sums[gpos] / size[gpos]

        started = self._begin(len(rows))
        if k is not None:
            self._check_k(k, len(groups))
            if order not in ("desc", "asc"):
                raise ValueError(f"order must be desc|asc, got {order!r}")
            gpos, score = _topk(g_lo, g_hi, int(k), order == "desc", exact_groups)
        else:
            gpos = _filter(g_lo, g_hi, str(op), float(value) if value is not None else 0.0, exact_groups)
            self._end(started)
            return pd.DataFrame({group_by: groups[gpos]})
        self._end(started)
        return pd.DataFrame({group_by: groups[gpos], "mean_cp": score})
