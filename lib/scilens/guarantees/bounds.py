"""Confidence-interval kernels for sampling with guarantees.

Each function returns a half-width (or a bound) for a mean estimated from ``n`` sampled values; none
samples anything. Which ones take the finite-population correction (FPC) for sampling without
replacement:

* :func:`clt_halfwidth` multiplies by ``sqrt((N - n) / (N - 1))`` when ``population`` is given (the
  closed-form variance of a mean drawn without replacement).
* :func:`wilson_interval` (a share of 0/1 values) takes it as an effective sample size
  ``n (N - 1) / (N - n)``: the size whose with-replacement variance equals the FPC'd one.
* :func:`bennett_halfwidth`, :func:`empirical_bernstein_halfwidth` and
  :func:`conservative_mean_bounds` take none: Hoeffding (1963, Theorem 4) shows that a mean drawn without
  replacement is at least as concentrated as one drawn with replacement for every convex function of
  the sum, so the with-replacement bounds hold unchanged (conservatively) without replacement.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats
from scipy.special import lambertw

__all__ = [
    "bennett_h",
    "bennett_h_inverse",
    "bennett_halfwidth",
    "chi2_variance_upper",
    "clt_halfwidth",
    "clt_mean_bounds",
    "conservative_mean_bounds",
    "ebs_failure",
    "empirical_bernstein_halfwidth",
    "wilson_interval",
    "z_value",
]


def z_value(delta: float, two_sided: bool = True) -> float:
    """Normal quantile whose tail mass is ``delta``.

    Parameters
    ----------
    delta : float
        Failure probability in (0, 1).
    two_sided : bool
        Split ``delta`` over both tails (``z_{1 - delta/2}``) or put it in one (``z_{1 - delta}``).

    Returns
    -------
    float
        The quantile.
    """
    tail = delta / 2.0 if two_sided else delta
    return float(stats.norm.isf(tail))


def clt_halfwidth(std: float, n: int, delta: float, population: int | None = None) -> float:
    """Normal-approximation half-width of a sample mean, ``z_{1-delta/2} s / sqrt(n)`` times the FPC.

    Parameters
    ----------
    std : float
        Sample standard deviation (``ddof=1``).
    n : int
        Sample size.
    delta : float
        Two-sided failure probability.
    population : int, optional
        Population size ``N`` for sampling without replacement: multiplies by ``sqrt((N-n)/(N-1))``.

    Returns
    -------
    float
        The half-width (0 once the whole population is sampled). Asymptotic only: no finite-sample
        guarantee.
    """
    fpc = 1.0
    if population is not None and population > 1:
        fpc = math.sqrt(max(population - n, 0) / (population - 1))
    return z_value(delta) * std / math.sqrt(n) * fpc


def wilson_interval(share: float, n: float, delta: float, population: int | None = None) -> tuple[float, float]:
    """Wilson score interval of a proportion (Wilson 1927): the normal test inverted, not the normal interval.

    The ``p`` with ``|share - p| <= z sqrt(p (1 - p) / n)``, ``z = z_{1-delta/2}``:
    ``(share + z^2/(2n)) / (1 + z^2/n) -+ z / (1 + z^2/n) sqrt(share (1 - share) / n + z^2 / (4 n^2))``.
    Unlike the CLT interval ``share -+ z sqrt(share (1 - share) / n)``, it is not degenerate at 0 or
    ``n`` successes (``[0, z^2 / (n + z^2)]`` for none) and keeps its coverage near 0 and 1.

    Parameters
    ----------
    share : float
        Observed share of ones, in [0, 1].
    n : float
        Sample size (or an effective one, e.g. a stratified mean's ``share (1 - share) / variance``).
    delta : float
        Two-sided failure probability.
    population : int, optional
        Population size ``N`` for sampling without replacement: ``n`` becomes ``n (N - 1) / (N - n)``
        (the FPC); the whole population sampled gives ``(share, share)``.

    Returns
    -------
    tuple of float
        ``(low, high)``, within [0, 1]. Asymptotic, like the CLT interval (no finite-sample guarantee).
    """
    if population is not None and population > 1:
        if n >= population:
            return share, share
        n = n * (population - 1) / (population - n)
    z2 = z_value(delta) ** 2
    scale = 1.0 + z2 / n
    centre = (share + z2 / (2.0 * n)) / scale
    half = math.sqrt(z2) / scale * math.sqrt(max(share * (1.0 - share), 0.0) / n + z2 / (4.0 * n * n))
    return max(centre - half, 0.0), min(centre + half, 1.0)


def clt_mean_bounds(values: np.ndarray, delta: float) -> tuple[float, float]:
    """One-sided normal bounds of a mean, each at failure ``delta`` (SUPG's ``SamplingBounds``).

    Parameters
    ----------
    values : numpy.ndarray
        I.i.d. sample.
    delta : float
        Failure probability of each one-sided bound.

    Returns
    -------
    tuple of float
        ``(lower, upper)``: mean -/+ ``z_{1-delta} s / sqrt(n)``.
    """
    n = len(values)
    mean = float(np.mean(values))
    half = z_value(delta, two_sided=False) * float(np.std(values, ddof=1)) / math.sqrt(n) if n > 1 else math.inf
    return mean - half, mean + half


def empirical_bernstein_halfwidth(std: float, n: int, value_range: float, delta: float) -> float:
    """Empirical Bernstein half-width (Audibert, Munos and Szepesvari 2009, Theorem 1; Mnih et al. 2008).

    ``|mean - mu| <= s sqrt(2 ln(3/delta) / n) + 3 R ln(3/delta) / n`` with probability >= 1 - delta,
    for ``n`` i.i.d. values in an interval of length ``R``, ``s`` the (biased, ``ddof=0``) sample
    standard deviation. A stopping rule checking it at steps ``k = 1, 2, ...`` must spend a failure
    ``delta_k`` with ``sum_k delta_k <= delta`` (the union bound; see :func:`ebs_failure`).

    Parameters
    ----------
    std : float
        Sample standard deviation with ``ddof=0``.
    n : int
        Sample size.
    value_range : float
        ``R = b - a`` for values in ``[a, b]``.
    delta : float
        Two-sided failure probability of this one interval.

    Returns
    -------
    float
        The half-width.
    """
    log_term = math.log(3.0 / delta)
    return std * math.sqrt(2.0 * log_term / n) + 3.0 * value_range * log_term / n


def ebs_failure(step: int, delta: float, power: float = 1.1) -> float:
    """Failure spent at the ``step``-th check of EBS sampling (Mnih et al. 2008, EBGStop).

    ``delta_k = c / k**p`` with ``c = delta (p - 1) / p``: since ``sum_{k>=1} k**-p <= p / (p - 1)``,
    the failures of all checks sum to at most ``delta`` (the union bound over steps).

    Parameters
    ----------
    step : int
        The check's index ``k >= 1``.
    delta : float
        Total failure probability.
    power : float
        ``p > 1``; BlazeIt uses 1.1.

    Returns
    -------
    float
        ``delta_k``.
    """
    return delta * (power - 1.0) / power / step**power


def bennett_h(u: np.ndarray | float) -> np.ndarray | float:
    """Bennett's function ``h(u) = (1 + u) ln(1 + u) - u``.

    Parameters
    ----------
    u : float or numpy.ndarray
        Argument(s) ``>= 0``.

    Returns
    -------
    float or numpy.ndarray
        ``h(u)``.
    """
    return (1.0 + u) * np.log1p(u) - u


def bennett_h_inverse(y: float) -> float:
    """Inverse of :func:`bennett_h` on ``u >= 0``, in closed form through the Lambert W function.

    With ``v = 1 + u``, ``h = y`` reads ``v (ln v - 1) = y - 1``; writing ``v = e^s`` gives
    ``(s - 1) e^{s - 1} = (y - 1) / e``, so ``u = exp(1 + W_0((y - 1) / e)) - 1`` (the principal branch,
    since ``(y - 1)/e >= -1/e`` for ``y >= 0``).

    Parameters
    ----------
    y : float
        Value ``>= 0``.

    Returns
    -------
    float
        The ``u >= 0`` with ``h(u) = y``.
    """
    if y <= 0.0:
        return 0.0
    w = float(np.real(lambertw((y - 1.0) / math.e, 0)))
    return math.exp(1.0 + w) - 1.0


def bennett_halfwidth(variance: float, n: int, value_range: float, delta: float) -> float:
    """Half-width from Bennett's inequality (Bennett 1962), inverted exactly.

    For the mean of ``n`` i.i.d. values in ``[a, b]`` (``R = b - a``) with variance ``sigma^2``,
    ``P(|mean - mu| >= t) <= 2 exp(-n sigma^2 / R^2 h(R t / sigma^2))``. Setting the right side to
    ``delta`` gives ``t = sigma^2 / R * h^{-1}(R^2 ln(2/delta) / (n sigma^2))``. The seed's Algorithm 1
    (lines 19-21) instead puts the per-sample variance where the sum's variance ``n sigma^2`` belongs and
    divides by ``n`` afterwards, which shrinks like ``1/n`` rather than ``1/sqrt(n)`` (too narrow).

    Parameters
    ----------
    variance : float
        ``sigma^2`` (or an upper bound of it: the half-width grows with it).
    n : int
        Sample size.
    value_range : float
        ``R = b - a``.
    delta : float
        Two-sided failure probability.

    Returns
    -------
    float
        The half-width ``t``.
    """
    if value_range <= 0.0:
        return 0.0
    # t decreases to 0 (slowly, like 1 / ln(1/sigma^2)) as sigma -> 0; a tiny floor keeps y finite
    variance = max(variance, 1e-12 * value_range**2)
    y = value_range**2 * math.log(2.0 / delta) / (n * variance)
    return variance / value_range * bennett_h_inverse(y)


def chi2_variance_upper(sample_variance: float, n: int, delta: float) -> float:
    """Upper confidence bound of a variance from a pilot sample: ``(n-1) s^2 / chi2_{n-1}(delta)``.

    ``chi2_{n-1}(delta)`` is the lower ``delta`` quantile, so the bound holds with probability
    ``1 - delta`` for normal data (BlazeIt++, Algorithm 1 line 4). For bounded, skewed data it is an
    approximation (the sample variance's spread depends on the kurtosis).

    Parameters
    ----------
    sample_variance : float
        ``s^2`` with ``ddof=1``.
    n : int
        Pilot size.
    delta : float
        One-sided failure probability.

    Returns
    -------
    float
        The bound.
    """
    return (n - 1) * sample_variance / float(stats.chi2.ppf(delta, n - 1))


def conservative_mean_bounds(values: np.ndarray, value_range: float, delta: float) -> tuple[float, float]:
    """One-sided empirical Bernstein bounds of a mean (Maurer and Pontil 2009, Theorem 4), each at ``delta``.

    ``mu <= mean + sqrt(2 V ln(2/delta) / n) + 7 R ln(2/delta) / (3 (n - 1))`` (and symmetrically below)
    for ``n`` i.i.d. values in an interval of length ``R``, ``V`` the sample variance (``ddof=1``).
    A finite-sample bound, unlike the normal approximation SUPG uses; it needs a known range.

    Parameters
    ----------
    values : numpy.ndarray
        I.i.d. sample.
    value_range : float
        ``R``.
    delta : float
        Failure probability of each one-sided bound.

    Returns
    -------
    tuple of float
        ``(lower, upper)``.
    """
    n = len(values)
    if n < 2:
        return -math.inf, math.inf
    log_term = math.log(2.0 / delta)
    half = (math.sqrt(2.0 * float(np.var(values, ddof=1)) * log_term / n)
            + 7.0 * value_range * log_term / (3.0 * (n - 1)))
    mean = float(np.mean(values))
    return mean - half, mean + half
