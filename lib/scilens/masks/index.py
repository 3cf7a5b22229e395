"""Build, write and read a mask index (one CHI per mask; :mod:`scilens.masks.chi`).

Layout on disk, under ``<output>``::

    index.json      format, bins, cell, normalise, rows, shape, count dtype, bytes per table, source digest
    chi.parquet     the mask id (``id``, or the mask table's name for it), the key columns,
                    chi (binary: the mask's flattened CHI, little-endian); a file or Spark's part files

All masks of one index have one shape; a table of masks with several shapes
is refused naming the shapes (index each shape separately). A NaN or
infinite value is refused naming the mask's id. ``index.json`` is written
last: its presence marks a complete index.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from scilens.masks.chi import Grid, Normalisation, build_chi, count_dtype

__all__ = [
    "CHI_TABLE",
    "INDEX_FORMAT",
    "BuiltIndex",
    "build_index",
    "mask_digest",
    "read_index",
    "stack_masks",
    "write_index",
    "write_meta",
]

INDEX_FORMAT = "scilens-mask-index/1"
CHI_TABLE = "chi.parquet"


@dataclass
class BuiltIndex:
    """A mask index in memory, rows in id order.

    Attributes
    ----------
    ids : numpy.ndarray
        (M,) int64 mask ids, ascending.
    chi : numpy.ndarray
        (M, K) flattened CHIs in :func:`~scilens.masks.chi.count_dtype`.
    grid : Grid
        Mask shape and cell.
    bins : int
        Levels.
    normalisation : Normalisation
        The rule values were normalised by.
    keys : dict of str to numpy.ndarray
        Key columns, (M,) each, in id order (e.g. ``item``, ``method``).
    """

    ids: np.ndarray
    chi: np.ndarray
    grid: Grid
    bins: int
    normalisation: Normalisation
    keys: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        """Return ``M``."""
        return int(self.ids.shape[0])


def stack_masks(masks: np.ndarray | Sequence[np.ndarray], ids: np.ndarray) -> np.ndarray:
    """Stack masks into (M, H, W), refusing mixed shapes (naming them) and non-finite values (naming the id).

    Parameters
    ----------
    masks : numpy.ndarray or sequence of numpy.ndarray
        (M, H, W) or M arrays of shape (H, W).
    ids : numpy.ndarray
        (M,) ids, for messages.

    Returns
    -------
    numpy.ndarray
        (M, H, W).
    """
    if isinstance(masks, np.ndarray):
        arr = masks
    else:
        shapes: dict[tuple[int, ...], int] = {}
        for a in masks:
            shapes[np.shape(a)] = shapes.get(np.shape(a), 0) + 1
        if len(shapes) > 1:
            named = ", ".join(f"{'x'.join(map(str, s))} ({n} masks)" for s, n in sorted(shapes.items()))
            raise ValueError(f"masks of different shapes in one index: {named}; index each shape separately")
        arr = np.stack([np.asarray(a) for a in masks]) if len(masks) else np.empty((0, 0, 0))
    if arr.ndim != 3 or arr.shape[0] == 0:
        raise ValueError(f"masks must be a non-empty (M, H, W) stack of 2-D masks, got shape {arr.shape}")
    if len(ids) != arr.shape[0]:
        raise ValueError(f"{len(ids)} ids for {arr.shape[0]} masks")
    finite = np.isfinite(arr).all(axis=(1, 2))
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        what = "NaN" if np.isnan(arr[row]).any() else "an infinite value"
        raise ValueError(f"mask id {int(ids[row])} holds {what} ({int((~finite).sum())} such masks in all)")
    return arr


def _ids(n: int, ids: np.ndarray | Sequence[int] | None) -> np.ndarray:
    item = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    if item.shape != (n,):
        raise ValueError(f"{item.shape[0]} ids for {n} masks")
    uniq, counts = np.unique(item, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"mask id {int(uniq[counts > 1][0])} appears more than once")
    return item


def build_index(
    masks: np.ndarray | Sequence[np.ndarray],
    *,
    ids: np.ndarray | Sequence[int] | None = None,
    keys: Mapping[str, Any] | None = None,
    bins: int = 16,
    cell: int = 16,
    normalise: str | Normalisation = "per-mask-max",
) -> BuiltIndex:
    """Build the CHI of every mask.

    Parameters
    ----------
    masks : numpy.ndarray or sequence of numpy.ndarray
        (M, H, W), or M 2-D masks of one shape.
    ids : array-like, optional
        (M,) distinct int64 ids (default ``0..M-1``).
    keys : mapping of str to array-like, optional
        Key columns (M,) each (e.g. the image id and the saliency method).
    bins : int, default 16
        Levels of the quantiser.
    cell : int, default 16
        Grid spacing in pixels.
    normalise : str or Normalisation, default "per-mask-max"
        Normalisation rule (:class:`~scilens.masks.chi.Normalisation`).

    Returns
    -------
    BuiltIndex
        Rows in id order.

    Raises
    ------
    ValueError
        On mixed shapes (named), a NaN or infinite value (naming the mask id),
        duplicate ids, or bad parameters.
    """
    n = np.shape(masks)[0] if isinstance(masks, np.ndarray) else len(masks)
    item_ids = _ids(n, ids)
    arr = stack_masks(masks, item_ids)
    rule = Normalisation.parse(normalise)
    order = np.argsort(item_ids, kind="stable")
    key_cols = {}
    for name, col in (keys or {}).items():
        if name in ("id", "chi"):
            raise ValueError(f"key column {name!r} clashes with the index's own columns")
        values = np.asarray(col)
        if values.shape != (n,):
            raise ValueError(f"key column {name!r} has {values.shape[0]} values for {n} masks")
        key_cols[name] = values[order]
    chi = build_chi(arr[order], bins=bins, cell=cell, normalise=rule)
    return BuiltIndex(item_ids[order], chi, Grid(arr.shape[1], arr.shape[2], cell), bins, rule, key_cols)


def mask_digest(masks: np.ndarray, ids: np.ndarray | Sequence[int] | None = None) -> str:
    """Digest of in-memory masks (ids, shape, float64 values in id order).

    Parameters
    ----------
    masks : numpy.ndarray
        (M, H, W).
    ids : array-like, optional
        (M,) ids (default ``0..M-1``).

    Returns
    -------
    str
        ``"sha256:<hex>"``.
    """
    arr = np.asarray(masks)
    item = _ids(arr.shape[0], ids)
    order = np.argsort(item, kind="stable")
    h = hashlib.sha256(json.dumps(list(arr.shape)).encode())
    h.update(item[order].astype("<i8").tobytes())
    h.update(np.ascontiguousarray(arr[order], dtype="<f8").tobytes())
    return "sha256:" + h.hexdigest()


def _check_source(source: Mapping[str, Any]) -> None:
    if "digest" not in source:
        raise ValueError("source must carry a 'digest' so that queries on a changed mask table are refused")


def write_index(output: str | os.PathLike[str], index: BuiltIndex, *, source: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``chi.parquet``, then ``index.json``.

    Parameters
    ----------
    output : path-like
        The index directory (created).
    index : BuiltIndex
        The index.
    source : mapping
        What it was built from; must hold ``digest`` (e.g.
        :func:`scilens.core.digest.table_digest` of the mask table, or :func:`mask_digest`).

    Returns
    -------
    dict
        The metadata written.
    """
    _check_source(source)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    dtype = index.chi.dtype.newbyteorder("<")
    width = index.chi.shape[1] * dtype.itemsize
    blob = np.ascontiguousarray(index.chi, dtype=dtype).tobytes()
    cols: dict[str, Any] = {"id": pa.array(index.ids, pa.int64())}
    cols.update({k: pa.array(v) for k, v in index.keys.items()})
    cols["chi"] = pa.array([blob[i * width : (i + 1) * width] for i in range(index.rows)], pa.binary())
    pq.write_table(pa.table(cols), out / CHI_TABLE, compression="zstd")
    return write_meta(out, grid=index.grid, bins=index.bins, normalisation=index.normalisation, rows=index.rows,
                      keys=list(index.keys), source=source)


def write_meta(output: str | os.PathLike[str], *, grid: Grid, bins: int, normalisation: Normalisation, rows: int,
               keys: Sequence[str], source: Mapping[str, Any], id_column: str = "id") -> dict[str, Any]:
    """Write ``index.json`` for the ``chi.parquet`` already under ``output`` (last: it marks the index complete).

    Shared by :func:`write_index` and the Spark build (:mod:`scilens.masks.stages`), so
    both describe an index the same way.

    Parameters
    ----------
    output : path-like
        The index directory, holding ``chi.parquet`` (a file or a directory of part files).
    grid : Grid
        Mask shape and cell.
    bins : int
        Levels.
    normalisation : Normalisation
        The rule.
    rows : int
        Masks indexed.
    keys : sequence of str
        Key columns stored beside the mask id.
    source : mapping
        What it was built from; must hold ``digest``.
    id_column : str, default "id"
        The mask id's column in ``chi.parquet`` (the mask table's name for it).

    Returns
    -------
    dict
        The metadata written.
    """
    _check_source(source)
    chi = Path(output) / CHI_TABLE
    files = sorted(chi.rglob("*.parquet")) if chi.is_dir() else [chi]
    meta = {
        "format": INDEX_FORMAT,
        "bins": int(bins),
        "cell": int(grid.cell),
        "normalise": normalisation.spec,
        "rows": int(rows),
        "shape": [grid.height, grid.width],
        "count_dtype": str(count_dtype(grid.height * grid.width)),
        "id_column": id_column,
        "keys": sorted(keys),
        "bytes": {"chi": sum(f.stat().st_size for f in files)},
        "source": dict(source),
    }
    (Path(output) / "index.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return meta


def read_index(path: str | os.PathLike[str]) -> tuple[BuiltIndex, dict[str, Any]]:
    """Read an index written by :func:`write_index`.

    Parameters
    ----------
    path : path-like
        The index directory.

    Returns
    -------
    tuple
        The index (rows in id order) and ``index.json``.
    """
    meta_path = Path(path) / "index.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"no mask index at {path}: {meta_path} missing")
    meta: dict[str, Any] = json.loads(meta_path.read_text())
    if meta.get("format") != INDEX_FORMAT:
        raise ValueError(f"{meta_path}: format {meta.get('format')!r}, expected {INDEX_FORMAT!r}")
    id_column = meta.get("id_column", "id")
    table = pq.read_table(Path(path) / CHI_TABLE).sort_by(id_column)
    h, w = (int(s) for s in meta["shape"])
    dtype = np.dtype(meta["count_dtype"]).newbyteorder("<")
    blob = b"".join(table.column("chi").to_pylist())
    chi = np.frombuffer(blob, dtype=dtype).astype(dtype.newbyteorder("=")).reshape(table.num_rows, -1)
    keys = {k: table.column(k).to_numpy(zero_copy_only=False) for k in meta["keys"]}
    index = BuiltIndex(
        ids=table.column(id_column).to_numpy().astype(np.int64),
        chi=chi,
        grid=Grid(h, w, int(meta["cell"])),
        bins=int(meta["bins"]),
        normalisation=Normalisation.parse(meta["normalise"]),
        keys=keys,
    )
    return index, meta
