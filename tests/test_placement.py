"""Groups dealt out over partitions: one per partition while there are partitions to spare."""

from __future__ import annotations

from pyspark.sql import functions as F

from scilens.core.placement import PLACE_COLUMN, partition_keys, place_groups


def test_keys_land_on_their_partitions(spark):
    for n in (1, 2, 3, 4, 7, 16):
        keys = partition_keys(spark, n)
        df = spark.createDataFrame([(k,) for k in keys], "key long").repartition(n, "key")
        placed = {r["key"]: r["p"] for r in df.select("key", F.spark_partition_id().alias("p")).collect()}
        assert [placed[k] for k in keys] == list(range(n))


def test_groups_that_hashing_puts_together_get_a_partition_each(spark):
    names = [f"phantom{i}" for i in range(4)]
    rows = spark.createDataFrame([(name, v) for name in names for v in range(3)], "subject string, volume int")
    hashed = rows.repartition(4, "subject").select("subject", F.spark_partition_id().alias("p")).distinct()
    assert hashed.select("p").distinct().count() < 4, "these names no longer collide under hashing: pick others"

    placed = place_groups(rows, ["subject"], [(name,) for name in names], 4)
    where = placed.select("subject", "volume", F.spark_partition_id().alias("p")).collect()
    assert {r["subject"]: r["p"] for r in where} == {name: i for i, name in enumerate(names)}
    assert len(where) == 12  # every row kept, once
    counted = placed.groupBy(PLACE_COLUMN, "subject").count()
    plan = counted._jdf.queryExecution().executedPlan().toString()
    assert plan.count("Exchange hashpartitioning") == 1, f"grouping must not shuffle again:\n{plan}"


def test_more_groups_than_partitions_go_round_robin(spark):
    rows = spark.createDataFrame([(f"s{i}",) for i in range(10)], "subject string")
    placed = place_groups(rows, ["subject"], [(f"s{i}",) for i in range(10)], 4)
    where = {r["subject"]: r["p"] for r in placed.select("subject", F.spark_partition_id().alias("p")).collect()}
    assert where == {f"s{i}": i % 4 for i in range(10)}


def test_rows_of_unlisted_or_null_groups_go_to_partition_0(spark):
    rows = spark.createDataFrame([("a",), ("b",), (None,), ("zzz",)], "patch string")
    placed = place_groups(rows, ["patch"], [("b",), ("a",)], 2)
    where = {r["patch"]: r["p"] for r in placed.select("patch", F.spark_partition_id().alias("p")).collect()}
    assert where == {"b": 0, "a": 1, None: 0, "zzz": 0}
