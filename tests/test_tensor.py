"""The tensor codec round-trips every supported array exactly, in Python and through Spark/Parquet."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pyspark.sql import functions as F
from pyspark.sql import types as T

from scilens.core import tensor

DTYPES = ["bool", "uint8", "int16", "uint16", "int32", "int64", "float32", "float64"]


def _arrays():
    dtype = st.sampled_from(DTYPES).flatmap(
        lambda name: st.sampled_from([np.dtype(name), np.dtype(name).newbyteorder(">")]))
    shape = hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=4)
    return st.tuples(dtype, shape).flatmap(lambda ds: hnp.arrays(ds[0], ds[1]))


@settings(max_examples=300, deadline=None)
@given(array=_arrays(), fortran=st.booleans())
def test_round_trip_is_exact(array, fortran):
    if fortran:
        array = np.asfortranarray(array)
    out = tensor.decode(tensor.encode(array))
    assert out.shape == array.shape
    assert out.dtype == array.dtype.newbyteorder("=")  # same kind and size, native byte order
    assert out.tobytes() == np.ascontiguousarray(array.astype(out.dtype)).tobytes()  # bit-exact, NaNs too


def test_big_endian_is_stored_little_endian():
    array = np.arange(6, dtype=">i4").reshape(2, 3)
    record = tensor.encode(array)
    assert record["dtype"] == "<i4"
    assert record["data"] == np.arange(6, dtype="<i4").tobytes()
    assert np.array_equal(tensor.decode(record), array)


def test_fortran_order_values_survive():
    array = np.asfortranarray(np.arange(24, dtype=np.float64).reshape(2, 3, 4))
    assert np.array_equal(tensor.decode(tensor.encode(array)), array)


def test_refuses_object_arrays_and_bad_records():
    with pytest.raises(TypeError):
        tensor.encode(np.array(["a", "b"], dtype=object))
    with pytest.raises(TypeError):
        tensor.encode(np.array(["ab", "cd"]))
    with pytest.raises(ValueError, match="needs 24 bytes"):
        tensor.decode({"shape": [2, 3], "dtype": "<f4", "data": b"\0" * 12})
    with pytest.raises(TypeError):
        tensor.decode({"shape": [1], "dtype": "|O", "data": b"\0" * 8})


def test_spark_parquet_round_trip_and_udf_decoding(spark, tmp_path):
    rng = np.random.default_rng(0)
    arrays = [
        rng.normal(size=(3, 4, 5)).astype(np.float32),
        np.asfortranarray(rng.integers(-500, 500, size=(7, 2)).astype(">i2")),
        np.array(3.5),
        rng.integers(0, 2, size=(2, 2, 2, 2, 2)).astype(bool),
        np.arange(10, dtype=np.uint16),
    ]
    schema = T.StructType([T.StructField("id", T.LongType()), tensor.tensor_field("t")])
    pdf = pd.DataFrame({"id": range(len(arrays)), "t": tensor.encode_column(arrays)})
    df = spark.createDataFrame(pdf, schema)
    path = str(tmp_path / "t.parquet")
    df.write.parquet(path)
    back = spark.read.parquet(path)
    assert back.schema["t"].dataType == tensor.TENSOR_TYPE

    # mapInPandas form: a Series of dicts; re-encode the sum to prove arrays are usable.
    def total(batches):
        for batch in batches:
            values = tensor.decode_column(batch["t"])
            yield pd.DataFrame({"id": batch["id"], "s": [float(np.sum(v, dtype=np.float64)) for v in values]})

    sums = dict(back.mapInPandas(total, "id long, s double").collect())

    # pandas_udf form: a DataFrame with shape, dtype, data columns.
    @F.pandas_udf("double")
    def total_udf(t: pd.DataFrame) -> pd.Series:
        return pd.Series([float(np.sum(v, dtype=np.float64)) for v in tensor.decode_column(t)])

    udf_sums = dict(back.select("id", total_udf("t")).collect())
    for i, array in enumerate(arrays):
        expected = float(np.sum(array, dtype=np.float64))
        assert sums[i] == pytest.approx(expected, rel=1e-12)
        assert udf_sums[i] == pytest.approx(expected, rel=1e-12)
    decoded = {r.id: tensor.decode(r.t) for r in back.collect()}
    for i, array in enumerate(arrays):
        assert np.array_equal(decoded[i], array)
