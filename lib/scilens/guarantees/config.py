"""The configs of the guarantees jobs: ``estimate`` (a mean within +-error) and ``select`` (SUPG selection)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from scilens.core.config import ConfigError, field
from scilens.core.job import JobConfig
from scilens.guarantees.aggregation import METHODS
from scilens.guarantees.selection import BOUNDS, SELECT_METHODS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from scilens.guarantees.stages import ModelOracle

ORACLE_OUTPUTS = ("flag", "probability")
"""What a model oracle returns per row: a 0/1 flag, or the probability of its class."""

__all__ = ["ORACLE_OUTPUTS", "EstimateConfig", "SelectConfig"]


@dataclass
class _OracleTable(JobConfig):
    """What both jobs read: a table with ``id``, a proxy column and an oracle."""

    proxy: str = field("proxy", "Column of cheap scores correlated with the oracle (doubles; selection: in [0, 1], "
                       "higher meaning more likely positive). A null proxy value is an error naming the row's id.")
    oracle: str | None = field(None, "Column holding the oracle's value of each row: read only for the sampled rows "
                               "(fetched from the table by id) and counted. Give it or oracle_model.")
    oracle_model: str | None = field(None, "A saved Keras classifier (.keras, readable from every executor) as the "
                                     "oracle: run with predict_batch_udf on the sampled rows' images only, on the "
                                     "executors, and counted like a column. Give it or oracle.")
    image: str = field("image", "oracle_model: the image column (a scilens tensor, or a flattened array of numbers "
                       "with image_shape).")
    image_shape: list[int] | None = field(None, "oracle_model: one image's shape when image is a flattened array, "
                                          "e.g. [28, 28, 1]; ignored for tensor columns.",
                                          check=lambda s: all(n > 0 for n in s), check_doc="positive lengths")
    oracle_class: int = field(1, "oracle_model: the class the oracle is about (a single sigmoid unit: 1 is p, "
                              "0 is 1 - p).", min=0, max=1_000_000)
    oracle_output: str = field("flag", "oracle_model: flag (1 where the model says oracle_class, else 0) or "
                               "probability (the probability of oracle_class; estimate only: select needs 0/1).",
                               choices=ORACLE_OUTPUTS)
    oracle_threshold: float | None = field(None, "oracle_model, flag: null means the model's predicted class "
                                           "(argmax; a single sigmoid unit: p > 0.5); a number t means the "
                                           "probability of oracle_class >= t.",
                                           check=lambda t: 0.0 <= t <= 1.0, check_doc="in [0, 1]")
    where: str | None = field(None, "Spark SQL condition choosing the population (e.g. split = 'test'); null: every "
                              "row.")
    seed: int = field(0, "Seed of every random choice (the same seed draws the same sample).", min=0)

    def oracle_source(self, table: DataFrame) -> str | ModelOracle:
        """The oracle column, or the model oracle over ``table`` (checked: model, image column, class).

        Parameters
        ----------
        table : pyspark.sql.DataFrame
            The population.

        Returns
        -------
        str or ModelOracle
            The column, or the model.

        Raises
        ------
        ConfigError
            Neither or both of oracle and oracle_model given.
        scilens.core.inputs.InputError
            The model file is missing (named) or does not fit the image column.
        """
        from scilens.guarantees.stages import ModelOracle

        if self.oracle_model is not None and self.oracle is not None:
            raise ConfigError(f"give oracle ({self.oracle}) or oracle_model ({self.oracle_model}), not both")
        if self.oracle_model is not None:
            return ModelOracle(table, self.oracle_model, self.image, self.image_shape, self.oracle_class,
                               self.oracle_output, self.oracle_threshold)
        if self.oracle is None:
            raise ConfigError("oracle: give the column holding the oracle's values (e.g. oracle=label), or a model "
                              "as oracle_model")
        return self.oracle


@dataclass
class EstimateConfig(_OracleTable):
    """Config of ``scilens estimate``."""

    method: str = field("blazeit++", "uniform (CLT, asymptotic), ebs (empirical Bernstein stopping), ebs-cv (ebs on "
                        "control-variate values), blazeit++ (control variate, Bennett: a finite-sample guarantee) "
                        "or abae (proxy strata, CLT).", choices=METHODS)
    error: float = field(0.03, "Target half-width of the interval, in the oracle's units (relative: a fraction "
                         "of the mean, below 1).", check=lambda e: 0.0 < e < 1e9, check_doc="> 0")
    relative: bool = field(False, "error is a fraction of the mean: stop once the interval proves |estimate - "
                           "mean| <= error |mean| (it excludes 0; a mean near 0 may need every row).")
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
