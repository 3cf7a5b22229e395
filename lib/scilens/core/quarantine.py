"""Quarantine: bad records leave the pipeline as rows of ``_rejected``, good ones go on.

A Spark step that may fail per record emits, next to its data columns, a
nullable ``_rejected`` struct (path, record, step, error_type, message). For a
good row it is null; a failing record yields one row with only ``_rejected``
set. :func:`split_rejected` then separates the two and, because a reader may
have emitted some rows of a file before failing on it (a truncated
``.nii.gz``), drops every data row whose key was rejected: a record is all
or nothing.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from scilens.core import compat

__all__ = [
    "REJECTED_COLUMN",
    "REJECTED_TYPE",
    "guard_rows",
    "rejected_frame",
    "rejection",
    "split_rejected",
    "with_rejected_field",
]

REJECTED_COLUMN = "_rejected"

REJECTED_TYPE = T.StructType(
    [
        T.StructField("path", T.StringType()),
        T.StructField("record", T.StringType()),
        T.StructField("step", T.StringType()),
        T.StructField("error_type", T.StringType()),
        T.StructField("message", T.StringType()),
    ]
)
"""One rejected record: the file it came from, which record (e.g. a subject or
``volume 3``), the step that failed, and why."""


def rejection(path: str, step: str, error: BaseException | str, record: str = "") -> dict[str, str]:
    """A ``_rejected`` record for ``path`` failing ``step``.

    The message always names the file, so a reader of ``_rejected`` alone
    knows what to fix.
    """
    if isinstance(error, BaseException):
        error_type = type(error).__name__
        message = str(error) or traceback.format_exception_only(type(error), error)[-1].strip()
    else:
        error_type, message = "InvalidInput", error
    if path and path not in message:
        message = f"{path}: {message}"
    return {"path": path, "record": record, "step": step, "error_type": error_type, "message": message}


def rejected_frame(spark: SparkSession, records: pd.DataFrame | Iterable[Mapping[str, Any]]) -> DataFrame:
    """A Spark frame of ``_rejected`` records made on the driver, for ``ctx.reject``.

    Parameters
    ----------
    spark : SparkSession
    records : pandas.DataFrame or iterable of mappings
        Records as :func:`rejection` makes them (or a frame of them); a
        field a record lacks is empty text.

    Returns
    -------
    DataFrame
        One row of :data:`REJECTED_TYPE` per record.
    """
    rows = records.to_dict("records") if isinstance(records, pd.DataFrame) else records
    return spark.createDataFrame([tuple(r.get(f, "") for f in REJECTED_TYPE.fieldNames()) for r in rows],
                                 REJECTED_TYPE)


def with_rejected_field(schema: T.StructType) -> T.StructType:
    """``schema`` plus the nullable ``_rejected`` struct; data fields made nullable."""
    fields = [T.StructField(f.name, f.dataType, nullable=True, metadata=f.metadata) for f in schema.fields]
    return T.StructType([*fields, T.StructField(REJECTED_COLUMN, REJECTED_TYPE, nullable=True)])


def guard_rows(
    records: pd.DataFrame,
    produce: Callable[[pd.Series], Iterable[dict[str, Any]]],
    step: str,
    columns: Sequence[str],
    path_column: str = "path",
    record_column: str | None = None,
    rows_per_frame: int = 1,
) -> Iterator[pd.DataFrame]:
    """Run ``produce`` on each input row inside a ``mapInPandas`` function.

    Each produced dict becomes a row with ``columns`` (plus a null
    ``_rejected``); an exception turns into one rejection row for that
    input, and processing moves on to the next input. Rows are yielded one
    per DataFrame by default, which keeps a task's memory at one record,
    whatever the file size; ``rows_per_frame`` groups up to that many rows of
    one input into a DataFrame, for many small rows (e.g. the scans of a
    volume), where one Arrow batch per row costs more than the rows.
    """
    def frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
        out = pd.DataFrame(rows, columns=list(columns))
        out[REJECTED_COLUMN] = None
        return out

    for _, row in records.iterrows():
        path = str(row[path_column]) if path_column in row else ""
        record = str(row[record_column]) if record_column and record_column in row else ""
        buffer: list[dict[str, Any]] = []
        try:
            for out in produce(row):
                buffer.append({c: out.get(c) for c in columns})
                if len(buffer) >= rows_per_frame:
                    yield frame(buffer)
                    buffer = []
            if buffer:
                yield frame(buffer)
        except Exception as exc:
            rejected = pd.DataFrame([{c: None for c in columns}])
            rejected[REJECTED_COLUMN] = [rejection(path, step, exc, record)]
            yield rejected


def split_rejected(df: DataFrame, on: str | Mapping[str, str] = "path",
                   storage: StorageLevel = StorageLevel.MEMORY_AND_DISK) -> tuple[DataFrame, DataFrame]:
    """Split a step's output into (good rows, rejected records).

    Parameters
    ----------
    df : DataFrame
        Output of a guarded step: data columns plus ``_rejected``.
    on : str or mapping
        Which data column identifies a record, and which ``_rejected`` field
        holds it: a name present in both (default ``"path"``), or a mapping
        such as ``{"subject": "record"}``. Good rows whose key was rejected
        are dropped.

    The input is persisted (``storage``) so the step runs once for both outputs.
    """
    pairs = {on: on} if isinstance(on, str) else dict(on)
    df = df.persist(storage)
    rejected = df.where(F.col(REJECTED_COLUMN).isNotNull()).select(f"{REJECTED_COLUMN}.*")
    good = df.where(F.col(REJECTED_COLUMN).isNull()).drop(REJECTED_COLUMN)
    # ``record`` is text; a key that is not (a long eid) is matched by value, and a
    # rejected record whose text is not of the key's type matches no good row.
    bad_keys = rejected.select(*[compat.try_cast(r, good.schema[d].dataType).alias(d) for d, r in pairs.items()])
    bad_keys = bad_keys.dropna().distinct()
    good = good.join(F.broadcast(bad_keys), on=list(pairs), how="left_anti")
    return good, rejected
