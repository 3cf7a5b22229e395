"""Samplers on a trained LeNet's latent space (real digits) and on generated data with known truth."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from scilens.diagnosis import samplers
from scilens.diagnosis.latent import GaussianMixtureModel, MaxMarginModel, platt_fit
from scilens.diagnosis.sampling import TECHNIQUES, SamplingConfig, draw_sample, fit_latent


def _strata_of(technique, sample, labels, predictions, fit):
    """What each item's stratum is, for the size rule of each technique."""
    if technique == "uniform":
        return np.zeros(len(labels), int)
    if technique == "stratified_cm":
        return labels * 10 + predictions
    if technique in ("stratified_weighted", "maxmargin_label_aware"):
        return labels
    return fit.strata


_FITS: dict = {}


def _fit(technique, latent, labels, predictions):
    """One latent model per technique for this module (the GMMs take seconds)."""
    # A variant (weighted, label-aware) ranks by its plain technique's model.
    key = technique.removesuffix("_weighted").removesuffix("_label_aware")
    if key not in _FITS:
        _FITS[key] = fit_latent(technique, latent, labels, predictions)
    return _FITS[key]


@pytest.mark.parametrize("technique", [t for t in TECHNIQUES if t not in ("simple_latent", "vas", "eb_tree")])
@pytest.mark.parametrize("fraction", [0.05, 0.4])
def test_size_ids_and_determinism(digits_latent, technique, fraction):
    latent, labels, predictions = digits_latent
    fit = _fit(technique, latent, labels, predictions)
    sample = draw_sample(technique, fraction, latent, labels, predictions, fit)
    assert len(np.unique(sample.index)) == len(sample)  # no item twice
    assert sample.index.min() >= 0 and sample.index.max() < len(latent)
    strata = _strata_of(technique, sample, labels, predictions, fit)
    values, counts = np.unique(strata, return_counts=True)
    # Each stratum gives fraction * n_c rounded (stratified_cm: at least one), so within one item per stratum.
    assert abs(len(sample) - fraction * len(latent)) <= len(values)
    for value, n_c in zip(values, counts):
        got = np.sum(strata[sample.index] == value)
        expected = max(1, fraction * n_c) if technique == "stratified_cm" else fraction * n_c
        assert abs(got - expected) <= 1, (value, got, expected)
    refit = fit_latent(technique, latent, labels, predictions) if fraction == 0.05 and fit is not None else fit
    again = draw_sample(technique, fraction, latent, labels, predictions, refit)
    assert np.array_equal(again.index, sample.index)


def test_algorithm1_takes_j_from_the_boundary_end(digits_latent):
    latent, labels, _ = digits_latent
    fit = MaxMarginModel().fit(latent, labels)
    for j in (0.0, 0.3, 0.7, 1.0):
        sample = samplers.boundary_exemplar(fit.strata, fit.log_likelihood_ratio, 0.2, j)
        for value in np.unique(fit.strata):
            members = np.flatnonzero(fit.strata == value)
            ordered = members[np.lexsort((members, fit.log_likelihood_ratio[members]))]
            k = np.floor(0.2 * len(members) + 0.5)
            b = int(np.floor(j * k + 0.5))
            mine = sample.stratum == value
            boundary = sample.index[mine & (sample.end == "boundary")]
            exemplar = sample.index[mine & (sample.end == "exemplar")]
            assert set(boundary) == set(ordered[:b])  # lowest likelihood ratios
            assert set(exemplar) == set(ordered[len(ordered) - (int(k) - b):])  # highest


def test_maxmargin_boundary_holds_more_misclassified_than_uniform(digits_latent):
    """The paper's premise (Table 4.4): errors sit at the decision boundary of the latent space."""
    latent, labels, predictions = digits_latent
    wrong = labels != predictions
    fit = MaxMarginModel().fit(latent, labels)
    boundary = samplers.boundary_exemplar(fit.strata, fit.log_likelihood_ratio, 0.05, tuning_factor=1.0)
    uniform_counts = [wrong[samplers.uniform(len(latent), 0.05, seed).index].sum() for seed in range(20)]
    # A uniform draw of k holds k * error rate misclassified on average (~1.3 here); the boundary end
    # holds several times that.
    assert wrong[boundary.index].sum() > 3 * np.mean(uniform_counts)
    assert wrong[boundary.index].sum() > max(uniform_counts)


def test_weighted_draws_favour_low_likelihood_ratio():
    strata = np.zeros(4000, int)
    log_lr = np.linspace(-3, 3, 4000)
    chosen = np.concatenate([samplers.likelihood_weighted(strata, log_lr, 0.05, seed).index for seed in range(20)])
    # Inclusion probability ~ 1/ratio: the lower half (ratio < 1) must dominate strongly.
    assert np.mean(log_lr[chosen] < 0) > 0.9
    capped = samplers.likelihood_weighted(strata, np.full(4000, 800.0), 0.05, 0, cap=1000.0)
    assert len(capped) == 200  # exemplars of unbounded ratio still have a (capped) weight


def test_simple_latent_draws_equally_per_cell(digits_latent):
    latent, _, _ = digits_latent
    sample = samplers.simple_latent(latent, 0.2, seed=1)
    cells, counts = np.unique(sample.stratum, return_counts=True)
    share = np.floor(0.2 * len(latent) / len(cells) + 0.5)
    assert len(cells) <= 32
    assert counts.max() == share  # no cell gives more than its equal share ...
    # ... and a cell gives less only when it has no more items.
    x = latent - latent.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    p = x @ vt[:5].T
    lo, hi = p.min(0), p.max(0)
    cell_sizes = np.bincount((np.clip(((p - lo) / ((hi - lo) / 2)).astype(int), 0, 1) @ (2 ** np.arange(5))),
                             minlength=32)
    for cell, got in zip(cells, counts):
        assert got == min(share, cell_sizes[cell])


def _naive_vas(x, k, order, eps2):
    """Interchange exactly as Park et al. describe it: recompute the loss of every candidate eviction."""
    members = list(order[:k])
    for item in order[k:]:
        candidates = [*members, item]
        pts = x[candidates]
        d2 = np.sum((pts[:, None] - pts[None]) ** 2, axis=2)
        kernel = np.exp(-d2 / eps2)
        np.fill_diagonal(kernel, 0)
        total = kernel.sum() / 2
        losses = [total - kernel[i].sum() for i in range(len(candidates))]
        worst = int(np.argmin(losses))
        if worst != len(members):
            members[worst] = item
    return np.array(members)


def test_vas_interchange_equals_the_naive_algorithm():
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.normal(0, 1, (150, 3)), rng.normal(4, 0.3, (150, 3))])
    sample = samplers.visualization_aware(x, 0.1, seed=2, bandwidth=1.5)
    order = np.random.default_rng(2).permutation(len(x))
    assert sorted(sample.index) == sorted(_naive_vas(x, 30, order, 1.5**2))
    # VAS spreads the sample: the dense cluster (sd 0.3) gets far fewer than half.
    assert np.mean(sample.index >= 150) < 0.35


def test_boundary_tree_nodes_differ_from_their_parent_and_sit_at_boundaries(digits_latent):
    latent, labels, predictions = digits_latent
    sample = samplers.boundary_tree(latent, predictions, seed=0)
    # Every item the tree absorbed is classified, by the tree's nearest node, as the model does.
    assert 10 <= len(sample) < len(latent) / 2
    assert set(np.unique(predictions[sample.index])) == set(np.unique(predictions))
    wrong = labels != predictions
    assert wrong[sample.index].mean() > 3 * wrong.mean()


def test_platt_fit_is_the_logistic_mle_on_smoothed_targets():
    rng = np.random.default_rng(0)
    margins = rng.normal(size=3000)
    positive = rng.random(3000) < 1 / (1 + np.exp(-(2.0 * margins - 0.5)))
    a, b = platt_fit(margins, positive)
    # With 1,500 items per class the smoothed targets differ from 0/1 by < 0.1 %: the plain logistic
    # MLE agrees to that order, and both recover the generating slope 2 and offset -0.5 to sampling error.
    reference = LogisticRegression(C=1e12, tol=1e-12, max_iter=1000).fit(margins[:, None], positive)
    assert a == pytest.approx(reference.coef_[0, 0], rel=0.01)
    assert b == pytest.approx(reference.intercept_[0], abs=0.01)
    assert a == pytest.approx(2.0, abs=0.25) and b == pytest.approx(-0.5, abs=0.15)


def test_gmm_recovers_generated_clusters_and_ranks_by_their_overlap():
    rng = np.random.default_rng(7)
    means = np.array([[0, 0, 0], [4, 0, 0], [0, 4, 0]], float)
    truth = np.repeat(np.arange(3), 400)
    x = means[truth] + rng.normal(0, 1, (1200, 3))
    for covariance in ("full", "spherical"):
        fit = GaussianMixtureModel(3, covariance).fit(x, seed=0)
        mapping = {s: np.bincount(truth[fit.strata == s]).argmax() for s in np.unique(fit.strata)}
        recovered = np.array([mapping[s] for s in fit.strata])
        # Unit-variance clusters 4 apart overlap where a point is > 2 sd toward another: ~2.3 % per side.
        assert np.mean(recovered == truth) > 0.95
        # The likelihood ratio falls toward the other clusters: boundary items lie between the means.
        # For the 60 lowest ratios the nearest midpoint between their cluster's mean and another's is closer
        # than their own mean; for the 60 highest it is the other way round.
        order = np.argsort(fit.log_likelihood_ratio)

        def midpoint_vs_own(items, recovered=recovered):
            own = recovered[items]
            mid = np.min([np.where(own == k, np.inf, np.linalg.norm(x[items] - (means[own] + means[k]) / 2, axis=1))
                          for k in range(3)], axis=0)
            return mid - np.linalg.norm(x[items] - means[own], axis=1)

        assert np.median(midpoint_vs_own(order[:60])) < 0 < np.median(midpoint_vs_own(order[-60:]))


def test_bad_fraction_and_tuning_factor_are_refused(digits_latent):
    _, labels, _ = digits_latent
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\], got 0"):
        samplers.uniform(10, 0.0)
    with pytest.raises(ValueError, match=r"tuning factor j must be in \[0, 1\], got 1.5"):
        samplers.boundary_exemplar(labels, np.zeros(len(labels)), 0.1, 1.5)
    from scilens.core.config import ConfigError

    with pytest.raises(ConfigError, match=r"tuning_factor: 1\.2 is above the maximum 1\.0"):
        SamplingConfig(tuning_factor=1.2)
