"""Finding input files on the driver and handing them to executors.

The driver only lists paths; executors open the files (``paths_frame`` puts
each file in its own partition, so each file is one task).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

__all__ = ["InputError", "list_files", "paths_frame"]


class InputError(ValueError):
    """An input path does not exist or holds no file of the expected kinds."""


def _has_suffix(path: str, suffixes: Sequence[str]) -> bool:
    lower = path.lower()
    return any(lower.endswith(s) for s in suffixes)


def list_files(inputs: str | Sequence[str], suffixes: Sequence[str],
               problems: list[tuple[str, str]] | None = None) -> list[str]:
    """Absolute paths of the files with one of ``suffixes`` under ``inputs``.

    Each input may be a file (kept whatever its suffix, so a mislabelled file
    reaches the reader and is rejected with a reason), a directory (searched
    recursively) or a glob. Hidden files and directories are skipped.
    Returns sorted, de-duplicated paths.

    A directory that cannot be listed (permissions, I/O error) is appended to
    ``problems`` as (path, reason) when a list is given; without one it raises
    :class:`InputError`: an input is never skipped without a trace.
    """
    inputs = [inputs] if isinstance(inputs, str) else list(inputs)
    found: set[str] = set()
    unlisted: list[tuple[str, str]] = []

    def unreadable(exc: OSError) -> None:
        unlisted.append((os.path.abspath(exc.filename or ""), f"cannot list directory: {exc.strerror or exc}"))

    for item in inputs:
        text = item[len("file://"):] if item.startswith("file://") else item
        if os.path.isfile(text):
            found.add(os.path.abspath(text))
            continue
        if os.path.isdir(text):
            for root, dirs, files in os.walk(text, onerror=unreadable):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                found.update(os.path.abspath(os.path.join(root, f)) for f in files
                             if not f.startswith(".") and _has_suffix(f, suffixes))
            continue
        matches = [m for m in glob.glob(text, recursive=True) if os.path.isfile(m)]
        if not matches:
            raise InputError(f"input {item}: no such file or directory")
        found.update(os.path.abspath(m) for m in matches)
    if unlisted and problems is None:
        raise InputError("; ".join(f"{path}: {reason}" for path, reason in unlisted))
    if problems is not None:
        problems.extend(unlisted)
    if not found and not unlisted:
        raise InputError(f"input {', '.join(inputs)}: no files ending in {', '.join(suffixes)}")
    return sorted(found)


def paths_frame(spark: SparkSession, paths: Sequence[str | Path],
                columns: Mapping[str, Sequence[str | None]] | None = None,
                files_per_partition: int = 1) -> DataFrame:
    """A DataFrame with a ``path`` column, one file per partition.

    ``columns`` adds string columns aligned with ``paths`` (e.g. the subject
    and gradient files of a subject manifest); ``None`` values become nulls.
    ``files_per_partition`` puts that many consecutive files in each partition
    instead, for many small files, where the cost of a task outweighs its file's.
    """
    extra = dict(columns or {})
    for name, values in extra.items():
        if len(values) != len(paths):
            raise ValueError(f"column {name!r} has {len(values)} values for {len(paths)} paths")
    rows = [(str(p), *(None if v[i] is None else str(v[i]) for v in extra.values())) for i, p in enumerate(paths)]
    schema = T.StructType([T.StructField("path", T.StringType(), False),
                           *(T.StructField(name, T.StringType(), True) for name in extra)])
    if files_per_partition < 1:
        raise ValueError(f"files_per_partition must be at least 1, got {files_per_partition}")
    rdd = spark.sparkContext.parallelize(rows, numSlices=max(1, -(-len(rows) // files_per_partition)))
    return spark.createDataFrame(rdd, schema)
