"""MaxMargin as the paper ran it (linear SVC, C = 1, pairwise-coupled Platt probabilities) and its rivals."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.svm import SVC

from scilens.core.config import ConfigError, load_config
from scilens.diagnosis import samplers
from scilens.diagnosis.config import SampleConfig
from scilens.diagnosis.latent import MaxMarginModel, PaperMaxMarginModel
from scilens.diagnosis.sampling import SamplingConfig, draw_sample, fit_latent
from scilens.jobs.sample import maxmargin_setting


def thinned(labels: np.ndarray, predictions: np.ndarray, error_rate: float, seed: int = 0) -> np.ndarray:
    """Positions of an evaluation set: every correct item plus misclassified ones making ``error_rate`` of it."""
    wrong = np.flatnonzero(labels != predictions)
    right = np.flatnonzero(labels == predictions)
    keep = round(error_rate * len(right) / (1 - error_rate))
    assert keep <= len(wrong), f"the model errs on {len(wrong)} items, fewer than the {keep} wanted"
    chosen = np.random.default_rng(seed).choice(wrong, keep, replace=False)
    return np.sort(np.concatenate([right, chosen]))


@pytest.mark.filterwarnings("ignore:The `probability` parameter:FutureWarning")  # scikit-learn >= 1.9
def test_paper_probabilities_are_libsvm_linear_svc_with_probabilities(digits_latent):
    latent, labels, _ = digits_latent
    x = latent.astype(np.float64)
    fit = PaperMaxMarginModel().fit(x, labels, seed=3)
    reference = SVC(kernel="linear", C=1.0, probability=True, random_state=3).fit(x, labels)
    # Same estimator on the same data with the same cross-validation folds: the same probabilities.
    np.testing.assert_allclose(np.exp(fit.log_probabilities), reference.predict_proba(x), rtol=1e-9, atol=1e-12)
    p = reference.predict_proba(x)
    top = p.max(axis=1)
    np.testing.assert_array_equal(fit.strata, reference.classes_[p.argmax(axis=1)])
    np.testing.assert_allclose(fit.log_likelihood_ratio, np.log(top) - np.log1p(-top), rtol=1e-6, atol=1e-9)
    # The driver path's default MaxMargin is this one; spark-parity is the one-vs-rest LinearSVC at C = 0.01.
    default = fit_latent("maxmargin", x, labels, labels, SamplingConfig(seed=3))
    np.testing.assert_array_equal(default.log_probabilities, fit.log_probabilities)
    parity = fit_latent("maxmargin", x, labels, labels, SamplingConfig(maxmargin="spark-parity"))
    np.testing.assert_array_equal(parity.log_probabilities, MaxMarginModel(0.01).fit(x, labels).log_probabilities)


def test_paper_sample_catches_more_misclassified_than_uniform_at_one_percent(digits_latent):
    """The paper's premise at its models' error rate (~1 %): errors sit where MaxMargin's ratio is low."""
    latent, labels, predictions = digits_latent
    keep = thinned(labels, predictions, 0.01)
    x, y, p = latent[keep].astype(np.float64), labels[keep], predictions[keep]
    wrong = y != p
    assert 0.008 < wrong.mean() < 0.012
    sample = draw_sample("maxmargin", 0.05, x, y, p, seed=0)
    caught = int(wrong[sample.index].sum())
    uniform = [int(wrong[samplers.uniform(len(x), 0.05, seed).index].sum()) for seed in range(50)]
    # A uniform 5 % holds 5 % of the misclassified on average (~0.9 items here); the boundary end of
    # each class holds several times as many, more than any of 50 uniform draws.
    assert caught > 3 * np.mean(uniform)
    assert caught > max(uniform)


def test_label_aware_maxmargin_fills_stratified_weighted_quotas_in_algorithm_1_order():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 600)
    predictions = np.where(rng.random(600) < 0.05, (labels + 1) % 3, labels)
    log_lr = rng.normal(size=600)
    sample = samplers.label_aware_boundary_exemplar(labels, predictions, log_lr, 0.1, tuning_factor=0.7)
    random = samplers.stratified_weighted(labels, predictions, 0.1, seed=0)
    correct = labels == predictions
    for c in range(3):
        for ok in (False, True):
            # The same (label, correct) quota as stratified weighted ...
            quota = np.sum((labels[random.index] == c) & (correct[random.index] == ok))
            group = np.flatnonzero((labels == c) & (correct == ok))
            mine = sample.index[np.isin(sample.index, group)]
            assert len(mine) == quota
            # ... taken from the two ends of the group's likelihood-ratio order.
            ordered = group[np.lexsort((group, log_lr[group]))]
            b = int(np.floor(0.7 * quota + 0.5))
            assert set(mine) == set(ordered[:b]) | set(ordered[len(ordered) - (quota - b):])
    assert len(np.unique(sample.index)) == len(sample)
    assert np.sum(~correct[sample.index]) > 2 * np.mean(~correct) * len(sample)  # misclassified over-drawn


def test_sample_job_selects_the_maxmargin_setting():
    cfg = load_config(SampleConfig, None, ["model=m.keras"])
    assert cfg.sampling.maxmargin == "paper" and cfg.sampling.svm_c_of("paper") == 1.0
    assert maxmargin_setting(cfg, "driver") == "paper (C=1)"
    assert maxmargin_setting(cfg, "spark") == "spark-parity (C=0.01)"  # MLlib has the parity setting only
    parity = load_config(SampleConfig, None, ["model=m.keras", "sampling.maxmargin=spark-parity",
                                              "sampling.svm_c=0.1"])
    assert maxmargin_setting(parity, "driver") == "spark-parity (C=0.1)"
    with pytest.raises(ConfigError):
        load_config(SampleConfig, None, ["model=m.keras", "sampling.maxmargin=libsvm"])
