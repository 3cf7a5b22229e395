"""The configs of the guarantees jobs: ``estimate`` (a mean within +-error) and ``select`` (SUPG selection)."""

from __future__ import annotations

from dataclasses import dataclass

from scilens.core.config import ConfigError, field
from scilens.core.job import JobConfig
from scilens.guarantees.aggregation import METHODS
from scilens.guarantees.selection import BOUNDS, SELECT_METHODS

__all__ = ["EstimateConfig", "SelectConfig"]


@dataclass
class _OracleTable(JobConfig):
    """What both jobs read: a table with ``id``, a proxy column and an oracle."""

    proxy: str = field("proxy", "Column of cheap scores correlated with the oracle (doubles; selection: in [0, 1], "
                       "higher meaning more likely positive). A null proxy value is an error naming the row's id.")
    oracle: str | None = field(None, "Column holding the oracle's value of each row: read only for the sampled rows "
                               "(fetched from the table by id) and counted. Required unless oracle_model is given.")
    oracle_model: str | None = field(None, "A model as the oracle (run on the sampled rows only): not yet supported; "
                                     "give an oracle column (e.g. the model's predictions written by its job).")
    where: str | None = field(None, "Spark SQL condition choosing the population (e.g. split = 'test'); null: every "
                              "row.")
    seed: int = field(0, "Seed of every random choice (the same seed draws the same sample).", min=0)

    def oracle_source(self) -> str:
        """The oracle column, or a :class:`ConfigError` saying what to give instead.

        Returns
        -------
        str
            The column.
        """
        if self.oracle_model is not None:
            raise ConfigError("oracle_model: a model as the oracle is not supported yet (it is for later); run the "
                              "model's job to write its predictions and give that column as oracle")
        if self.oracle is None:
            raise ConfigError("oracle: give the column holding the oracle's values (e.g. oracle=label)")
        return self.oracle


@dataclass
class EstimateConfig(_OracleTable):
    """Config of ``scilens estimate``."""

    method: str = field("blazeit++", "uniform (CLT, asymptotic), ebs (empirical Bernstein stopping), ebs-cv (ebs on "
                        "control-variate values), blazeit++ (control variate, Bennett: a finite-sample guarantee) "
                        "or abae (proxy strata, CLT).", choices=METHODS)
    error: float = field(0.03, "Target half-width of the interval, in the oracle's units.",
                         check=lambda e: 0.0 < e < 1e9, check_doc="> 0")
    delta: float = field(0.05, "Failure probability: the interval holds the mean with probability 1 - delta.",
                         check=lambda d: 0.0 < d < 1.0, check_doc="in (0, 1)")
    value_low: float = field(0.0, "Smallest value the oracle can return (EBS and Bennett need the range).")
    value_high: float = field(1.0, "Largest value the oracle can return.")
    pilot: int = field(1000, "blazeit++: pilot rows (control-variate coefficient and variance bound).", min=2,
                       max=10_000_000)
    strata: int = field(5, "abae: proxy strata.", min=1, max=1000)
    first_stage: int = field(100, "abae: first-stage rows per stratum.", min=2, max=10_000_000)


@dataclass
class SelectConfig(_OracleTable):
    """Config of ``scilens select``."""

    target: str = field("recall", "What is guaranteed: recall (select_recall) or precision (select_precision).",
                        choices=("recall", "precision"))
    target_value: float = field(0.9, "The recall or precision to reach with probability 1 - delta.",
                                check=lambda t: 0.0 < t <= 1.0, check_doc="in (0, 1]")
    delta: float = field(0.05, "Failure probability.", check=lambda d: 0.0 < d < 1.0, check_doc="in (0, 1)")
    budget: int = field(1000, "Importance draws (with replacement): oracle calls are at most this.", min=2,
                        max=100_000_000)
    method: str = field("supg", "supg, or supg++ (the top 3 E[P] |D| proxy scores set to 1 before sampling).",
                        choices=SELECT_METHODS)
    bound: str = field("clt", "clt (SUPG's normal approximation) or conservative (empirical Bernstein: valid at any "
                       "budget, wider).", choices=BOUNDS)
