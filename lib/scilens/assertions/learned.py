"""Learned assertions (Fixy's learned observation assertions): how unlikely a row is under trusted rows.

Per class (the value of ``by``), a product-Gaussian KDE (:mod:`scilens.assertions.density`; Scott's rule by
default, Silverman's on request) is fitted on the driver to the named features of at most ``max_sample``
trusted rows of that class (a seeded sample; all of them when there are fewer). Every row is then scored on
the executors by its class's density: severity ``max(0, log f_max - log f(x))``, where ``log f_max`` is the
largest log density over the class's trusted sample, so the severity grows strictly as the row becomes less
likely and is 0 only for rows as typical as the most typical trusted row; the detail gives the log density
and the calibrated tail probability (the share of the class's trusted sample no more likely than the row).

Where Fixy multiplies independent one-feature densities, the product kernel here models the features
jointly (with a diagonal bandwidth). Rows with a null class or a null (or NaN) feature abstain.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from scilens.assertions.common import Assertion, as_list, guarded_batches, output_schema, present
from scilens.assertions.density import ClassDensity, fit_density
from scilens.core.config import Config, field
from scilens.core.inputs import InputError

__all__ = ["LearnedAssertion", "LearnedConfig"]


@dataclass
class LearnedConfig(Config):
    """Class-conditional densities over features of trusted rows."""

    by: str = field(doc="The class column (a model's predicted class or a label): one density per value.")
    features: list[str] = field(doc="Numeric feature columns (confidence, distance to the class centroid, ...).",
                                check=lambda v: len(v) > 0, check_doc="at least one column")
    trusted: str | None = field(None, "Boolean column marking trusted rows (none: every row is trusted).")
    bandwidth: str = field("scott", "Bandwidth rule: Scott's or Silverman's normal-reference rule.",
                           choices=("scott", "silverman"))
    min_trusted: int = field(20, "Fewest trusted rows a class may have; fewer is refused before running.",
                             min=2, max=10**9)
    max_sample: int = field(2000, "Most trusted rows per class the driver fits on (a seeded sample).",
                            min=2, max=10**6)
    seed: int = field(0, "Seed of the trusted sample.", min=0)


class LearnedAssertion(Assertion):
    """Scores every row by how unlikely its features are under its class's trusted rows (Fixy-style).

    Parameters
    ----------
    by : str
        The class column.
    features : str or sequence of str
        Numeric feature columns.
    trusted : str, optional
        Boolean column of trusted rows (default: all rows).
    bandwidth : {"scott", "silverman"}
        Bandwidth rule.
    min_trusted, max_sample, seed : int
        See :class:`LearnedConfig`.
    name : str, optional
        The assertion's name.
    """

    def __init__(self, by: str, features: str | Sequence[str], trusted: str | None = None,
                 bandwidth: str = "scott", min_trusted: int = 20, max_sample: int = 2000, seed: int = 0,
                 name: str | None = None) -> None:
        self.config = LearnedConfig(by=by, features=as_list(features), trusted=trusted, bandwidth=bandwidth,
                                    min_trusted=min_trusted, max_sample=max_sample, seed=seed)
        self.name = name or f"learned density of {', '.join(self.config.features)} by {by}"
        self.densities: dict[Any, ClassDensity] = {}

    def columns(self) -> list[str]:
        """The class, feature and trusted columns."""
        cfg = self.config
        return [cfg.by, *cfg.features, *([cfg.trusted] if cfg.trusted else [])]

    def validate(self, df: DataFrame) -> None:
        """Refuse missing columns, non-numeric features and a trusted column that is not boolean.

        Parameters
        ----------
        df : DataFrame
            The table.
        """
        super().validate(df)
        cfg = self.config
        for c in cfg.features:
            if not isinstance(df.schema[c].dataType, T.NumericType):
                raise InputError(f"assertion {self.name!r}: feature {c!r} is "
                                 f"{df.schema[c].dataType.simpleString()}, not numeric")
        if cfg.trusted and not isinstance(df.schema[cfg.trusted].dataType, T.BooleanType):
            raise InputError(f"assertion {self.name!r}: trusted column {cfg.trusted!r} is "
                             f"{df.schema[cfg.trusted].dataType.simpleString()}, not boolean")

    def _trusted(self, df: DataFrame) -> Column:
        cfg = self.config
        usable = present(df, [cfg.by, *cfg.features])
        return usable & F.col(cfg.trusted).eqNullSafe(True) if cfg.trusted else usable

    def prepare(self, df: DataFrame) -> None:
        """Count trusted rows per class (refusing classes with too few), sample them, fit the densities.

        Two Spark actions: the counts per class and the bounded sample; nothing else reaches the driver.

        Parameters
        ----------
        df : DataFrame
            The table.
        """
        cfg = self.config
        trusted = self._trusted(df)
        counts = {r[0]: int(r[1]) for r in df.where(F.col(cfg.by).isNotNull()).groupBy(cfg.by)
                  .agg(F.count(F.when(trusted, 1)).alias("n")).collect()}
        few = {c: n for c, n in counts.items() if n < cfg.min_trusted}
        if few:
            listed = ", ".join(f"class {c!r} has {n}" for c, n in sorted(few.items(), key=lambda kv: str(kv[0])))
            raise InputError(f"assertion {self.name!r} needs at least {cfg.min_trusted} trusted rows per class "
                             f"of {cfg.by!r}: {listed}")
        # Bernoulli fractions a little above max_sample / n, trimmed below on the driver.
        fractions = {c: min(1.0, 1.2 * cfg.max_sample / n + 1e-3) for c, n in counts.items()}
        big = [c for c, f in fractions.items() if f < 1.0]
        keep = trusted
        if big:
            frac = F.element_at(F.create_map(*[F.lit(v) for c in big for v in (c, fractions[c])]), F.col(cfg.by))
            keep = keep & (frac.isNull() | (F.rand(cfg.seed) < frac))
        columns = [F.col(c).cast("double").alias(c) for c in cfg.features]
        sample: pd.DataFrame = df.where(keep).select(cfg.by, *columns).toPandas()
        rng = np.random.default_rng(cfg.seed)
        self.densities = {}
        for c, rows in sample.groupby(cfg.by, sort=False):
            x = rows[cfg.features].to_numpy(dtype="float64")
            if len(x) > cfg.max_sample:
                x = x[np.sort(rng.choice(len(x), cfg.max_sample, replace=False))]
            self.densities[c] = fit_density(x, cfg.bandwidth)

    def evaluate(self, df: DataFrame, key: Sequence[str]) -> DataFrame:
        """Every usable row scored by its class's density, on the executors (the densities travel in the task).

        Parameters
        ----------
        df : DataFrame
            The table (after :meth:`prepare`).
        key : sequence of str
            The table's key columns.

        Returns
        -------
        DataFrame
            See :meth:`Assertion.evaluate`.
        """
        cfg, densities, key = self.config, self.densities, list(key)

        def evaluate(batch: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
            severity = np.zeros(len(batch))
            detail = np.full(len(batch), "", dtype=object)
            for c, idx in batch.groupby(cfg.by, sort=False).indices.items():
                sev, log_f, tail = densities[c].severity(batch[cfg.features].to_numpy(dtype="float64")[idx])
                severity[idx] = sev
                detail[idx] = [f"class {c}: log density {lf:.4g}, tail probability {t:.4g}"
                               for lf, t in zip(log_f, tail)]
            return pd.Series(severity), pd.Series(detail)

        def run(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
            yield from guarded_batches(batches, evaluate, key, self_name)

        self_name = self.name
        needed = list(dict.fromkeys([*key, cfg.by, *cfg.features]))
        rows = df.where(present(df, [cfg.by, *cfg.features])).select(*needed)
        return rows.mapInPandas(run, output_schema(df, key))
