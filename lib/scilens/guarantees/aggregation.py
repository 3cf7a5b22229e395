"""Aggregation with guarantees: the mean of an expensive oracle over a population, from a small sample.

``estimate_mean(data, proxy, oracle, error, delta, method=...)`` samples rows without replacement from the
finite population (a seeded permutation's prefix, so each step's sample contains the previous one),
calls the oracle only on sampled rows (each once) and returns the estimate, a ``1 - delta`` interval and
the number of oracle calls. Methods:

``uniform``
    Uniform sampling grown geometrically until the normal (CLT) half-width, with finite-population
    correction, is at most ``error``. Asymptotic: its coverage is not guaranteed (and optional stopping
    makes it worse).
``ebs``
    BlazeIt's EBS sampling (Mnih, Szepesvari and Audibert 2008, EBGStop; Kang et al. 2020 section 6):
    empirical Bernstein intervals checked at geometrically spaced sample sizes, the ``k``-th spending
    ``delta_k = delta (p-1)/p / k^p`` (a union bound over the checks), the running intersection kept;
    stop when its width is at most ``2 error``.
``ebs-cv``
    ``ebs`` on control-variate values ``O + c (P - E[P])`` (seed eq. 1), ``c = -Cov(O, P) / Var(P)``
    estimated on an independent pilot of 100 rows (so ``c`` is fixed before the main sample) and
    ``E[P]``, ``Var(P)`` exact from the whole proxy column.
``blazeit++``
    The seed's Algorithm 1 with its two errors fixed: a pilot (default 1,000 rows) gives ``c`` and a
    chi-square upper bound of the control-variate variance at ``delta / 2``; the main sample starts at
    ``n`` with ``phi = delta / 4`` and doubles, halving ``phi``, until the
    *textbook* Bennett interval (``bounds.bennett_halfwidth``) has width at most ``2 error`` (the seed's
    test is inverted). Since that width depends only on the pilot's bound, the start is the smallest
    ``n`` Bennett accepts (found by bisection) rather than the seed's normal-quantile size, which
    Bennett always rejects; so the doubling loop, kept from the seed, stops at its first check (or at
    the census). Failure: ``delta/2`` (variance bound) + ``sum_k delta / 2^(k+2) <= delta / 2``.
``abae``
    ABAE (Kang et al. 2021) for a mean over all rows: strata by proxy quantiles, a first stage of equal
    size per stratum, then a second stage allocated proportionally to ``p_k sigma_k`` (Neyman, with
    ``p_k`` the stratum's share of rows), grown until the stratified CLT half-width (with per-stratum
    FPC) is at most ``error``. CLT-mode: coverage asymptotic, not guaranteed (the ABAE paper
    bootstraps instead).

In CLT mode (``uniform``, ``abae``), a statistic whose sampled values are all 0 or 1 (a share) gets the
Wilson score interval instead of the normal one (``bounds.wilson_interval``; ABAE's at the stratified
variance's effective sample size), and stops when both its sides are within ``error`` of the estimate:
the normal interval is degenerate at 0 or ``n`` ones, which a rare statistic's first rows usually
are, and misses the truth far more often than ``delta`` there.

With ``relative=True``, ``error`` is a fraction of the mean: every method stops once its interval
excludes 0 and proves ``|estimate - mu| <= error |mu|`` (:func:`relative_met`), sizing its samples for
``error`` times its current estimate (BlazeIt++: the pilot's mean); the guarantee is the interval's.

The oracle's values must lie in ``value_range`` (known in advance: EBS and Bennett need it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from scilens.guarantees import bounds
from scilens.guarantees.oracle import CachedLabels

__all__ = ["METHODS", "Estimate", "estimate_mean", "relative_met"]

METHODS = ("uniform", "ebs", "ebs-cv", "blazeit++", "abae")

_CV_PILOT = 100
_EBS_START = 20
_EBS_GROWTH = 1.5


@dataclass
class Estimate:
    """The answer of :func:`estimate_mean`.

    Attributes
    ----------
    estimate, low, high : float
        The estimate and its interval.
    oracle_calls : int
        Rows the oracle evaluated (pilot included).
    method : str
        The method used.
    history : list of tuple
        ``(oracle calls, low, high)`` at each check, for plotting the interval as it narrows.
    sampled_ids : numpy.ndarray
        ``id`` of every row the oracle evaluated.
    drawn_ids : numpy.ndarray
        The same ids in the order the method drew them (first asked for; the pilot's first).
    """

    estimate: float
    low: float
    high: float
    oracle_calls: int
    method: str
    history: list[tuple[int, float, float]] = field(default_factory=list)
    sampled_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    drawn_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


class _DrawOrder(CachedLabels):
    """:class:`CachedLabels` remembering the order rows were first asked for: the draw order.

    The oracle still gets each call's new rows in table order; this only keeps what the permutation
    (or the strata) drew first, for a sample written in draw order.
    """

    def __init__(self, data: pd.DataFrame, oracle: Callable[[pd.DataFrame], np.ndarray]) -> None:
        super().__init__(data, oracle)
        self.order: list[int] = []

    def get(self, positions: np.ndarray) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64)
        fresh = positions[~self.known[positions]]
        if len(fresh):
            _, first = np.unique(fresh, return_index=True)
            self.order.extend(fresh[np.sort(first)].tolist())
        return super().get(positions)


class _Run:
    """One estimation's state: population, proxy, cached oracle values, seeded generator."""

    def __init__(self, data: pd.DataFrame, proxy: str | np.ndarray, oracle: Callable[[pd.DataFrame], np.ndarray],
                 seed: int, value_range: tuple[float, float]) -> None:
        self.data = data
        self.proxy = np.asarray(data[proxy] if isinstance(proxy, str) else proxy, dtype=np.float64)
        if len(self.proxy) != len(data):
            raise ValueError(f"proxy has {len(self.proxy)} values for {len(data)} rows")
        self.n = len(data)
        self.cache = _DrawOrder(data, oracle)
        self.rng = np.random.default_rng(seed)
        self.range = float(value_range[1] - value_range[0])
        self.history: list[tuple[int, float, float]] = []

    def record(self, low: float, high: float) -> None:
        self.history.append((int(self.cache.known.sum()), low, high))

    def result(self, method: str, estimate: float, low: float, high: float) -> Estimate:
        sampled, ids = self.cache.sampled, self.data["id"].to_numpy()
        return Estimate(float(estimate), float(low), float(high), len(sampled), method, self.history,
                        ids[sampled], ids[np.asarray(self.cache.order, dtype=np.int64)])

    def control_variate(self, positions: np.ndarray) -> tuple[float, float]:
        """``c`` from the oracle on ``positions`` and the control-variate range ``R + |c| range(P)``."""
        values = self.cache.get(positions)
        var_p = float(np.var(self.proxy))
        cov = float(np.cov(values, self.proxy[positions])[0, 1]) if len(positions) > 1 else 0.0
        c = -cov / var_p if var_p > 0 else 0.0
        return c, self.range + abs(c) * float(np.ptp(self.proxy))

    def cv_values(self, positions: np.ndarray, c: float) -> np.ndarray:
        return self.cache.get(positions) + c * (self.proxy[positions] - float(np.mean(self.proxy)))


def relative_met(estimate: Any, low: Any, high: Any, error: float) -> bool:
    """Whether an interval proves ``|estimate - mu| <= error |mu|`` for every ``mu`` it holds.

    True when the interval excludes 0 (``low`` and ``high`` of one sign) and its side farther from the
    estimate is at most ``error min(|low|, |high|)``: then ``|estimate - mu| <= error |mu|`` for every
    ``mu`` in ``[low, high]`` (``|mu| >= min(|low|, |high|)``), so the relative target holds whenever
    the interval covers. Elementwise on arrays (all must pass).

    Parameters
    ----------
    estimate, low, high : float or numpy.ndarray
        The estimate and its interval.
    error : float
        The relative error, a fraction of the (unknown) mean.

    Returns
    -------
    bool
    """
    estimate, low, high = (np.asarray(x, dtype=np.float64) for x in (estimate, low, high))
    side = np.maximum(high - estimate, estimate - low)
    return bool(np.all((low * high > 0.0) & (side <= error * np.minimum(np.abs(low), np.abs(high)))))


def _aim(error: float, relative: bool, estimate: float) -> float:
    """The absolute half-width to size the next sample for: ``error``, or ``error |estimate|`` (never 0)."""
    return error * max(abs(estimate), 1e-12) if relative else error


def _census(run: _Run, method: str) -> Estimate:
    """Every row evaluated: the exact mean as a zero-width interval."""
    mean = float(run.cache.get(np.arange(run.n)).mean())
    run.record(mean, mean)
    return run.result(method, mean, mean, mean)


def _binary(values: np.ndarray) -> bool:
    """Whether every value is 0 or 1: a share, whose CLT interval is degenerate at no (or all) ones."""
    return bool(np.all((values == 0.0) | (values == 1.0)))


def _uniform(run: _Run, error: float, delta: float, relative: bool = False) -> Estimate:
    order = run.rng.permutation(run.n)
    z = bounds.z_value(delta)
    n = min(100, run.n)
    while True:
        if n == run.n:
            return _census(run, "uniform")
        values = run.cache.get(order[:n])
        mean = float(values.mean())
        if _binary(values):
            # a share: the Wilson interval, not degenerate at 0 or n ones (a rare positive's first rows
            # usually hold none); the estimate is the share, and each side must be within error of it
            low, high = bounds.wilson_interval(mean, n, delta, run.n)
            run.record(low, high)
            if relative_met(mean, low, high, error) if relative else max(high - mean, mean - low) <= error:
                return run.result("uniform", mean, low, high)
            share = (mean * n + z * z / 2.0) / (n + z * z)  # the Wilson centre: never 0, so a size to aim at
            needed = z * z * share * (1.0 - share) / _aim(error, relative, share) ** 2
        else:
            std = float(values.std(ddof=1)) if n > 1 else math.inf
            half = bounds.clt_halfwidth(std, n, delta, run.n)
            run.record(mean - half, mean + half)
            if std == 0.0:
                # no spread yet: a zero-width interval is no evidence, so read on instead of stopping
                n = min(run.n, 2 * n)
                continue
            if relative_met(mean, mean - half, mean + half, error) if relative else half <= error:
                return run.result("uniform", mean, mean - half, mean + half)
            needed = (z * std / _aim(error, relative, mean)) ** 2
        needed = needed / (1.0 + (needed - 1.0) / run.n)
        # a relative target aims at an early, noisy mean: grow at most 4x a step rather than leap to a census
        grown = min(needed, 4.0 * n) if relative else needed
        n = min(run.n, max(math.ceil(grown), int(n * 1.2) + 1))


def _ebs(run: _Run, error: float, delta: float, cv: bool, relative: bool = False) -> Estimate:
    c, value_range = 0.0, run.range
    if cv:
        c, value_range = run.control_variate(run.rng.permutation(run.n)[:min(_CV_PILOT, run.n)])
    order = run.rng.permutation(run.n)
    low, high, k = -math.inf, math.inf, 0
    while True:
        k += 1
        n = min(run.n, math.ceil(_EBS_START * _EBS_GROWTH ** (k - 1)))
        values = run.cv_values(order[:n], c)
        mean = float(values.mean())
        if n == run.n:  # the census: the mean is exact (the control-variate term sums to zero)
            return _census(run, "ebs-cv" if cv else "ebs")
        half = bounds.empirical_bernstein_halfwidth(float(values.std()), n, value_range, bounds.ebs_failure(k, delta))
        low, high = max(low, mean - half), min(high, mean + half)
        run.record(low, high)
        if relative_met((low + high) / 2.0, low, high, error) if relative else high - low <= 2.0 * error:
            return run.result("ebs-cv" if cv else "ebs", (low + high) / 2.0, low, high)


def _bennett_size(variance: float, value_range: float, phi: float, error: float, population: int) -> int:
    """Smallest ``n`` whose Bennett half-width at ``phi`` is at most ``error`` (bisection; it falls with n).

    The seed starts from the normal size ``Z(phi)^2 V / error^2``, which the Bennett interval it is then
    judged by never accepts (Bennett is wider than the normal interval), so its first doubling is
    certain; starting here spends the same failure budget on a sample about 20% smaller.
    """
    low = max(2, int(bounds.z_value(phi) ** 2 * variance / error**2))
    if bounds.bennett_halfwidth(variance, low, value_range, phi) <= error:
        return low
    high = low
    while high < population and bounds.bennett_halfwidth(variance, high, value_range, phi) > error:
        high *= 2
    if high >= population:
        return population
    while high - low > 1:
        mid = (low + high) // 2
        if bounds.bennett_halfwidth(variance, mid, value_range, phi) <= error:
            high = mid
        else:
            low = mid
    return high


def _blazeit_pp(run: _Run, error: float, delta: float, pilot: int, relative: bool = False) -> Estimate:
    pilot_rows = run.rng.permutation(run.n)[:min(pilot, run.n)]
    c, value_range = run.control_variate(pilot_rows)
    variance_ub = bounds.chi2_variance_upper(float(np.var(run.cv_values(pilot_rows, c), ddof=1)),
                                             len(pilot_rows), delta / 2.0)
    order = run.rng.permutation(run.n)
    phi = delta / 4.0
    # a relative target is aimed at the pilot's mean (the stop below checks the interval itself)
    aim = _aim(error, relative, float(run.cache.get(pilot_rows).mean()))
    n = _bennett_size(variance_ub, value_range, phi, aim, run.n)
    while True:
        n = min(n, run.n)
        if n == run.n:
            return _census(run, "blazeit++")
        mean = float(run.cv_values(order[:n], c).mean())
        half = bounds.bennett_halfwidth(variance_ub, n, value_range, phi)
        run.record(mean - half, mean + half)
        if relative_met(mean, mean - half, mean + half, error) if relative else 2.0 * half <= 2.0 * error:
            return run.result("blazeit++", mean, mean - half, mean + half)
        phi /= 2.0
        n *= 2


def _strata(proxy: np.ndarray, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``k`` strata of (nearly) equal size by proxy quantile, each in a seeded random order."""
    ranked = np.argsort(proxy, kind="stable")
    return [rng.permutation(part) for part in np.array_split(ranked, k) if len(part)]


def _stratified(run: _Run, strata: list[np.ndarray], taken: np.ndarray,
                delta: float) -> tuple[float, float, np.ndarray]:
    """Stratified mean, its CLT half-width (per-stratum FPC) and the per-stratum standard deviations."""
    shares = np.array([len(s) for s in strata], dtype=np.float64) / run.n
    means, stds, var = np.zeros(len(strata)), np.zeros(len(strata)), 0.0
    for i, (rows, n_i) in enumerate(zip(strata, taken)):
        values = run.cache.get(rows[:n_i])
        means[i] = values.mean()
        stds[i] = values.std(ddof=1) if n_i > 1 else run.range
        var += shares[i] ** 2 * stds[i] ** 2 / n_i * (1.0 - n_i / len(rows))
    return float(shares @ means), bounds.z_value(delta) * math.sqrt(max(var, 0.0)), stds


def _stratified_wilson(run: _Run, taken: np.ndarray, mean: float, half: float, delta: float) -> tuple[float, float]:
    """A stratified share's Wilson interval, at the stratified variance's effective sample size.

    The size is ``mean (1 - mean) / variance``, the simple random sample with the stratified variance
    (the FPC is in it; Korn and Graubard 1998); with no spread in any stratum (every stratum all 0
    or all 1), the rows taken, with the population's FPC. Allocation stays ABAE's (Neyman on the
    sampled spreads): giving strata without a sampled positive Wilson-centre spreads halved the misses
    on the rare test population at error 0.005 but took 4x the oracle calls.
    """
    variance = (half * half) / bounds.z_value(delta) ** 2
    if variance > 0.0 and 0.0 < mean < 1.0:
        return bounds.wilson_interval(mean, mean * (1.0 - mean) / variance, delta)
    return bounds.wilson_interval(mean, float(taken.sum()), delta, run.n)


def _abae(run: _Run, error: float, delta: float, n_strata: int, first_stage: int, relative: bool = False) -> Estimate:
    strata = _strata(run.proxy, n_strata, run.rng)
    sizes = np.array([len(s) for s in strata])
    shares = sizes / run.n
    taken = np.minimum(sizes, first_stage)
    z = bounds.z_value(delta)
    while True:
        mean, half, stds = _stratified(run, strata, taken, delta)
        census = bool(np.all(taken == sizes))
        if not census and _binary(run.cache.values[run.cache.known]):
            low, high = _stratified_wilson(run, taken, mean, half, delta)
            run.record(low, high)
            if relative_met(mean, low, high, error) if relative else max(high - mean, mean - low) <= error:
                return run.result("abae", mean, low, high)
        else:
            run.record(mean - half, mean + half)
            if census or (relative_met(mean, mean - half, mean + half, error) if relative else half <= error):
                return run.result("abae", mean, mean - half, mean + half)
        weights = shares * stds
        weights = weights / weights.sum() if weights.sum() > 0 else shares
        total = max((z * float(shares @ stds) / _aim(error, relative, mean)) ** 2, 1.2 * float(taken.sum()))
        if relative:  # aimed at an early, noisy mean: at most 4x a step
            total = min(total, 4.0 * float(taken.sum()))
        taken = np.minimum(sizes, np.maximum(taken, np.ceil(total * weights).astype(np.int64)))


def estimate_mean(data: pd.DataFrame, proxy: str | np.ndarray, oracle: Callable[[pd.DataFrame], np.ndarray],
                  error: float, delta: float, method: str = "blazeit++", seed: int = 0, *,
                  value_range: tuple[float, float] = (0.0, 1.0), pilot: int = 1000, strata: int = 5,
                  first_stage: int = 100, relative: bool = False) -> Estimate:
    """Mean of ``oracle`` over the rows of ``data`` within ``+-error`` with probability ``1 - delta``.

    Parameters
    ----------
    data : pandas.DataFrame
        The population, with an ``id`` column.
    proxy : str or numpy.ndarray
        The proxy column's name (or its values, one per row): cheap, correlated with the oracle.
    oracle : callable
        Called on a frame of sampled rows, returns one value per row in ``value_range`` (e.g. an
        :class:`scilens.guarantees.oracle.Oracle`). Each row is evaluated at most once.
    error : float
        Target half-width.
    delta : float
        Failure probability.
    method : str
        One of :data:`METHODS` (see the module docstring).
    seed : int
        Seed of every random choice.
    value_range : tuple of float
        ``(a, b)`` bounding the oracle's values (EBS and Bennett need it).
    pilot : int
        BlazeIt++'s pilot size (the seed's 1,000).
    strata : int
        ABAE's number of proxy strata.
    first_stage : int
        ABAE's first-stage rows per stratum.
    relative : bool
        ``error`` is a fraction of the mean: stop once the interval proves ``|estimate - mu| <= error |mu|``
        (:func:`relative_met`: it excludes 0 and its far side is within ``error`` of its end nearer 0). A
        mean near 0 may need a census.

    Returns
    -------
    Estimate
        Estimate, interval, oracle calls, history, sampled ids.
    """
    if not 0.0 < delta < 1.0 or error <= 0.0:
        raise ValueError(f"need 0 < delta < 1 and error > 0, got delta={delta}, error={error}")
    run = _Run(data, proxy, oracle, seed, value_range)
    if relative and error >= 1.0:
        raise ValueError(f"a relative error must be below 1 (a fraction of the mean), got {error}")
    if method == "uniform":
        return _uniform(run, error, delta, relative)
    if method in ("ebs", "ebs-cv"):
        return _ebs(run, error, delta, method == "ebs-cv", relative)
    if method == "blazeit++":
        return _blazeit_pp(run, error, delta, pilot, relative)
    if method == "abae":
        return _abae(run, error, delta, strata, first_stage, relative)
    raise ValueError(f"method must be one of {METHODS}, not {method!r}")
