"""Cheap digests of inputs an index was built from, so that a query on changed inputs is refused.

An index (activation index, mask index) records what it was built from; a
query recomputes the digest and refuses a mismatch. Reading a whole table to
hash it would cost what the index exists to avoid, so a Parquet table is
digested from its files' names, sizes and footers: the footer holds every
row group's row count, byte sizes and per-column min/max statistics, so a
rewritten table (Spark names part files uniquely on every write) or one
with changed values almost surely digests differently, at the cost of a few
kilobytes read per file. Other files (a saved model) are hashed whole.
"""

from __future__ import annotations

import glob
import hashlib
import os
import struct
from collections.abc import Iterable
from pathlib import Path

__all__ = ["file_digest", "parquet_digest", "table_digest", "table_root"]

_MAGIC = b"PAR1"
_CHUNK = 1 << 20


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes.

    Parameters
    ----------
    path : path-like
        A file (a directory is digested as its files, sorted by relative path).

    Returns
    -------
    str
        ``"sha256:<hex>"``.
    """
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    h = hashlib.sha256()
    for f in files:
        if root.is_dir():
            h.update(f"{f.relative_to(root)}\n".encode())
        with open(f, "rb") as stream:
            while block := stream.read(_CHUNK):
                h.update(block)
    return "sha256:" + h.hexdigest()


def _parquet_footer(path: Path) -> bytes:
    size = path.stat().st_size
    with open(path, "rb") as stream:
        if size < 12:
            raise ValueError(f"{path}: not a Parquet file ({size} bytes)")
        stream.seek(size - 8)
        tail = stream.read(8)
        if tail[4:] != _MAGIC:
            raise ValueError(f"{path}: not a Parquet file (no PAR1 footer)")
        (length,) = struct.unpack("<I", tail[:4])
        if length + 12 > size:
            raise ValueError(f"{path}: corrupt Parquet footer (length {length} of a {size}-byte file)")
        stream.seek(size - 8 - length)
        return stream.read(length)


def parquet_digest(paths: Iterable[str | os.PathLike[str]], root: str | os.PathLike[str] | None = None,
                   extra: bytes = b"") -> str:
    """Digest of Parquet tables from their files' names, sizes and footers.

    Parameters
    ----------
    paths : iterable of path-like
        Parquet files or directories of them (``*.parquet`` part files, searched recursively).
    root : path-like, optional
        Names are taken relative to it (default: the absolute paths), so a
        table moved together with its root keeps its digest.
    extra : bytes, optional
        More bytes to mix in (e.g. a small metadata file).

    Returns
    -------
    str
        ``"parquet:sha256:<hex>"``.

    Raises
    ------
    ValueError
        If a path does not exist, no Parquet file is found, or a file has no valid footer.
    """
    files: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise ValueError(f"{p}: no such file or directory")
        files.extend(sorted(p.rglob("*.parquet")) if p.is_dir() else [p])
    if not files:
        raise ValueError("no Parquet files to digest")
    base = Path(root).resolve() if root is not None else None
    h = hashlib.sha256(extra)
    for f in sorted(files, key=lambda q: str(q.resolve())):
        name = f.resolve().relative_to(base) if base is not None else f.resolve()
        h.update(f"{name}:{f.stat().st_size}\n".encode())
        h.update(_parquet_footer(f))
    return "parquet:sha256:" + h.hexdigest()


def table_root(item: str | os.PathLike[str]) -> str:
    """The directory a table's files are named from in its digest (a directory, or a file's or glob's folder).

    Named relative to it, a table copied or moved whole keeps its digest.
    """
    item = os.fspath(item)
    path = Path(item[len("file://"):] if item.startswith("file://") else item)
    if path.is_dir():
        return str(path)
    root = path.parent
    while glob.has_magic(str(root)):
        root = root.parent
    return str(root)


def table_digest(table: str | os.PathLike[str]) -> str:
    """:func:`parquet_digest` of one Parquet table (a file or a directory), named from its :func:`table_root`."""
    return parquet_digest([Path(os.fspath(table).removeprefix("file://"))], root=table_root(table))
