r"""Every difference between the two tested stacks, in one place.

scilens is one code base for two stacks (``constraints/current.txt`` and ``constraints/horovod.txt``):

========== ============================== ==================================
library    current (Databricks 17.3 LTS)  horovod (EMR 7, Dataproc 2.2, 15.4)
========== ============================== ==================================
pyspark    4.0                            3.5
numpy      2.1                            1.26
pyarrow    19                             14
TensorFlow 2.19 with Keras 3              2.15.1 with Keras 2, Horovod, Petastorm
photutils  3.0                            2.3
========== ============================== ==================================

Library code asks this module instead of testing versions itself, so that the list of places where the
stacks forced a difference is this file and its callers (``grep -rn "compat\." lib``). Nothing here imports
TensorFlow or Horovod at import time: ``import scilens`` must stay cheap on Spark's Python workers.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from functools import cache
from typing import Any

import pyarrow as pa
import pyspark

__all__ = [
    "PYARROW_MAJOR",
    "PYARROW_STRUCT_LEAK",
    "SPARK_MAJOR",
    "STACKS",
    "array_position",
    "deblend_levels",
    "is_variant_arrow_type",
    "kron_flux_err",
    "missing_libraries",
    "n_pixels_mesh",
    "stack",
    "tf_variable",
    "try_cast",
]


def _major(version: str) -> int:
    return int(version.split(".")[0])


PYARROW_MAJOR = _major(pa.__version__)

PYARROW_STRUCT_LEAK = PYARROW_MAJOR < 16
"""pyarrow before 16 leaks every dict it turns into a struct (apache/arrow#37989): only the horovod stack's
pyarrow 14 (kept for Petastorm) needs :mod:`scilens.core.arrow_structs`' patch of PySpark."""

SPARK_MAJOR = _major(pyspark.__version__)
"""PySpark 3.5 (horovod stack) lacks the VARIANT type that 4.0's pandas serializer checks for."""


def is_variant_arrow_type(arrow_type: pa.DataType) -> bool:
    """Whether PySpark encodes ``arrow_type`` as its VARIANT type (only PySpark 4 has one)."""
    if SPARK_MAJOR < 4:
        return False
    from pyspark.sql.pandas.types import is_variant

    return bool(is_variant(arrow_type))


def try_cast(column: str, data_type: Any) -> Any:
    """``column`` cast to ``data_type``, null where it does not convert (``Column.try_cast`` is PySpark 4 only).

    On PySpark 3.5 this is Spark SQL's ``try_cast`` (Spark 3.2+), written as an expression over the column's
    name: a plain ``cast`` would raise under ANSI mode instead of giving null.
    """
    from pyspark.sql import functions as F

    if SPARK_MAJOR >= 4:
        return F.col(column).try_cast(data_type)
    quoted = "`" + column.replace("`", "``") + "`"
    return F.expr(f"try_cast({quoted} AS {data_type.simpleString()})")


def array_position(array: Any, value: Any) -> Any:
    """1-based position of Column ``value`` in Column ``array`` (0 if absent).

    PySpark 3.5's ``F.array_position`` takes only a Python literal as the value; the SQL function takes any
    expression, and ``F.call_function`` (PySpark 3.5+) reaches it on both stacks.
    """
    from pyspark.sql import functions as F

    return F.call_function("array_position", array, value)


def tf_variable(weight: Any) -> Any:
    r"""The ``tf.Variable`` behind a Keras weight (a distributed one under a ``tf.distribute`` strategy).

    Keras 2 (horovod stack) weights are ``tf.Variable``\ s; Keras 3 (current) wraps one in a
    ``keras.Variable`` whose ``value`` property autocasts, so the variable itself is its ``_value``.
    """
    import tensorflow as tf

    return weight if isinstance(weight, tf.Variable) else weight._value


@cache
def photutils_major() -> int:
    """The major version of photutils.

    photutils 3 (current stack) renamed nlevels, kron_fluxerr and npixels_mesh; 2.x (horovod) has the old names.
    """
    return _major(importlib.metadata.version("photutils"))


def deblend_levels(levels: int) -> dict[str, int]:
    """The keyword argument of ``photutils.segmentation.deblend_sources`` for the number of thresholds."""
    return {"n_levels": levels} if photutils_major() >= 3 else {"nlevels": levels}


def kron_flux_err(catalog: Any) -> Any:
    """``SourceCatalog``'s Kron flux uncertainties."""
    return catalog.kron_flux_err if photutils_major() >= 3 else catalog.kron_fluxerr


def n_pixels_mesh(background: Any) -> Any:
    """``Background2D``'s count of unmasked pixels in each box."""
    return background.n_pixels_mesh if photutils_major() >= 3 else background.npixels_mesh


STACKS: dict[str, tuple[str, ...]] = {
    "horovod": ("horovod.tensorflow", "horovod.spark", "petastorm"),
    "current": (),
}
"""Stack name -> the libraries only that stack has (what a test marked ``stack(name)`` needs)."""


def missing_libraries(name: str) -> list[str]:
    """Libraries of stack ``name`` that this environment lacks (looked up without importing them)."""
    if name not in STACKS:
        raise ValueError(f"unknown stack {name!r}; stacks are {', '.join(sorted(STACKS))}")
    missing = []
    for module in STACKS[name]:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # the parent package is absent
            found = False
        if not found:
            missing.append(module)
    return missing


@cache
def stack() -> str:
    """The stack installed here: ``horovod`` when Horovod and Petastorm are importable, else ``current``."""
    return "horovod" if not missing_libraries("horovod") else "current"
