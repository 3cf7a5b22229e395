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

from pyspark.sql import DataFrame

__all__ = ["ROW_GROUP_BYTES", "write_sorted"]

ROW_GROUP_BYTES = 1 << 20
"""Default row-group size of tables read by key: decoding one costs about a millisecond."""


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
    row_group_bytes : int, default 1 MiB
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
