"""Per-row assertions: a vectorised predicate or score over some columns of each row (OMG's ``PerRowAssertion``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame

from scilens.assertions.common import Assertion, as_list, guarded_batches, output_schema
from scilens.core.config import Config, field

__all__ = ["PerRowAssertion", "PerRowConfig"]


@dataclass
class PerRowConfig(Config):
    """What a per-row assertion reads and how its function's result becomes a severity."""

    columns: list[str] = field(doc="Columns passed to the function, one pandas Series each, in this order.",
                               check=lambda v: len(v) > 0, check_doc="at least one column")
    kind: str = field("predicate", "'predicate': a boolean Series, True = violation (severity 1); 'score': a "
                      "numeric Series used as the severity (0 or NaN abstain, negative is an error).",
                      choices=("predicate", "score"))
    description: str = field("", "Text of each flagged row's detail (default: the function's name).")


class PerRowAssertion(Assertion):
    """A vectorised per-row check: ``fn(*series) -> Series`` over batches of rows, as in a ``pandas_udf``.

    Parameters
    ----------
    fn : callable
        Takes one pandas Series per column of ``columns`` (nulls as NaN/None) and returns a Series of the same
        length: booleans (``kind="predicate"``) or non-negative scores (``kind="score"``).
    columns : str or sequence of str
        The columns ``fn`` reads.
    kind : {"predicate", "score"}
        See :class:`PerRowConfig`.
    description : str
        The flagged rows' detail.
    name : str, optional
        The assertion's name (default ``per-row <fn name>``).

    Notes
    -----
    A batch is evaluated whole; a batch on which ``fn`` raises is re-run row by row, and the rows that raise
    (or score below 0) become rejected rows naming the assertion, while the others are kept.
    """

    def __init__(self, fn: Callable[..., pd.Series], columns: str | Sequence[str], kind: str = "predicate",
                 description: str = "", name: str | None = None) -> None:
        self.fn = fn
        label = getattr(fn, "__name__", "function")
        self.config = PerRowConfig(columns=as_list(columns), kind=kind, description=description or label)
        self.name = name or f"per-row {label}"

    def columns(self) -> list[str]:
        """The columns ``fn`` reads."""
        return list(self.config.columns)

    def evaluate(self, df: DataFrame, key: Sequence[str]) -> DataFrame:
        """Rows where the predicate holds (severity 1) or the score is positive.

        Parameters
        ----------
        df : DataFrame
            The table.
        key : sequence of str
            The table's key columns.

        Returns
        -------
        DataFrame
            See :meth:`Assertion.evaluate`.
        """
        fn, cfg, name, key = self.fn, self.config, self.name, list(key)

        def evaluate(batch: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
            result = pd.Series(fn(*[batch[c] for c in cfg.columns]))
            if len(result) != len(batch):
                raise ValueError(f"the function returned {len(result)} values for {len(batch)} rows")
            if cfg.kind == "predicate":
                severity = result.fillna(False).astype(bool).astype("float64")
                detail = pd.Series(np.full(len(batch), cfg.description, dtype=object))
            else:
                severity = pd.to_numeric(result, errors="raise").astype("float64")
                detail = cfg.description + ": score " + severity.map("{:.4g}".format)
            return severity.reset_index(drop=True), detail.reset_index(drop=True)

        def run(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
            yield from guarded_batches(batches, evaluate, key, name)

        needed = list(dict.fromkeys([*key, *cfg.columns]))
        return df.select(*needed).mapInPandas(run, output_schema(df, key))
