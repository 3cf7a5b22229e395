"""The expensive oracle: a counted, budgeted callable on a pandas frame of sampled rows."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

__all__ = ["BudgetExceeded", "CachedLabels", "Oracle"]


class BudgetExceeded(RuntimeError):
    """Raised before an oracle call that would take its row count past the budget."""


class Oracle:
    """Counted oracle: ``oracle(rows)`` returns one value per row of ``rows`` and counts the rows.

    Parameters
    ----------
    source : str or callable
        A column name of the table (evaluation against known labels) or a function from a pandas frame
        of rows to one value per row (e.g. a model's prediction).
    budget : int, optional
        Most rows it may ever evaluate; a call that would exceed it raises :class:`BudgetExceeded`
        before evaluating anything.

    Attributes
    ----------
    calls : int
        Rows evaluated so far.
    """

    def __init__(self, source: str | Callable[[pd.DataFrame], object], budget: int | None = None) -> None:
        self.source = source
        self.budget = budget
        self.calls = 0

    def __call__(self, rows: pd.DataFrame) -> np.ndarray:
        """Evaluate the oracle on ``rows`` (counted).

        Parameters
        ----------
        rows : pandas.DataFrame
            The sampled rows.

        Returns
        -------
        numpy.ndarray
            One float per row.
        """
        if self.budget is not None and self.calls + len(rows) > self.budget:
            raise BudgetExceeded(f"oracle budget {self.budget} exceeded: {self.calls} rows evaluated, "
                                 f"{len(rows)} more asked for")
        self.calls += len(rows)
        if isinstance(self.source, str):
            values = rows[self.source].to_numpy()
        else:
            values = np.asarray(self.source(rows))
        out = np.asarray(values, dtype=np.float64).reshape(-1)
        if len(out) != len(rows):
            raise ValueError(f"oracle returned {len(out)} values for {len(rows)} rows")
        return out


class CachedLabels:
    """Oracle values of the rows evaluated so far (by row position), calling the oracle only on new rows.

    Parameters
    ----------
    data : pandas.DataFrame
        The population.
    oracle : callable
        Called once per new row.
    """

    def __init__(self, data: pd.DataFrame, oracle: Callable[[pd.DataFrame], np.ndarray]) -> None:
        self.data = data
        self.oracle = oracle
        self.values = np.full(len(data), np.nan)
        self.known = np.zeros(len(data), dtype=bool)

    def get(self, positions: np.ndarray) -> np.ndarray:
        """Oracle values at row ``positions`` (evaluating the unseen ones, each once).

        Parameters
        ----------
        positions : numpy.ndarray
            Integer row positions, repeats allowed.

        Returns
        -------
        numpy.ndarray
            Values in the order of ``positions``.
        """
        positions = np.asarray(positions, dtype=np.int64)
        new = np.unique(positions[~self.known[positions]])
        if len(new):
            self.values[new] = self.oracle(self.data.iloc[new])
            self.known[new] = True
        return self.values[positions]

    @property
    def sampled(self) -> np.ndarray:
        """Row positions evaluated so far, ascending."""
        return np.flatnonzero(self.known)
