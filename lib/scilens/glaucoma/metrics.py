"""ROC, AUC and accuracy with bootstrap confidence intervals (dissertation Ch. 3 §3.2, "Statistical analysis").

Plain functions on numpy arrays. :func:`bootstrap_ci` resamples with replacement
``resamples`` times (default 1000, as the paper) and reports the percentile interval. By
default it resamples *subjects*, not eyes: both eyes of a subject are in the same split and
are not independent, so resampling eyes would understate the interval; ``unit: eye`` gives
the eye-level bootstrap. Resamples with a single class (no AUC) are dropped and counted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_curve

from scilens.core.config import Config, field

__all__ = ["BootstrapConfig", "Interval", "accuracy_ci", "auc_ci", "bootstrap_ci", "roc_auc", "roc_points",
           "youden_threshold"]


@dataclass
class BootstrapConfig(Config):
    """Bootstrap confidence intervals."""

    resamples: int = field(1000, "Bootstrap resamples (paper: 1000).", min=10)
    confidence: float = field(0.95, "Coverage of the percentile interval.", min=0.5, max=0.999)
    unit: str = field("subject", "What is resampled: subject (both eyes together) or eye.",
                      choices=("subject", "eye"))
    seed: int = field(0, "Seed of the resampling.")


@dataclass
class Interval:
    """An estimate with its bootstrap interval."""

    estimate: float
    low: float
    high: float
    resamples: int
    dropped: int = 0

    def as_dict(self, name: str) -> dict[str, float]:
        """``{name: estimate, name_ci_low: low, name_ci_high: high}``."""
        return {name: self.estimate, f"{name}_ci_low": self.low, f"{name}_ci_high": self.high}


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve, as the Mann-Whitney U of the scores (ties count half); NaN with one class.

    Equal to ``sklearn.metrics.roc_auc_score`` and ~50x faster, which 1000 bootstrap resamples want.
    """
    y = np.asarray(y).astype(bool)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(score, dtype=float))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_points(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) of the ROC curve."""
    fpr, tpr, _ = roc_curve(np.asarray(y), np.asarray(score))
    return fpr, tpr


def youden_threshold(y: np.ndarray, score: np.ndarray) -> float:
    """The score threshold maximising sensitivity + specificity - 1 (Youden's J)."""
    fpr, tpr, thresholds = roc_curve(np.asarray(y), np.asarray(score))
    best = int(np.argmax(tpr - fpr))
    return float(min(thresholds[best], 1.0))


def bootstrap_ci(statistic: Callable[[np.ndarray], float], n: int, groups: np.ndarray | None,
                 config: BootstrapConfig) -> Interval:
    """Percentile bootstrap interval of ``statistic(rows)`` over ``n`` rows.

    Parameters
    ----------
    statistic
        Takes an index array into the rows and returns a number (NaN if undefined).
    n
        Number of rows.
    groups
        Subject of each row; with ``config.unit == "subject"`` whole subjects are resampled.
    config
        Resamples, confidence, unit, seed.
    """
    rng = np.random.default_rng(config.seed)
    everything = np.arange(n)
    estimate = float(statistic(everything))
    if config.unit == "subject" and groups is not None:
        _, code = np.unique(np.asarray(groups), return_inverse=True)
        order = np.argsort(code, kind="stable")
        starts = np.searchsorted(code[order], np.arange(code.max() + 1))
        sizes = np.bincount(code)
        n_units = len(sizes)
    else:
        order, starts, sizes, n_units = everything, everything, np.ones(n, int), n
    values = np.empty(config.resamples)
    for r in range(config.resamples):
        picked = rng.integers(0, n_units, n_units)
        rows = np.concatenate([order[starts[g]:starts[g] + sizes[g]] for g in picked]) if n_units < n \
            else order[picked]
        values[r] = statistic(rows)
    kept = values[~np.isnan(values)]
    alpha = (1 - config.confidence) / 2
    low, high = (np.quantile(kept, [alpha, 1 - alpha]) if len(kept) else (np.nan, np.nan))
    return Interval(estimate, float(low), float(high), len(kept), config.resamples - len(kept))


def auc_ci(y: np.ndarray, score: np.ndarray, groups: np.ndarray | None, config: BootstrapConfig) -> Interval:
    """ROC AUC with its bootstrap interval."""
    y, score = np.asarray(y), np.asarray(score)

    return bootstrap_ci(lambda rows: roc_auc(y[rows], score[rows]), len(y), groups, config)


def accuracy_ci(correct: np.ndarray, groups: np.ndarray | None, config: BootstrapConfig) -> Interval:
    """Share of correct predictions with its bootstrap interval."""
    correct = np.asarray(correct, dtype=float)
    return bootstrap_ci(lambda rows: float(correct[rows].mean()), len(correct), groups, config)
