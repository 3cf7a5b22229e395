"""Whole groups placed on partitions round-robin, instead of where their key's hash lands.

``df.repartition(n, "subject")`` sends a row to partition ``pmod(murmur3(subject), n)``:
with few groups, several share a partition while others stay empty (four phantom
subjects on four partitions: two in one, so on two cores one task segmented two
subjects while the other core idled). When the groups are known on the driver,
:func:`place_groups` puts group ``i`` on partition ``i % n``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

__all__ = ["PLACE_COLUMN", "partition_keys", "place_groups"]

PLACE_COLUMN = "_place"
"""Column :func:`place_groups` adds: the key that puts a row on its group's partition."""


def partition_keys(spark: SparkSession, n: int) -> list[int]:
    """Keys ``k_0 .. k_{n-1}`` (longs) that ``repartition(n, column)`` sends to partitions ``0 .. n-1``.

    Found with Spark's own hash (the one its hash partitioning uses), so they
    hold for the running Spark version.
    """
    found: dict[int, int] = {}
    start = 0
    while len(found) < n:
        rows = (spark.range(start, start + 8 * n)
                .select("id", F.pmod(F.hash("id"), F.lit(n)).alias("partition")).collect())
        for row in rows:
            found.setdefault(int(row["partition"]), int(row["id"]))
        start += 8 * n
    return [found[p] for p in range(n)]


def place_groups(df: DataFrame, columns: Sequence[str], groups: Sequence[Sequence[Any]], n: int) -> DataFrame:
    """Repartition ``df`` into ``n`` partitions, group ``i`` of ``groups`` whole on partition ``i % n``.

    Parameters
    ----------
    df : DataFrame
    columns : sequence of str
        The columns that name a group, e.g. ``["subject"]``.
    groups : sequence of tuples
        Every group's values of ``columns``, in the order to deal them out.
        Rows of groups not listed (null keys too) go to partition 0.
    n : int
        Number of partitions.

    Returns
    -------
    DataFrame
        ``df`` plus :data:`PLACE_COLUMN`. Group by ``[PLACE_COLUMN, *columns]``
        next: that grouping keeps this partitioning (no further shuffle).
    """
    n = max(1, n)
    keys = partition_keys(df.sparkSession, n)
    fields = [T.StructField(c, df.schema[c].dataType) for c in columns]
    table = df.sparkSession.createDataFrame(
        [(*group, keys[i % n]) for i, group in enumerate(groups)],
        T.StructType([*fields, T.StructField(PLACE_COLUMN, T.LongType())]))
    placed = df.join(F.broadcast(table), on=list(columns), how="left")
    placed = placed.withColumn(PLACE_COLUMN, F.coalesce(F.col(PLACE_COLUMN), F.lit(keys[0])))
    return placed.repartition(n, PLACE_COLUMN)
