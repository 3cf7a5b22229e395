"""The session factory's defaults reach the Python workers."""

from __future__ import annotations

import os
import sys

import pandas as pd

from scilens.core.session import THREAD_ENV, arrow_batch_rows, set_arrow_batch_bytes


def test_workers_get_one_native_thread_and_our_python(spark):
    def probe(batches):
        for _ in batches:
            yield pd.DataFrame({"python": [sys.executable],
                                **{k.lower(): [os.environ.get(k, "")] for k in THREAD_ENV}})

    rows = spark.range(2).repartition(2).mapInPandas(
        probe, "python string, " + ", ".join(f"{k.lower()} string" for k in THREAD_ENV)).collect()
    assert rows
    for row in rows:
        assert row.python == sys.executable
        for key in THREAD_ENV:
            assert row[key.lower()] == "1"
    assert spark.conf.get("spark.sql.execution.arrow.pyspark.enabled") == "true"
    assert spark.sparkContext.getConf().get("spark.driver.host") == "127.0.0.1"


def test_arrow_batches_fit_the_budget(spark):
    volume = 145 * 145 * 174 * 4  # one HCP volume, float32
    assert arrow_batch_rows(volume) * volume <= 256 * 2**20
    assert arrow_batch_rows(10**12) == 1
    before = spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")
    try:
        assert set_arrow_batch_bytes(spark, 200 * 2**20) == 1
    finally:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", before)


def test_java_serialization_forgets_each_cached_batch(spark):
    """Spark caches blocks through a Java serialization stream that keeps every object written
    until a reset; resetting after each one keeps one cached batch of volumes in the heap, not 100."""
    assert spark.sparkContext.getConf().get("spark.serializer.objectStreamReset") == "1"
