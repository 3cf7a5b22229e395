"""Parquet tables read back by key: sorted within each file, in small row groups.

An index answers a query by fetching a few rows by id (activations of the
candidate items, the masks its bounds cannot decide). Parquet's unit of
reading is a column chunk of one row group, so the rows of a table that is
read this way must sit in small row groups in key order: a lookup then
decodes a few row groups instead of whole files. Spark's writer closes a row
group once its buffered size passes ``parquet.block.size``, but checks the
size only every 100 rows or more by default, which lets a row group of wide
rows (a 224 x 224 mask is 200 KB) grow far past it; checking from the first
row keeps row groups near the size asked for.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame

__all__ = ["ROW_GROUP_BYTES", "KeyedParquet", "MissingKeys", "ReadCost", "write_sorted"]

ROW_GROUP_BYTES = 256 << 10
"""Default row-group size of tables read by key: a few hundred rows of a dense layer's activations, one
224 x 224 float mask; decoding one column chunk of it costs well under a millisecond."""


def write_sorted(df: DataFrame, path: str | os.PathLike[str], key: Sequence[str], *,
                 row_group_bytes: int = ROW_GROUP_BYTES, files: int | None = None, mode: str = "overwrite") -> None:
    """Write ``df`` as Parquet sorted by ``key`` within each file, in row groups of about ``row_group_bytes``.

    Parameters
    ----------
    df : pyspark.sql.DataFrame
        The rows.
    path : path-like
        The table directory.
    key : sequence of str
        Sort columns (the lookup key first).
    row_group_bytes : int, default 256 KiB
        Target row-group size (uncompressed, as the writer buffers it).
    files : int, optional
        Output files: the input is range-partitioned by ``key`` into this
        many, so the files hold disjoint, ordered key ranges (a sampling pass
        over the key columns). By default the input's partitions are kept
        and only sorted within (no shuffle).
    mode : str, default "overwrite"
        Spark save mode.
    """
    if files is not None:
        df = df.repartitionByRange(max(1, files), *key)
    (df.sortWithinPartitions(*key).write.mode(mode)
       .option("parquet.block.size", int(row_group_bytes))
       .option("parquet.page.size.row.check.min", 1)
       .option("parquet.page.size.row.check.max", 1000)
       .parquet(os.fspath(path)))


class MissingKeys(ValueError):
    """Keys asked of a :class:`KeyedParquet` that the table does not hold (``absent``: the distinct ones, sorted)."""

    def __init__(self, absent: np.ndarray) -> None:
        self.absent = absent
        super().__init__(f"{absent.size} of the keys asked for are not in the table, e.g. "
                         f"{', '.join(map(str, absent[:5].tolist()))}")


@dataclass
class ReadCost:
    """What one :meth:`KeyedParquet.read` decoded.

    Attributes
    ----------
    row_groups : int
        Row groups read.
    bytes : int
        Compressed bytes of the column chunks read.
    """

    row_groups: int = 0
    bytes: int = 0


class KeyedParquet:
    """Rows of a Parquet table fetched by an integer key, reading only the row groups that hold them.

    At construction the key column of every row group is read (8 bytes per
    row) to map each key to its (file, row group, row); a read then decodes,
    for the asked columns only, the row groups holding the asked keys. Works
    on any layout; it is fast when the table was written by
    :func:`write_sorted` (small row groups, so few rows are decoded per key).

    Parameters
    ----------
    table : path-like
        A Parquet file or a directory of ``*.parquet`` part files.
    key : str, default "id"
        The integer key column (unique).

    Raises
    ------
    ValueError
        No Parquet file, no such column, or a key held twice (naming it).
    """

    def __init__(self, table: str | os.PathLike[str], key: str = "id") -> None:
        import pyarrow.parquet as pq

        root = Path(table)
        paths = sorted(root.rglob("*.parquet")) if root.is_dir() else [root]
        if not paths:
            raise ValueError(f"{root}: no Parquet files")
        self.key = key
        self._files = [pq.ParquetFile(p) for p in paths]
        keys, groups, rows = [], [], []
        self._groups: list[tuple[int, int]] = []
        for f, pf in enumerate(self._files):
            if key not in pf.schema_arrow.names:
                raise ValueError(f"{paths[f]}: no key column {key!r}")
            # one read of the key column per file; the footer's row counts place each row in its group
            keys.append(pf.read(columns=[key]).column(0).to_numpy().astype(np.int64))
            sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)]
            groups.append(np.repeat(np.arange(len(self._groups), len(self._groups) + len(sizes)), sizes))
            rows.append(np.concatenate([np.arange(n) for n in sizes]) if sizes else np.empty(0, dtype=np.int64))
            self._groups += [(f, g) for g in range(len(sizes))]
        all_keys = np.concatenate(keys)
        rows_in_group = np.concatenate(rows).astype(np.int64)
        order = np.argsort(all_keys, kind="stable")
        self._keys = all_keys[order]
        dup = np.flatnonzero(np.diff(self._keys) == 0)
        if dup.size:
            raise ValueError(f"{root}: key {int(self._keys[dup[0]])} is held by more than one row")
        self._group = np.concatenate(groups).astype(np.int64)[order]
        self._row = rows_in_group[order]

    def __len__(self) -> int:
        """Rows in the table."""
        return len(self._keys)

    @property
    def files(self) -> list:
        """The table's files (``pyarrow.parquet.ParquetFile``), in path order."""
        return list(self._files)

    def read(self, wanted: np.ndarray, columns: Sequence[str]) -> tuple[pa.Table, ReadCost]:
        """The rows of ``wanted`` keys, in the order asked (repeats allowed), with the asked columns.

        Parameters
        ----------
        wanted : numpy.ndarray
            Integer keys.
        columns : sequence of str
            Columns to return.

        Returns
        -------
        table : pyarrow.Table
            ``len(wanted)`` rows.
        cost : ReadCost
            Row groups and bytes decoded.

        Raises
        ------
        MissingKeys
            Naming how many keys are absent and the first few.
        """
        import pyarrow as pa

        wanted = np.asarray(wanted, dtype=np.int64)
        at = np.searchsorted(self._keys, wanted)
        found = (at < len(self._keys)) & (self._keys[np.minimum(at, len(self._keys) - 1)] == wanted)
        if not found.all():
            raise MissingKeys(np.unique(wanted[~found]))
        groups, rows = self._group[at], self._row[at]
        pieces, cost, names = [], ReadCost(), set(columns)
        for g in np.unique(groups):
            f, rg = self._groups[int(g)]
            chunk = self._files[f].read_row_group(rg, columns=list(columns))
            mine = np.flatnonzero(groups == g)
            pieces.append((mine, chunk.take(pa.array(rows[mine]))))
            meta = self._files[f].metadata.row_group(rg)
            cost.row_groups += 1
            cost.bytes += sum(meta.column(c).total_compressed_size for c in range(meta.num_columns)
                              if meta.column(c).path_in_schema.split(".")[0] in names)
        if not pieces:
            return self._files[0].schema_arrow.empty_table().select(list(columns)), cost
        order = np.argsort(np.concatenate([mine for mine, _ in pieces]), kind="stable")
        table = pa.concat_tables([t for _, t in pieces]).take(pa.array(order))
        return table, cost
