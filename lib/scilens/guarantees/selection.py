"""Selection with guarantees: SUPG and SUPG++ (Kang et al., VLDB 2020; the seed's section 5.3, Algorithm 2).

Rows are ranked by proxy (descending, ties by position). ``budget`` rows are drawn *with* replacement
(as in SUPG: importance sampling needs independent draws) from ``q(x) = 0.9 sqrt(P(x)) / sum sqrt(P) +
0.1 / |D|`` (SUPG's defensive mixture with 10% uniform); the oracle is called once per distinct drawn
row, so oracle calls never exceed ``budget``. Each draw carries the importance mass ``m = (1/|D|) / q``,
and means over the population are estimated by the self-normalised sums of ``label * m``.

``select_recall`` (SUPG's IS-CI-R): the empirical cut ``tau`` reaching ``target`` of the sampled
positive mass; an upper bound of the mass above it and a lower bound of the mass below it (each at
``delta / 2``) give the corrected target ``gamma = UB(Z1) / (UB(Z1) + LB(Z2))`` (seed eq. 7), whose cut is
returned. ``select_precision`` (SUPG's IS-CI-P, one stage): at every 100th sampled rank, a lower bound at
``delta / T`` (``T`` candidate cuts, a union bound) of the precision of the rows above it, estimated by
the draws falling there reweighted to the prefix; the deepest cut whose bound reaches ``target``.

``bound="clt"`` is SUPG's normal approximation (not a finite-sample guarantee: it fails more often than
``delta`` at small budgets); ``bound="conservative"`` is the one-sided empirical Bernstein bound of
Maurer and Pontil (2009, Theorem 4) with the range given by the largest possible importance mass,
valid for any budget and much wider. ``method="supg++"`` first sets the top ``ceil(3 E[P] |D|)`` proxy
scores to 1 (seed Algorithm 2) before computing ``q``; the ranking is unchanged.

The selection is the proxy cut (``proxy >= threshold``, a filter a Spark job can apply) plus every
sampled positive.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from scilens.guarantees import bounds
from scilens.guarantees.oracle import CachedLabels

__all__ = ["BOUNDS", "SELECT_METHODS", "Selection", "select_precision", "select_recall"]

SELECT_METHODS = ("supg", "supg++")
BOUNDS = ("clt", "conservative")
_MIXING = 0.1
_PRECISION_START = 100
_PRECISION_STEP = 100


@dataclass
class Selection:
    """The answer of :func:`select_recall` / :func:`select_precision`.

    Attributes
    ----------
    ids : numpy.ndarray
        Selected ``id`` values, ascending: rows with ``proxy >= threshold`` and the sampled positives.
    threshold : float
        The proxy cut (``inf`` when no row is selected by the cut).
    oracle_calls : int
        Rows the oracle evaluated.
    method, bound : str
        What was run.
    sampled_ids : numpy.ndarray
        ``id`` of every row the oracle evaluated.
    drawn_ids : numpy.ndarray
        ``id`` of every draw in the order drawn (``budget`` of them, repeats included: the draws are
        with replacement).
    """

    ids: np.ndarray
    threshold: float
    oracle_calls: int
    method: str
    bound: str
    sampled_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    drawn_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


@dataclass
class _Sample:
    """Importance sample: ranks (ascending), masses, labels; the ranking and mixture over the population."""

    order: np.ndarray
    q: np.ndarray
    ranks: np.ndarray
    labels: np.ndarray
    masses: np.ndarray
    drawn: np.ndarray


def sampling_weights(scores: np.ndarray, method: str) -> np.ndarray:
    """SUPG's sampling distribution over proxy-ranked rows (scores sorted descending).

    Parameters
    ----------
    scores : numpy.ndarray
        Proxy scores in [0, 1], sorted descending.
    method : str
        ``"supg"``, or ``"supg++"`` to set the top ``ceil(3 mean(scores) n)`` scores to 1 first.

    Returns
    -------
    numpy.ndarray
        ``q``: ``0.9 sqrt(P) / sum sqrt(P) + 0.1 / n``, summing to 1.
    """
    scores = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    n = len(scores)
    if method == "supg++":
        top = min(n, math.ceil(3.0 * float(scores.mean()) * n))
        scores = scores.copy()
        scores[:top] = 1.0
    root = np.sqrt(scores)
    if root.sum() <= 0.0:
        return np.full(n, 1.0 / n)
    return (1.0 - _MIXING) * root / root.sum() + _MIXING / n


def _draw(data: pd.DataFrame, proxy: str | np.ndarray, cache: CachedLabels, budget: int, method: str,
          rng: np.random.Generator) -> _Sample:
    scores = np.asarray(data[proxy] if isinstance(proxy, str) else proxy, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    q = sampling_weights(scores[order], method)
    drawn = rng.choice(len(q), size=budget, replace=True, p=q)
    ranks = np.sort(drawn)
    labels = cache.get(order[ranks])
    return _Sample(order, q, ranks, labels, (1.0 / len(q)) / q[ranks], drawn)


def _bounds(values: np.ndarray, value_range: float, delta: float, bound: str) -> tuple[float, float]:
    if bound == "clt":
        return bounds.clt_mean_bounds(values, delta)
    return bounds.conservative_mean_bounds(values, value_range, delta)


def _first_reaching(cumulative: np.ndarray, level: float) -> int:
    """First index where ``cumulative >= level`` (the last one if none does)."""
    return min(int(np.searchsorted(cumulative, level * (1.0 - 1e-12), side="left")), len(cumulative) - 1)


def _recall_cut(sample: _Sample, target: float, delta: float, bound: str) -> int:
    """How many top-ranked rows SUPG's IS-CI-R selects."""
    n = len(sample.q)
    mass = sample.labels * sample.masses
    total = float(mass.sum())
    if total <= 0.0:
        return n  # no positive sampled: nothing to estimate from, select everything
    cumulative = np.cumsum(mass)
    tau = _first_reaching(cumulative, target * total)
    above = sample.ranks <= sample.ranks[tau]
    value_range = float((1.0 / n) / sample.q.min())
    _, upper = _bounds(mass * above, value_range, delta / 2.0, bound)
    lower, _ = _bounds(mass * ~above, value_range, delta / 2.0, bound)
    lower = max(lower, 0.0)
    if upper <= 0.0 or upper / (upper + lower) >= 1.0:
        return n
    gamma = upper / (upper + lower)
    return int(sample.ranks[_first_reaching(cumulative, gamma * total)]) + 1


def _precision_cut(sample: _Sample, target: float, delta: float, bound: str) -> int:
    """How many top-ranked rows SUPG's IS-CI-P (one stage) selects."""
    candidates = range(_PRECISION_START, len(sample.ranks), _PRECISION_STEP)
    if not candidates:
        return 0
    cumulative_q = np.cumsum(sample.q)
    failure = delta / len(candidates)
    best = 0
    for s_idx in candidates:
        rank = int(sample.ranks[s_idx])
        inside = int(np.searchsorted(sample.ranks, rank, side="right"))
        # draws inside the prefix follow q restricted to it; reweight them to the prefix's uniform mass
        masses = (cumulative_q[rank] / (rank + 1)) / sample.q[sample.ranks[:inside]]
        value_range = float(cumulative_q[rank] / (rank + 1) / sample.q[: rank + 1].min())
        lower, _ = _bounds(sample.labels[:inside] * masses, value_range, failure, bound)
        if lower >= target:
            best = rank + 1
    return best


def _select(data: pd.DataFrame, proxy: str | np.ndarray, oracle: Callable[[pd.DataFrame], np.ndarray],
            target: float, delta: float, budget: int, method: str, bound: str, seed: int,
            cut: Callable[[_Sample, float, float, str], int]) -> Selection:
    if method not in SELECT_METHODS or bound not in BOUNDS:
        raise ValueError(f"method must be one of {SELECT_METHODS} and bound one of {BOUNDS}, "
                         f"got {method!r}, {bound!r}")
    if not 0.0 < target <= 1.0 or not 0.0 < delta < 1.0 or budget < 2:
        raise ValueError(f"need 0 < target <= 1, 0 < delta < 1, budget >= 2; got {target}, {delta}, {budget}")
    cache = CachedLabels(data, oracle)
    sample = _draw(data, proxy, cache, budget, method, np.random.default_rng(seed))
    n_cut = cut(sample, target, delta, bound)
    scores = np.asarray(data[proxy] if isinstance(proxy, str) else proxy, dtype=np.float64)
    threshold = float(scores[sample.order[n_cut - 1]]) if n_cut > 0 else math.inf
    ids = data["id"].to_numpy()
    positives = cache.sampled[cache.values[cache.sampled] > 0]
    chosen = np.union1d(ids[scores >= threshold], ids[positives])
    return Selection(chosen, threshold, len(cache.sampled), method, bound, ids[cache.sampled],
                     ids[sample.order[sample.drawn]])


def select_recall(data: pd.DataFrame, proxy: str | np.ndarray, oracle: Callable[[pd.DataFrame], np.ndarray],
                  target: float, delta: float, budget: int, method: str = "supg", bound: str = "clt",
                  seed: int = 0) -> Selection:
    """Rows reaching recall ``target`` with probability ``1 - delta``, precision as high as the sample allows.

    Parameters
    ----------
    data : pandas.DataFrame
        The population, with an ``id`` column.
    proxy : str or numpy.ndarray
        The proxy column's name (or values): a score in [0, 1], higher meaning more likely positive.
    oracle : callable
        Called on a frame of sampled rows, returns 0/1 per row; each row evaluated at most once.
    target : float
        Recall target.
    delta : float
        Failure probability.
    budget : int
        Importance draws (oracle calls <= budget).
    method : str
        ``"supg"`` or ``"supg++"``.
    bound : str
        ``"clt"`` (SUPG's normal approximation) or ``"conservative"`` (empirical Bernstein).
    seed : int
        Seed of every random choice.

    Returns
    -------
    Selection
        The selected ids, the proxy threshold, oracle calls and the sampled ids.
    """
    return _select(data, proxy, oracle, target, delta, budget, method, bound, seed, _recall_cut)


def select_precision(data: pd.DataFrame, proxy: str | np.ndarray, oracle: Callable[[pd.DataFrame], np.ndarray],
                     target: float, delta: float, budget: int, method: str = "supg", bound: str = "clt",
                     seed: int = 0) -> Selection:
    """Rows of precision at least ``target`` with probability ``1 - delta``, recall as high as the sample allows.

    Parameters
    ----------
    data : pandas.DataFrame
        The population, with an ``id`` column.
    proxy : str or numpy.ndarray
        The proxy column's name (or values) in [0, 1].
    oracle : callable
        Called on a frame of sampled rows, returns 0/1 per row; each row evaluated at most once.
    target : float
        Precision target.
    delta : float
        Failure probability (split over the candidate cuts).
    budget : int
        Importance draws (oracle calls <= budget).
    method : str
        ``"supg"`` or ``"supg++"``.
    bound : str
        ``"clt"`` or ``"conservative"``.
    seed : int
        Seed of every random choice.

    Returns
    -------
    Selection
        The selected ids, the proxy threshold, oracle calls and the sampled ids.
    """
    return _select(data, proxy, oracle, target, delta, budget, method, bound, seed, _precision_cut)
