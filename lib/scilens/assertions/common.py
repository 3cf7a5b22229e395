"""What every assertion shares: the base class, the result schema and guarded evaluation.

An assertion's Spark frame (what :meth:`Assertion.evaluate` returns) has its key columns (the table's key
for per-row kinds, the group's columns for per-group ones) with their own types, then ``severity``
(double, > 0: abstentions are dropped), ``detail`` (text) and the nullable ``_rejected`` struct of
:mod:`scilens.core.quarantine`. :class:`~scilens.assertions.checker.Checker` turns the key columns into
one ``map<string,string>`` so that every assertion fits one table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from scilens.core.inputs import InputError
from scilens.core.quarantine import REJECTED_COLUMN, rejection, with_rejected_field

__all__ = [
    "RESULT_SCHEMA",
    "Assertion",
    "Evaluation",
    "guarded_batches",
    "output_schema",
    "present",
    "require_columns",
]

RESULT_SCHEMA = T.StructType([
    T.StructField("assertion", T.StringType(), nullable=False),
    T.StructField("key", T.MapType(T.StringType(), T.StringType(), valueContainsNull=True)),
    T.StructField("severity", T.DoubleType(), nullable=False),
    T.StructField("detail", T.StringType()),
])
"""The one table :class:`~scilens.assertions.checker.Checker` writes: which assertion, the key of the row
or group it judged (column name -> value as text; a null value stays null), its severity (> 0; rows or
groups on which the assertion abstained are absent) and a sentence saying why."""

Evaluation = Callable[[pd.DataFrame], tuple[pd.Series, pd.Series]]
"""A vectorised evaluation: a batch of rows -> (severity per row, detail per row), aligned with the batch."""


class Assertion:
    """A model assertion over a Spark table of a model's inputs and outputs (OMG's API on Spark).

    Subclasses set :attr:`name` (a default; :class:`~scilens.assertions.checker.Checker` may rename it),
    say which columns they read (:meth:`columns`) and build their lazy result (:meth:`evaluate`).
    """

    name: str = "assertion"

    def columns(self) -> list[str]:
        """Columns of the table this assertion reads (checked before anything runs)."""
        raise NotImplementedError

    def key_columns(self, key: Sequence[str]) -> list[str]:
        """Columns keying this assertion's results: the table's ``key`` for per-row kinds.

        Parameters
        ----------
        key : sequence of str
            The table's key columns.

        Returns
        -------
        list of str
            The key columns of the result frame.
        """
        return list(key)

    def validate(self, df: DataFrame) -> None:
        """Refuse ``df`` before running (missing columns, wrong types); raise :class:`InputError`.

        Parameters
        ----------
        df : DataFrame
            The table the assertion will run on.
        """
        require_columns(df, self.columns(), self.name)

    def prepare(self, df: DataFrame) -> None:
        """Driver-side work before evaluation (a learned assertion fits here); nothing by default.

        Parameters
        ----------
        df : DataFrame
            The table the assertion will run on.
        """

    def evaluate(self, df: DataFrame, key: Sequence[str]) -> DataFrame:
        """The assertion's lazy result frame: key columns, ``severity``, ``detail``, ``_rejected``.

        Parameters
        ----------
        df : DataFrame
            The table (already validated and prepared).
        key : sequence of str
            The table's key columns.

        Returns
        -------
        DataFrame
            Rows with severity > 0 and rejected rows (only ``_rejected`` set).
        """
        raise NotImplementedError


def require_columns(df: DataFrame, columns: Sequence[str], assertion: str) -> None:
    """Raise :class:`InputError` naming every column of ``columns`` that ``df`` lacks.

    Parameters
    ----------
    df : DataFrame
        The table.
    columns : sequence of str
        The columns needed.
    assertion : str
        Who needs them (named in the message).
    """
    missing = [c for c in dict.fromkeys(columns) if c not in df.columns]
    if missing:
        raise InputError(f"assertion {assertion!r} needs column(s) {', '.join(map(repr, missing))}, which the "
                         f"table lacks (it has {', '.join(df.columns)})")


def present(df: DataFrame, columns: Sequence[str]) -> Column:
    """Rows where every column of ``columns`` is non-null and, for floating columns, not NaN.

    Parameters
    ----------
    df : DataFrame
        The table.
    columns : sequence of str
        The columns that must hold a value.

    Returns
    -------
    Column
        The boolean condition.
    """
    cond = F.lit(True)
    for c in columns:
        cond = cond & F.col(c).isNotNull()
        if isinstance(df.schema[c].dataType, (T.FloatType, T.DoubleType)):
            cond = cond & ~F.isnan(F.col(c))
    return cond


def output_schema(df: DataFrame, key: Sequence[str]) -> T.StructType:
    """Schema of an assertion's frame: ``key`` columns as typed in ``df``, severity, detail, ``_rejected``.

    Parameters
    ----------
    df : DataFrame
        The table.
    key : sequence of str
        The result's key columns.

    Returns
    -------
    StructType
        The schema, ``_rejected`` included.
    """
    fields = [df.schema[c] for c in key]
    fields += [T.StructField("severity", T.DoubleType()), T.StructField("detail", T.StringType())]
    return with_rejected_field(T.StructType(fields))


def _record(row: pd.DataFrame, key: Sequence[str]) -> str:
    # column by column: a row as one Series would upcast an int key to float next to a float column
    return ", ".join(f"{c}={row[c].iloc[0]}" for c in key)


def _frame(batch: pd.DataFrame, key: Sequence[str], severity: pd.Series, detail: pd.Series) -> pd.DataFrame:
    values = pd.to_numeric(severity, errors="coerce").astype("float64").to_numpy()
    if np.any(values < 0):
        raise ValueError(f"severity must be >= 0, got {float(np.nanmin(values))}")
    keep = values > 0  # NaN and 0 abstain
    out = batch.loc[keep, list(key)].reset_index(drop=True)
    out["severity"] = values[keep]
    out["detail"] = pd.Series(detail).astype(str).to_numpy()[keep] if len(batch) else []
    out[REJECTED_COLUMN] = None
    return out


def guarded_batches(batches: Iterable[pd.DataFrame], evaluate: Evaluation, key: Sequence[str],
                    assertion: str) -> Iterator[pd.DataFrame]:
    """Run a vectorised ``evaluate`` over ``mapInPandas`` batches; a raising row becomes a rejected row.

    A batch is evaluated whole; only if that raises is it evaluated row by row, so that the rows that raise
    (or give a negative severity) become ``_rejected`` rows naming ``assertion`` and the row's key, and the
    others are kept.

    Parameters
    ----------
    batches : iterable of pandas.DataFrame
        The ``mapInPandas`` input.
    evaluate : callable
        Batch -> (severity, detail), aligned with the batch.
    key : sequence of str
        The key columns, carried to the output.
    assertion : str
        The assertion's name (the rejection's step).

    Yields
    ------
    pandas.DataFrame
        Rows of :func:`output_schema`.
    """
    for batch in batches:
        batch = batch.reset_index(drop=True)
        try:
            yield _frame(batch, key, *evaluate(batch))
            continue
        except Exception:  # find the rows that raise, one at a time
            pass
        for i in range(len(batch)):
            row = batch.iloc[[i]].reset_index(drop=True)
            try:
                yield _frame(row, key, *evaluate(row))
            except Exception as exc:  # the row is quarantined, the rest run
                yield rejected_row(key, rejection("", assertion, exc, _record(row, key)), assertion)


def rejected_row(key: Sequence[str], record: dict[str, str], assertion: str) -> pd.DataFrame:
    """One ``_rejected`` row (data columns null) whose message names ``assertion``.

    Parameters
    ----------
    key : sequence of str
        The key columns (left null).
    record : dict
        A :func:`scilens.core.quarantine.rejection` record.
    assertion : str
        The assertion's name.

    Returns
    -------
    pandas.DataFrame
        One row.
    """
    record = dict(record, message=f"assertion {assertion!r} raised on {record['record']}: {record['message']}")
    out = pd.DataFrame([{c: None for c in [*key, "severity", "detail"]}])
    out[REJECTED_COLUMN] = [record]
    return out


def as_list(value: str | Sequence[str]) -> list[str]:
    """``value`` as a list of column names (one name may be given as a string).

    Parameters
    ----------
    value : str or sequence of str
        One or several column names.

    Returns
    -------
    list of str
        The names.
    """
    return [value] if isinstance(value, str) else list(value)


def describe(value: Any) -> str:
    """A value as text in details (floats to 4 significant digits).

    Parameters
    ----------
    value : Any
        A value of the table.

    Returns
    -------
    str
        Its text.
    """
    return f"{value:.4g}" if isinstance(value, (float, np.floating)) else str(value)
