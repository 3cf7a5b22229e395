"""DeepEverest's activation index for one layer: pure kernels, writer and reader.

He, Daum, Cai and Balazinska (PVLDB 15(1), 2021) answer "which items activate
these neurons most" and "which items are nearest to this one in these
neurons" exactly from a small per-neuron index instead of a scan of every
activation. For a layer of ``n`` neurons over ``N`` items, and for every
neuron independently:

* the **Maximum Activation Index (MAI)** holds the top ``m = ceil(ratio x N)``
  (id, activation) pairs, sorted by activation descending, ties by id
  ascending (partition 0);
* the **Neural Partition Index (NPI)** splits the other ``N - m`` items, in
  the same order, equi-depth into ``P - 1`` partitions (1 the highest,
  ``P - 1`` the lowest) and stores every item's partition id (0 for MAI
  members) bit-packed with ``ceil(log2 P)`` bits per item, plus each
  partition's item count, min and max activation.

Because partitions are cut by rank, tied activations may straddle two
adjacent partitions (their bounds then touch); every bound is still the
true min/max of its members, which is all the queries rely on.

Items are identified by int64 ids; the kernels order items by id so that
"ties broken by id" is positional order. Layout on disk, under ``<output>``::

    index.json                  N, P, ratio, bits, layers and shapes, bytes per table, source digest
    ids.parquet                 id (int64), ascending: position -> id
    <layer>/mai.parquet         neuron (int32), rank (int32), id (int64), activation (float32)
    <layer>/npi.parquet         neuron (int32), packed (binary): the neuron's partition ids
    <layer>/bounds.parquet      neuron (int32), partition (int32), count (int64), lo, hi (float32)

Bounds of empty partitions (fewer remaining items than partitions) are NaN
with count 0.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "INDEX_FORMAT",
    "TABLES",
    "LayerIndex",
    "activation_digest",
    "bits_per_item",
    "build_layer_index",
    "layer_meta",
    "mai_size",
    "pack_partition_ids",
    "partition_of_rank",
    "read_index_meta",
    "read_item_ids",
    "read_layer_index",
    "table_bytes",
    "unpack_partition_ids",
    "write_index",
    "write_index_meta",
    "write_layer_index",
]

INDEX_FORMAT = "scilens-activation-index/1"
TABLES = ("mai", "npi", "bounds")


def mai_size(n_items: int, ratio: float) -> int:
    """Return ``m = ceil(ratio x N)``, the MAI length per neuron, clamped to ``[1, N]``.

    Parameters
    ----------
    n_items : int
        ``N``, the number of items.
    ratio : float
        Fraction of items kept in the MAI, in ``(0, 1]``.

    Returns
    -------
    int
        The MAI length.
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    # round() first so that 0.05 x 10000 (500.00000000000006 in binary) is 500, not 501.
    return int(min(n_items, max(1, math.ceil(round(ratio * n_items, 9)))))


def bits_per_item(n_partitions: int) -> int:
    """Return ``ceil(log2 P)``, the bits of one packed partition id.

    Parameters
    ----------
    n_partitions : int
        ``P``, the number of partitions including the MAI's partition 0 (2..65536).

    Returns
    -------
    int
        Bits per item.
    """
    if not 2 <= n_partitions <= 1 << 16:
        raise ValueError(f"partitions must be in 2..65536, got {n_partitions}")
    return max(1, (n_partitions - 1).bit_length())


def partition_of_rank(n_items: int, n_mai: int, n_partitions: int) -> np.ndarray:
    """Partition id of every rank (0 = highest activation), the same for all neurons.

    Parameters
    ----------
    n_items : int
        ``N``.
    n_mai : int
        ``m``, the MAI length: ranks ``< m`` are partition 0.
    n_partitions : int
        ``P``: ranks ``>= m`` go equi-depth into partitions ``1 .. P-1``.

    Returns
    -------
    numpy.ndarray
        (N,) uint16 partition ids, non-decreasing in rank.
    """
    rest = n_items - n_mai
    pid = np.zeros(n_items, dtype=np.uint16)
    if rest > 0:
        s = np.arange(rest, dtype=np.int64)
        pid[n_mai:] = 1 + (s * (n_partitions - 1)) // rest
    return pid


def pack_partition_ids(pids: np.ndarray, bits: int) -> bytes:
    """Bit-pack partition ids, ``bits`` per item, most significant bit first.

    Parameters
    ----------
    pids : numpy.ndarray
        (N,) non-negative integers below ``2**bits``.
    bits : int
        Bits per item.

    Returns
    -------
    bytes
        ``ceil(N x bits / 8)`` bytes.
    """
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint32)
    planes = (pids.astype(np.uint32)[:, None] >> shifts) & 1
    return np.packbits(planes.astype(np.uint8).ravel()).tobytes()


def unpack_partition_ids(packed: bytes, n_items: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_partition_ids`.

    Parameters
    ----------
    packed : bytes
        The packed ids.
    n_items : int
        ``N``, the number of ids packed.
    bits : int
        Bits per item.

    Returns
    -------
    numpy.ndarray
        (N,) uint16 partition ids.
    """
    flat = np.unpackbits(np.frombuffer(packed, dtype=np.uint8), count=n_items * bits)
    weights = (1 << np.arange(bits - 1, -1, -1)).astype(np.uint16)
    return (flat.reshape(n_items, bits).astype(np.uint16) @ weights).astype(np.uint16)


@dataclass
class LayerIndex:
    """One layer's index in memory (items in id order, neurons ``neurons``).

    Attributes
    ----------
    layer : str
        Layer name.
    ids : numpy.ndarray
        (N,) int64 item ids, ascending.
    neurons : numpy.ndarray
        (n,) int32 neuron numbers of the block (flat index into the layer).
    n_partitions : int
        ``P``.
    ratio : float
        MAI ratio.
    mai_pos : numpy.ndarray
        (n, m) int64 positions (into ``ids``) of each neuron's MAI, best first.
    mai_act : numpy.ndarray
        (n, m) float32 their activations.
    packed : list of bytes
        Per neuron, the bit-packed partition id of every item.
    count, lo, hi : numpy.ndarray
        (n, P) partition sizes and activation bounds (NaN when empty).
    shape : tuple of int
        The layer's activation shape per item (product = number of neurons).
    """

    layer: str
    ids: np.ndarray
    neurons: np.ndarray
    n_partitions: int
    ratio: float
    mai_pos: np.ndarray
    mai_act: np.ndarray
    packed: list[bytes]
    count: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    shape: tuple[int, ...] = field(default=())

    @property
    def n_items(self) -> int:
        """Return ``N``."""
        return int(self.ids.shape[0])

    @property
    def bits(self) -> int:
        """Return bits per packed partition id."""
        return bits_per_item(self.n_partitions)

    def partition_ids(self, row: int) -> np.ndarray:
        """Unpack the partition id of every item for block row ``row``.

        Parameters
        ----------
        row : int
            Row of the block (not the neuron number).

        Returns
        -------
        numpy.ndarray
            (N,) uint16.
        """
        return unpack_partition_ids(self.packed[row], self.n_items, self.bits)


def _check_finite(acts: np.ndarray, ids: np.ndarray, layer: str, first_neuron: int) -> None:
    bad = ~np.isfinite(acts)
    if bad.any():
        pos, col = np.argwhere(bad)[0]
        what = "NaN" if np.isnan(acts[pos, col]) else "infinite"
        raise ValueError(
            f"layer {layer!r}: {what} activation for item id {int(ids[pos])} at neuron {first_neuron + int(col)} "
            f"({int(bad.sum())} non-finite values in all); the model or store is broken"
        )


def _prepare(acts: np.ndarray, ids: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(acts)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(f"activations must be (N,) or (N, n_neurons) with N > 0, got shape {a.shape}")
    item_ids = np.arange(a.shape[0], dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    if item_ids.shape != (a.shape[0],):
        raise ValueError(f"{item_ids.shape[0]} ids for {a.shape[0]} activation rows")
    order = np.argsort(item_ids, kind="stable")
    item_ids = item_ids[order]
    if item_ids.shape[0] > 1 and (np.diff(item_ids) == 0).any():
        dup = item_ids[1:][np.diff(item_ids) == 0][0]
        raise ValueError(f"item id {int(dup)} appears more than once")
    return np.ascontiguousarray(a[order], dtype=np.float32), item_ids


def build_layer_index(
    acts: np.ndarray,
    *,
    layer: str,
    n_partitions: int = 64,
    ratio: float = 0.05,
    ids: np.ndarray | None = None,
    first_neuron: int = 0,
    shape: Sequence[int] | None = None,
) -> LayerIndex:
    """Build the MAI and NPI of one neuron or a block of neurons.

    Parameters
    ----------
    acts : numpy.ndarray
        (N,) or (N, n) activations (cast to float32), one row per item.
    layer : str
        Layer name, for messages and the result.
    n_partitions : int, default 64
        ``P``, partitions including the MAI's partition 0.
    ratio : float, default 0.05
        MAI fraction: ``ceil(ratio x N)`` items per neuron.
    ids : numpy.ndarray, optional
        (N,) distinct int64 item ids of the rows (default ``0..N-1``); rows are
        reordered by id.
    first_neuron : int, default 0
        Neuron number of column 0 (a block of a wider layer).
    shape : sequence of int, optional
        The layer's per-item shape (default ``(n,)``).

    Returns
    -------
    LayerIndex
        The block's index.

    Raises
    ------
    ValueError
        On a NaN or infinite activation (naming the layer, item and neuron),
        duplicate ids, or bad ``n_partitions``/``ratio``.
    """
    bits = bits_per_item(n_partitions)
    a, item_ids = _prepare(acts, ids)
    _check_finite(a, item_ids, layer, first_neuron)
    n_items, n_neurons = a.shape
    if shape is not None and int(np.prod(shape)) != n_neurons:
        raise ValueError(f"layer {layer!r}: shape {tuple(shape)} does not hold {n_neurons} neurons")
    m = mai_size(n_items, ratio)
    # Rows are in id order, so a stable sort on -activation gives activation desc, id asc.
    order = np.argsort(-a, axis=0, kind="stable")
    sorted_act = np.take_along_axis(a, order, axis=0)
    pid_of_rank = partition_of_rank(n_items, m, n_partitions)
    count = np.bincount(pid_of_rank, minlength=n_partitions).astype(np.int64)
    ends = np.cumsum(count)
    starts = ends - count
    nonempty = count > 0
    lo = np.full((n_neurons, n_partitions), np.nan, dtype=np.float32)
    hi = np.full((n_neurons, n_partitions), np.nan, dtype=np.float32)
    hi[:, nonempty] = sorted_act[starts[nonempty]].T
    lo[:, nonempty] = sorted_act[ends[nonempty] - 1].T
    packed = []
    pids = np.empty(n_items, dtype=np.uint16)
    for j in range(n_neurons):
        pids[order[:, j]] = pid_of_rank
        packed.append(pack_partition_ids(pids, bits))
    return LayerIndex(
        layer=layer,
        ids=item_ids,
        neurons=np.arange(first_neuron, first_neuron + n_neurons, dtype=np.int32),
        n_partitions=n_partitions,
        ratio=float(ratio),
        mai_pos=np.ascontiguousarray(order[:m].T.astype(np.int64)),
        mai_act=np.ascontiguousarray(sorted_act[:m].T),
        packed=packed,
        count=np.broadcast_to(count, (n_neurons, n_partitions)).copy(),
        lo=lo,
        hi=hi,
        shape=tuple(shape) if shape is not None else (n_neurons,),
    )


def activation_digest(layers: Mapping[str, np.ndarray], ids: np.ndarray | None = None) -> str:
    """Digest of an in-memory activation store: layer names, shapes, float32 values and ids.

    Rows are taken in id order, so the same store with rows shuffled has the
    same digest.

    Parameters
    ----------
    layers : mapping of str to numpy.ndarray
        Layer name to (N, ...) activations.
    ids : numpy.ndarray, optional
        (N,) item ids (default ``0..N-1``).

    Returns
    -------
    str
        ``"sha256:<hex>"``.
    """
    h = hashlib.sha256()
    order: np.ndarray | None = None
    for name in sorted(layers):
        a = np.asarray(layers[name])
        if ids is None:
            item_ids = np.arange(a.shape[0], dtype=np.int64)
        else:
            item_ids = np.asarray(ids, dtype=np.int64)
        if order is None:
            order = np.argsort(item_ids, kind="stable")
            h.update(np.ascontiguousarray(item_ids[order]).astype("<i8").tobytes())
        h.update(json.dumps([name, list(a.shape)]).encode())
        h.update(np.ascontiguousarray(a[order].reshape(a.shape[0], -1), dtype="<f4").tobytes())
    return "sha256:" + h.hexdigest()


# ---------------------------------------------------------------------------------------------- storage


def _layer_tables(index: LayerIndex) -> dict[str, pa.Table]:
    n, m = index.mai_pos.shape
    p = index.n_partitions
    mai = pa.table(
        {
            "neuron": pa.array(np.repeat(index.neurons, m), pa.int32()),
            "rank": pa.array(np.tile(np.arange(m, dtype=np.int32), n), pa.int32()),
            "id": pa.array(index.ids[index.mai_pos.ravel()], pa.int64()),
            "activation": pa.array(index.mai_act.ravel(), pa.float32()),
        }
    )
    npi = pa.table({"neuron": pa.array(index.neurons, pa.int32()), "packed": pa.array(index.packed, pa.binary())})
    bounds = pa.table(
        {
            "neuron": pa.array(np.repeat(index.neurons, p), pa.int32()),
            "partition": pa.array(np.tile(np.arange(p, dtype=np.int32), n), pa.int32()),
            "count": pa.array(index.count.ravel(), pa.int64()),
            "lo": pa.array(index.lo.ravel(), pa.float32()),
            "hi": pa.array(index.hi.ravel(), pa.float32()),
        }
    )
    return {"mai": mai, "npi": npi, "bounds": bounds}


def write_layer_index(output: str | os.PathLike[str], index: LayerIndex) -> dict[str, int]:
    """Write one layer's index as Parquet under ``<output>/<layer>/``.

    Parameters
    ----------
    output : path-like
        The index directory.
    index : LayerIndex
        A whole layer's index (all its neurons, in order).

    Returns
    -------
    dict of str to int
        Bytes written per table (``mai``, ``npi``, ``bounds``).
    """
    if "/" in index.layer or index.layer in ("", ".", ".."):
        raise ValueError(f"layer name {index.layer!r} cannot be a directory name")
    folder = Path(output) / index.layer
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for name, table in _layer_tables(index).items():
        path = folder / f"{name}.parquet"
        pq.write_table(table, path)
        sizes[name] = table_bytes(path)
    return sizes


def write_index(
    output: str | os.PathLike[str],
    indexes: Sequence[LayerIndex],
    *,
    source: Mapping[str, Any],
) -> dict[str, Any]:
    """Write every layer's tables, ``ids.parquet`` and ``index.json``.

    Parameters
    ----------
    output : path-like
        The index directory (created).
    indexes : sequence of LayerIndex
        One whole-layer index per layer, all over the same items, ``P`` and ratio.
    source : mapping
        What the index was built from; must hold ``digest`` (see :func:`activation_digest`).

    Returns
    -------
    dict
        The metadata written to ``index.json``.
    """
    if not indexes:
        raise ValueError("no layers to index")
    if "digest" not in source:
        raise ValueError("source must carry a 'digest' so that queries on another store are refused")
    first = indexes[0]
    for other in indexes[1:]:
        if not np.array_equal(other.ids, first.ids) or (other.n_partitions, other.ratio) != (
            first.n_partitions,
            first.ratio,
        ):
            raise ValueError(f"layer {other.layer!r} was built over other items, P or ratio than {first.layer!r}")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": pa.array(first.ids, pa.int64())}), out / "ids.parquet")
    layers = {}
    for index in indexes:
        sizes = write_layer_index(out, index)
        layers[index.layer] = layer_meta(index.shape, int(index.mai_pos.shape[1]), sizes)
    return write_index_meta(
        out, n_items=first.n_items, n_partitions=first.n_partitions, ratio=first.ratio, layers=layers, source=source
    )


def layer_meta(shape: Sequence[int], n_mai: int, sizes: Mapping[str, int]) -> dict[str, Any]:
    """One layer's entry of ``index.json``.

    Parameters
    ----------
    shape : sequence of int
        The layer's per-item shape.
    n_mai : int
        MAI length per neuron.
    sizes : mapping of str to int
        Bytes per table.

    Returns
    -------
    dict
        ``shape``, ``neurons``, ``mai_size`` and ``bytes``.
    """
    return {"shape": list(shape), "neurons": int(np.prod(shape)), "mai_size": int(n_mai), "bytes": dict(sizes)}


def table_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes of a Parquet table: a file, or a directory's data files (Spark's ``_SUCCESS``/``.crc`` excluded).

    Parameters
    ----------
    path : path-like
        The table.

    Returns
    -------
    int
        Its size in bytes.
    """
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.name.startswith((".", "_")))


def write_index_meta(
    output: str | os.PathLike[str],
    *,
    n_items: int,
    n_partitions: int,
    ratio: float,
    layers: Mapping[str, Any],
    source: Mapping[str, Any],
) -> dict[str, Any]:
    """Write ``index.json`` once every table is written (its presence marks a complete index).

    Parameters
    ----------
    output : path-like
        The index directory (holding ``ids.parquet`` and the layers' tables).
    n_items : int
        ``N``.
    n_partitions : int
        ``P``.
    ratio : float
        MAI ratio.
    layers : mapping
        Layer name to :func:`layer_meta`.
    source : mapping
        What the index was built from, with its ``digest``.

    Returns
    -------
    dict
        The metadata written.
    """
    out = Path(output)
    meta = {
        "format": INDEX_FORMAT,
        "N": int(n_items),
        "P": int(n_partitions),
        "ratio": float(ratio),
        "bits": bits_per_item(n_partitions),
        "layers": dict(layers),
        "ids_bytes": table_bytes(out / "ids.parquet"),
        "source": dict(source),
    }
    (out / "index.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return meta


def read_index_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check ``index.json``.

    Parameters
    ----------
    path : path-like
        The index directory.

    Returns
    -------
    dict
        The metadata.
    """
    meta_path = Path(path) / "index.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"no activation index at {path}: {meta_path} missing")
    meta: dict[str, Any] = json.loads(meta_path.read_text())
    if meta.get("format") != INDEX_FORMAT:
        raise ValueError(f"{meta_path}: format {meta.get('format')!r}, expected {INDEX_FORMAT!r}")
    return meta


def read_item_ids(path: str | os.PathLike[str]) -> np.ndarray:
    """Read the index's item ids (ascending).

    Parameters
    ----------
    path : path-like
        The index directory.

    Returns
    -------
    numpy.ndarray
        (N,) int64.
    """
    # A Spark-written table is a directory of parts in no guaranteed order.
    return np.sort(pq.read_table(Path(path) / "ids.parquet").column("id").to_numpy().astype(np.int64))


def read_layer_index(
    path: str | os.PathLike[str], layer: str, meta: Mapping[str, Any] | None = None, ids: np.ndarray | None = None
) -> LayerIndex:
    """Read one layer's index written by :func:`write_index`.

    Parameters
    ----------
    path : path-like
        The index directory.
    layer : str
        Layer name.
    meta : mapping, optional
        ``index.json`` already read.
    ids : numpy.ndarray, optional
        Item ids already read.

    Returns
    -------
    LayerIndex
        The layer's index.
    """
    meta = read_index_meta(path) if meta is None else meta
    if layer not in meta["layers"]:
        raise ValueError(f"unknown layer {layer!r}; the index has layers {sorted(meta['layers'])}")
    ids = read_item_ids(path) if ids is None else ids
    info = meta["layers"][layer]
    n, m, p = int(info["neurons"]), int(info["mai_size"]), int(meta["P"])
    folder = Path(path) / layer
    mai = pq.read_table(folder / "mai.parquet").sort_by([("neuron", "ascending"), ("rank", "ascending")])
    npi = pq.read_table(folder / "npi.parquet").sort_by("neuron")
    bounds = pq.read_table(folder / "bounds.parquet").sort_by([("neuron", "ascending"), ("partition", "ascending")])
    mai_ids = mai.column("id").to_numpy().astype(np.int64)
    return LayerIndex(
        layer=layer,
        ids=ids,
        neurons=npi.column("neuron").to_numpy().astype(np.int32),
        n_partitions=p,
        ratio=float(meta["ratio"]),
        mai_pos=np.searchsorted(ids, mai_ids).reshape(n, m),
        mai_act=mai.column("activation").to_numpy().astype(np.float32).reshape(n, m),
        packed=[bytes(b) for b in npi.column("packed").to_pylist()],
        count=bounds.column("count").to_numpy().astype(np.int64).reshape(n, p),
        lo=bounds.column("lo").to_numpy(zero_copy_only=False).astype(np.float32).reshape(n, p),
        hi=bounds.column("hi").to_numpy(zero_copy_only=False).astype(np.float32).reshape(n, p),
        shape=tuple(int(s) for s in info["shape"]),
    )
