"""The one tensor column type: an ndarray as an Arrow/Spark struct.

Every ndarray that travels through a DataFrame in scilens uses this layout::

    struct<shape: array<bigint>, dtype: string, data: binary>

``shape``
    The array's shape; an empty list for a 0-d array.
``dtype``
    The NumPy type string of the stored bytes, always little-endian or
    byte-order free: ``'|b1'`` (bool), ``'|u1'``, ``'<i2'``, ``'<u2'``,
    ``'<i4'``, ``'<i8'``, ``'<f4'``, ``'<f8'`` (and any other fixed-size
    numeric type NumPy knows).
``data``
    The raw element bytes in C (row-major) order.

Encoding canonicalises the memory layout -- Fortran-ordered or big-endian
input (FITS data are big-endian) is written as C-ordered little-endian bytes --
so the values round-trip exactly while the stored form is unique. Decoded
arrays are C-contiguous, native-endian and read-only views on the bytes
(copy them to write). Nothing is pickled: object and string arrays are
refused.

Inside ``mapInPandas``/``applyInPandas`` a tensor column arrives as a pandas
Series of dicts; inside a ``pandas_udf`` it arrives as a pandas DataFrame with
the three fields as columns. :func:`decode_column` accepts both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import types as T

__all__ = [
    "ARROW_TENSOR_TYPE",
    "TENSOR_TYPE",
    "decode",
    "decode_column",
    "encode",
    "encode_column",
    "tensor_field",
]

TENSOR_TYPE = T.StructType(
    [
        T.StructField("shape", T.ArrayType(T.LongType())),
        T.StructField("dtype", T.StringType()),
        T.StructField("data", T.BinaryType()),
    ]
)
"""Spark SQL type of a tensor column. Fields are nullable because that is how
Parquet hands them back; the codec never writes a null field."""

ARROW_TENSOR_TYPE = pa.struct(
    [
        pa.field("shape", pa.list_(pa.int64())),
        pa.field("dtype", pa.string()),
        pa.field("data", pa.binary()),
    ]
)
"""Arrow type of a tensor column (what Spark writes to Parquet)."""


def tensor_field(name: str, nullable: bool = True) -> T.StructField:
    """A Spark schema field named ``name`` holding tensors."""
    return T.StructField(name, TENSOR_TYPE, nullable=nullable)


def _canonical_dtype(dtype: np.dtype) -> np.dtype:
    if dtype.kind not in "biufc" or dtype.hasobject:
        raise TypeError(f"tensor codec stores fixed-size numeric or bool arrays only, not dtype {dtype}")
    return dtype.newbyteorder("<")  # a no-op for byte-order free types such as bool and uint8


def encode(array: Any) -> dict[str, Any]:
    """Encode an array-like as a tensor record (a dict with shape, dtype, data).

    Parameters
    ----------
    array : array_like
        Any fixed-size numeric or bool array, 0-d to N-d, in any memory order
        and byte order.

    Returns
    -------
    dict
        ``{"shape": [...], "dtype": "<f4", "data": b"..."}``, ready to be a
        value of a column of type :data:`TENSOR_TYPE`.
    """
    arr = np.asarray(array)
    dtype = _canonical_dtype(arr.dtype)
    # ascontiguousarray + astype give C order and little-endian bytes; neither
    # changes a value, so the round trip is exact.
    canonical = np.ascontiguousarray(arr.astype(dtype, copy=False))
    return {"shape": [int(n) for n in arr.shape], "dtype": dtype.str, "data": canonical.tobytes()}


def decode(record: Mapping[str, Any] | Any) -> np.ndarray:
    """Decode one tensor record (dict, Spark ``Row`` or pandas row) to an ndarray."""
    if record is None:
        raise ValueError("cannot decode a null tensor")
    shape, dtype, data = record["shape"], record["dtype"], record["data"]
    dt = np.dtype(dtype)
    if dt.hasobject:
        raise TypeError(f"refusing to decode object dtype {dtype!r}")
    shape = tuple(int(n) for n in shape)
    expected = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    if len(data) != expected:
        raise ValueError(f"tensor of shape {shape} and dtype {dtype} needs {expected} bytes, got {len(data)}")
    return np.frombuffer(data, dtype=dt).reshape(shape)


def encode_column(arrays: Iterable[Any]) -> list[dict[str, Any] | None]:
    """Encode arrays for a tensor column of a pandas DataFrame; ``None`` stays null."""
    return [None if a is None else encode(a) for a in arrays]


def decode_column(column: pd.Series | pd.DataFrame) -> list[np.ndarray | None]:
    """Decode a pandas tensor column to a list of arrays (nulls become ``None``).

    Accepts the two forms Spark hands to Python UDFs: a Series of dicts
    (``mapInPandas``, ``applyInPandas``) or a DataFrame with ``shape``,
    ``dtype`` and ``data`` columns (``pandas_udf``).
    """
    if isinstance(column, pd.DataFrame):
        return [
            None if data is None else decode({"shape": shape, "dtype": dtype, "data": data})
            for shape, dtype, data in zip(column["shape"], column["dtype"], column["data"])
        ]
    return [None if rec is None or (isinstance(rec, float) and np.isnan(rec)) else decode(rec) for rec in column]
