"""Struct columns out of pandas UDFs without pyarrow 14's reference leak.

pyarrow before 16 keeps a reference to every value it reads from a Python dict
while building a struct array (apache/arrow#37989, fixed in pyarrow 16 by
apache/arrow#40412; the backport to 14.x was never released). PySpark hands
every struct value a pandas UDF returns to pyarrow as a dict: our tensor column
(struct<shape, dtype, data>) and ``_rejected``. So the bytes of every tensor a
Python worker emitted stayed alive in that worker: reading a 2 GB subject, the
worker grew by a volume (11 MB) per volume read and died of MemoryError under a
1.5 GiB cap. The horovod stack stays on pyarrow 14 because petastorm 0.13 breaks on
pyarrow 15 and later.

:func:`install` puts a struct-aware step in front of PySpark's pandas-to-Arrow
conversion (``ArrowStreamPandasSerializer._create_array``, which every pandas UDF
and ``createDataFrame`` from pandas use; the UDTF serializer has its own and is
left alone): a struct column of dicts, tuples or Rows is split into one column per
field (top-level arrays convert without the leak), each converted by PySpark's
own code, and joined with ``StructArray.from_arrays``; every other column goes to
PySpark unchanged. Values and nulls are those PySpark would produce. It does
nothing on pyarrow 16 or later (the current stack): :data:`scilens.core.compat.PYARROW_STRUCT_LEAK`
decides.

``import scilens`` installs it, so every Python worker that runs scilens code
(which unpickles scilens modules before any row flows) converts this way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import pyarrow as pa

from scilens.core import compat

__all__ = ["install", "installed", "struct_array"]

def struct_array(series: pd.Series, arrow_type: pa.StructType,
                 convert: Callable[[pd.Series, int], pa.Array]) -> pa.StructArray:
    """Build a struct array from an object Series of dicts, tuples/Rows or nulls, field by field.

    Parameters
    ----------
    series : pandas.Series
        Struct values: a dict (missing keys are null), a tuple, Row or list
        (by position), or None/NaN for a null struct.
    arrow_type : pyarrow.StructType
    convert : callable
        ``convert(field_series, field_index)`` -> Arrow array of that field.
    """
    names = [field.name for field in arrow_type]
    columns: list[list[Any]] = [[] for _ in names]
    nulls: list[bool] = []
    for value in series:
        if isinstance(value, dict):
            fields = [value.get(name) for name in names]
        elif isinstance(value, (tuple, list)):  # by position, as PySpark takes them
            fields = list(value) + [None] * (len(names) - len(value))
        elif value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
            fields = [None] * len(names)
        else:
            raise TypeError(f"column {series.name!r}: a value of struct type {arrow_type} must be a dict, "
                            f"a tuple, a list or None, got {type(value).__name__}")
        nulls.append(not isinstance(value, (dict, tuple, list)))
        for column, field in zip(columns, fields):
            column.append(field)
    children = [convert(pd.Series(column, dtype=object, name=name), index)
                for index, (column, name) in enumerate(zip(columns, names))]
    mask = pa.array(nulls, pa.bool_()) if any(nulls) else None
    return pa.StructArray.from_arrays(children, fields=list(arrow_type), mask=mask)


_original = None


def installed() -> bool:
    """Whether PySpark's pandas-to-Arrow conversion goes through :func:`struct_array`."""
    return _original is not None


def install() -> bool:
    """Route PySpark's struct columns through :func:`struct_array` (once; no-op on pyarrow >= 16).

    Returns whether the conversion is installed.
    """
    global _original
    if _original is not None or not compat.PYARROW_STRUCT_LEAK:
        return installed()
    from pyspark.sql.pandas.serializers import ArrowStreamPandasSerializer
    from pyspark.sql.types import StructType

    original = ArrowStreamPandasSerializer._create_array

    def _create_array(self, series, arrow_type, spark_type=None, arrow_cast=False):
        if (arrow_type is not None and pa.types.is_struct(arrow_type) and not compat.is_variant_arrow_type(arrow_type)
                and series.dtype == object):
            fields = spark_type.fields if isinstance(spark_type, StructType) else None

            def convert(field_series, index):
                return self._create_array(field_series, arrow_type[index].type,
                                          spark_type=fields[index].dataType if fields else None,
                                          arrow_cast=arrow_cast)

            return struct_array(series, arrow_type, convert)
        return original(self, series, arrow_type, spark_type, arrow_cast)

    # setattr: mypy refuses assigning to a method, which is what this patch is.
    setattr(ArrowStreamPandasSerializer, "_create_array", _create_array)  # noqa: B010
    _original = original
    return True
