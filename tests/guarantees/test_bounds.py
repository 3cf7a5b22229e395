"""The interval kernels against brute force and against the seed's Bennett interval."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.optimize import brentq
from scipy.special import lambertw

from scilens.guarantees import bounds


def _seed_bennett(variance: float, n: int, value_range: float, delta: float) -> float:
    """The seed's Algorithm 1 lines 19-21, literally (per-sample variance, then divided by |S|)."""
    t = -value_range**2 * math.log(delta) / variance
    t = math.exp(float(np.real(lambertw((t - 1.0) / math.e + 1.0, 0)))) - 1.0
    return t * variance / value_range / n


@pytest.mark.parametrize("variance,n,value_range,delta",
                         [(0.01, 1000, 1.0, 0.05), (0.2, 100, 1.0, 0.01), (1e-4, 5000, 2.0, 0.05),
                          (0.0475, 1000, 1.0, 0.0125), (3.0, 50, 10.0, 0.2)])
def test_bennett_halfwidth_inverts_the_inequality(variance, n, value_range, delta):
    t = bounds.bennett_halfwidth(variance, n, value_range, delta)
    tail = 2.0 * math.exp(-n * variance / value_range**2 * bounds.bennett_h(value_range * t / variance))
    assert tail == pytest.approx(delta, rel=1e-9)

    def excess(x: float) -> float:
        return 2.0 * math.exp(-n * variance / value_range**2 * bounds.bennett_h(value_range * x / variance)) - delta

    assert t == pytest.approx(brentq(excess, 1e-15, 10 * value_range, xtol=1e-15), rel=1e-9)
    # between the CLT width and the Hoeffding width, as a Bernstein-type bound must be
    assert bounds.z_value(delta) * math.sqrt(variance / n) < t
    assert t <= value_range * math.sqrt(math.log(2 / delta) / (2 * n)) or variance > value_range**2 / 4


def test_h_inverse_is_the_inverse():
    for y in (1e-8, 1e-3, 0.5, 1.0, 7.0, 1e4):
        assert bounds.bennett_h(bounds.bennett_h_inverse(y)) == pytest.approx(y, rel=1e-9)


def test_the_seed_bennett_interval_is_too_narrow_and_misses():
    """Bernoulli(0.05) means of 1,000 draws: the textbook interval covers, the seed's does not."""
    p, n, delta = 0.05, 1000, 0.05
    variance = p * (1 - p)
    ours, seed = bounds.bennett_halfwidth(variance, n, 1.0, delta), _seed_bennett(variance, n, 1.0, delta)
    assert seed < ours / 5
    means = np.random.default_rng(0).binomial(n, p, size=4000) / n
    assert np.mean(np.abs(means - p) > ours) <= delta
    assert np.mean(np.abs(means - p) > seed) > 0.5


def test_chi2_variance_bound_covers_normal_variances():
    rng = np.random.default_rng(1)
    samples = rng.normal(0.0, 2.0, size=(4000, 200))
    upper = np.array([bounds.chi2_variance_upper(v, 200, 0.05) for v in samples.var(axis=1, ddof=1)])
    assert np.mean(upper < 4.0) == pytest.approx(0.05, abs=0.015)


def test_empirical_bernstein_and_maurer_pontil_cover_skewed_means():
    rng = np.random.default_rng(2)
    p, n, delta = 0.02, 300, 0.05
    draws = (rng.random((3000, n)) < p).astype(np.float64)
    half = np.array([bounds.empirical_bernstein_halfwidth(float(d.std()), n, 1.0, delta) for d in draws])
    assert np.mean(np.abs(draws.mean(axis=1) - p) > half) <= delta
    lows = np.array([bounds.conservative_mean_bounds(d, 1.0, delta)[0] for d in draws[:500]])
    assert np.mean(lows > p) <= delta


def test_ebs_failures_sum_below_delta():
    assert sum(bounds.ebs_failure(k, 0.05) for k in range(1, 200_000)) < 0.05


def test_clt_halfwidth_finite_population_correction():
    assert bounds.clt_halfwidth(1.0, 100, 0.05) == pytest.approx(1.959964 / 10, rel=1e-6)
    assert bounds.clt_halfwidth(1.0, 100, 0.05, population=100) == 0.0


@pytest.mark.parametrize(("ones", "n", "delta"), [(0, 50, 0.05), (3, 50, 0.05), (25, 50, 0.05), (50, 50, 0.1),
                                                  (1, 1000, 0.01), (17, 300, 0.2)])
def test_wilson_interval_is_scipys_and_statsmodels(ones, n, delta):
    from scipy.stats import binomtest
    from statsmodels.stats.proportion import proportion_confint

    expected = binomtest(ones, n).proportion_ci(1 - delta, method="wilson")
    low, high = bounds.wilson_interval(ones / n, n, delta)
    assert (low, high) == pytest.approx((expected.low, expected.high), abs=1e-12)
    assert (low, high) == pytest.approx(proportion_confint(ones, n, alpha=delta, method="wilson"), abs=1e-12)


def test_wilson_interval_known_values_and_fpc():
    z2 = stats.norm.isf(0.025) ** 2
    # no success: [0, z^2 / (n + z^2)], not the normal interval's [0, 0]
    assert bounds.wilson_interval(0.0, 100, 0.05) == pytest.approx((0.0, z2 / (100 + z2)), abs=1e-15)
    assert bounds.wilson_interval(1.0, 100, 0.05) == pytest.approx((100 / (100 + z2), 1.0), abs=1e-15)
    # sampling without replacement: the FPC as an effective size; the whole population is exact
    assert bounds.wilson_interval(0.3, 500, 0.05, population=1000) == pytest.approx(
        bounds.wilson_interval(0.3, 500 * 999 / 500, 0.05))
    assert bounds.wilson_interval(0.3, 1000, 0.05, population=1000) == (0.3, 0.3)


def test_wilson_keeps_its_coverage_on_a_rare_share_where_the_normal_interval_does_not():
    """Exact coverage (a sum over the binomial law, no simulation) at n = 100, p = 0.02 and 0.05."""
    n, delta = 100, 0.05
    ones = np.arange(n + 1)
    for p in (0.02, 0.05):
        mass = stats.binom.pmf(ones, n, p)
        wilson = np.array([bounds.wilson_interval(k / n, n, delta) for k in ones])
        half = np.array([bounds.clt_halfwidth(np.sqrt(k / n * (1 - k / n) * n / (n - 1)), n, delta) for k in ones])
        wald = np.stack([ones / n - half, ones / n + half], axis=1)
        cover_wilson = mass[(wilson[:, 0] <= p) & (p <= wilson[:, 1])].sum()
        cover_wald = mass[(wald[:, 0] <= p) & (p <= wald[:, 1])].sum()
        print(f"\np={p}: coverage Wilson {cover_wilson:.3f}, normal {cover_wald:.3f}")
        assert cover_wilson >= 0.93 and cover_wald < 0.90
