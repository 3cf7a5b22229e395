"""Struct columns out of pandas UDFs: same values as PySpark's conversion, no bytes kept alive."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from pyspark.sql import Row
from pyspark.sql import types as T
from pyspark.sql.pandas.serializers import ArrowStreamPandasSerializer

import scilens  # noqa: F401  (installs the conversion)
from scilens.core import arrow_structs, compat, tensor
from scilens.core.quarantine import REJECTED_TYPE

TENSOR_ARROW = pa.struct([("shape", pa.list_(pa.int64())), ("dtype", pa.string()), ("data", pa.binary())])
NESTED = pa.struct([("name", pa.string()), ("t", TENSOR_ARROW), ("n", pa.int64())])


# What the patch itself does, where it is installed (pyarrow < 16: the horovod stack). On later pyarrow
# PySpark's own conversion runs, and it refuses some values the patch takes (NaN as a null struct).
patched_only = pytest.mark.skipif(not compat.PYARROW_STRUCT_LEAK,
                                  reason=f"the pyarrow-leak patch is installed only on pyarrow < 16 (the horovod "
                                         f"stack); this is pyarrow {pa.__version__} (the current stack)")


def _serializer() -> ArrowStreamPandasSerializer:
    return ArrowStreamPandasSerializer("UTC", True)


def test_installed_on_this_pyarrow():
    assert arrow_structs.installed() == (int(pa.__version__.split(".")[0]) < 16)


@patched_only
def test_values_and_nulls_equal_pyarrows_own_conversion():
    a, b = tensor.encode(np.arange(6, dtype="<f4").reshape(2, 3)), tensor.encode(np.zeros(0, ">i2"))
    values = [
        {"name": "a", "t": a, "n": 1},
        None,
        ("b", b, 2),  # a tuple is by position, as in PySpark
        Row(name="c", t=None, n=None),
        {"name": "d"},  # missing keys are null
        float("nan"),
    ]
    got = _serializer()._create_array(pd.Series(values, dtype=object, name="col"), NESTED)
    expected_py = [{"name": "a", "t": a, "n": 1}, None, {"name": "b", "t": b, "n": 2},
                   {"name": "c", "t": None, "n": None}, {"name": "d", "t": None, "n": None}, None]
    assert got.type == NESTED
    assert got.to_pylist() == pa.array(expected_py, type=NESTED).to_pylist()
    assert got.null_count == 2
    assert np.array_equal(tensor.decode(got[0]["t"].as_py()), np.arange(6, dtype="<f4").reshape(2, 3))


def test_equal_to_pysparks_own_conversion_with_spark_types():
    """Dicts, tuples and lists; timestamps inside a struct localised by the Spark type, as PySpark does."""
    import datetime

    spark_type = T.StructType([T.StructField("when", T.TimestampType()), T.StructField("label", T.StringType()),
                               T.StructField("scores", T.ArrayType(T.DoubleType()))])
    arrow_type = pa.struct([("when", pa.timestamp("us", tz="UTC")), ("label", pa.string()),
                            ("scores", pa.list_(pa.float64()))])
    values = [{"when": datetime.datetime(2026, 1, 2, 3, 4, 5), "label": "a", "scores": [1.0, 2.5]}, None,
              (datetime.datetime(2020, 5, 6), "b", [])]
    if compat.SPARK_MAJOR >= 4:  # PySpark 3.5's own conversion takes a struct as a dict or tuple, not a list
        values.append([datetime.datetime(1999, 12, 31), None, [3.0]])
    series = pd.Series(values, dtype=object, name="col")
    serializer = _serializer()
    got = serializer._create_array(series, arrow_type, spark_type=spark_type)
    if arrow_structs.installed():
        expected = arrow_structs._original(serializer, series, arrow_type, spark_type)
        assert got.equals(expected)
    assert got[0]["when"].as_py() == datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)


@patched_only
def test_a_non_struct_value_names_the_column():
    with pytest.raises(TypeError, match=r"'col'.*got str"):
        _serializer()._create_array(pd.Series(["text"], dtype=object, name="col"), TENSOR_ARROW)


def test_the_bytes_are_not_kept_alive():
    data = np.ones(1000, dtype="<f8").tobytes()
    value = {"shape": [1000], "dtype": "<f8", "data": data}
    before = sys.getrefcount(data)
    array = _serializer()._create_array(pd.Series([value] * 3, dtype=object, name="t"), TENSOR_ARROW)
    del array
    assert sys.getrefcount(data) == before


def test_a_python_worker_streaming_tensors_does_not_grow(spark):
    """60 tensors of 4 MB out of one task: the worker's resident memory stays flat.

    With pyarrow 14's own conversion every tensor's bytes stay in the worker:
    it grows by 240 MB.
    """
    n_rows, row_bytes = 60, 4 * 2**20
    schema = T.StructType([T.StructField("n", T.IntegerType()), tensor.tensor_field("data"),
                           T.StructField("rss", T.LongType()), T.StructField("_rejected", REJECTED_TYPE)])

    def emit(batches):
        for _ in batches:
            for n in range(n_rows):
                with open("/proc/self/statm") as statm:
                    rss = int(statm.read().split()[1]) * 4096
                volume = np.full(row_bytes // 4, n, dtype="<f4")
                yield pd.DataFrame({"n": [n], "data": [tensor.encode(volume)], "rss": [rss], "_rejected": [None]})

    rows = spark.range(1).repartition(1).mapInPandas(emit, schema).select("n", "rss").collect()
    rss = {r["n"]: r["rss"] for r in rows}
    assert sorted(rss) == list(range(n_rows))
    growth = rss[n_rows - 1] - rss[5]
    assert growth < 10 * row_bytes, f"the worker grew by {growth / 2**20:.0f} MiB over {n_rows - 6} rows"
