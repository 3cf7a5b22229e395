"""Bootstrap intervals, Dunn's test and ANCOVA against direct computations and known truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scikit_posthocs
from scipy import stats as sps

from scilens.glaucoma import metrics, stats


def test_auc_equals_scikit_learn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(5)
    y = rng.random(200) < 0.4
    score = np.round(rng.normal(0, 1, 200) + y, 1)  # with ties
    assert metrics.roc_auc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert np.isnan(metrics.roc_auc(np.ones(5), np.arange(5)))


def test_bootstrap_auc_interval_covers_the_true_auc():
    # Binormal scores, healthy N(0,1), glaucoma N(d,1): the true AUC is Phi(d / sqrt(2)). A 95%
    # interval should hold it in about 95% of samples; of 60 samples, fewer than 50 would happen
    # with probability < 0.002 (binomial 60, 0.95).
    d, n = 1.0, 60
    truth = sps.norm.cdf(d / np.sqrt(2))
    config = metrics.BootstrapConfig(resamples=200, unit="eye")
    rng = np.random.default_rng(0)
    hits = 0
    for i in range(60):
        y = np.repeat([0, 1], n)
        score = rng.normal(0, 1, 2 * n) + d * y
        ci = metrics.auc_ci(y, score, None, metrics.BootstrapConfig(**{**config.to_dict(), "seed": i}))
        assert ci.low <= ci.estimate <= ci.high
        hits += ci.low <= truth <= ci.high
    assert hits >= 50


def test_subject_bootstrap_does_not_count_a_second_eye_as_new_evidence():
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], 40)
    score = rng.normal(0, 1, 80) + y
    config = metrics.BootstrapConfig(resamples=300, unit="eye")
    once = metrics.auc_ci(y, score, None, config)
    # every subject has two identical eyes: resampling subjects draws the same subjects as
    # resampling eyes of the single-eye table, so the interval is the same, exactly
    twice_y, twice_s, subject = np.repeat(y, 2), np.repeat(score, 2), np.repeat(np.arange(80), 2)
    by_subject = metrics.auc_ci(twice_y, twice_s, subject, metrics.BootstrapConfig(resamples=300, unit="subject"))
    assert (by_subject.estimate, by_subject.low, by_subject.high) == pytest.approx((once.estimate, once.low, once.high))
    by_eye = metrics.auc_ci(twice_y, twice_s, subject, config)  # pretends 160 independent eyes
    assert by_eye.high - by_eye.low < 0.85 * (once.high - once.low)  # ~1/sqrt(2) as wide


def test_accuracy_interval_and_youden_threshold():
    correct = np.r_[np.ones(75), np.zeros(25)]
    ci = metrics.accuracy_ci(correct, None, metrics.BootstrapConfig(unit="eye"))
    # binomial sd sqrt(.75 .25 / 100) = 0.043: the 95% interval is about 0.75 +- 0.085
    assert ci.estimate == 0.75 and 0.65 < ci.low < 0.69 and 0.81 < ci.high < 0.85
    y = np.r_[np.zeros(50), np.ones(50)]
    score = np.r_[np.linspace(0, 0.4, 50), np.linspace(0.6, 1.0, 50)]
    threshold = metrics.youden_threshold(y, score)
    assert 0.4 < threshold <= 0.6 and ((score >= threshold) == y).all()


def test_dunn_z_by_hand_and_p_values_against_scikit_posthocs():
    # No ties: ranks are the values; N = 9, rank variance N(N+1)/12 = 7.5, mean ranks 2, 5, 8,
    # z(A, B) = (2 - 5) / sqrt(7.5 (1/3 + 1/3)) = -3 / sqrt(5).
    table = stats.dunn_test([1, 2, 3, 4, 5, 6, 7, 8, 9], list("AAABBBCCC"))
    z = dict(zip(zip(table["group_a"], table["group_b"]), table["z"]))
    assert z[("A", "B")] == pytest.approx(-3 / np.sqrt(5))
    assert z[("A", "C")] == pytest.approx(-6 / np.sqrt(5))
    p = 2 * sps.norm.sf(3 / np.sqrt(5))
    assert table["p_unadjusted"].iloc[0] == pytest.approx(p)
    assert table["p_adjusted"].iloc[0] == pytest.approx(min(1, 3 * p))

    rng = np.random.default_rng(2)  # with ties (values rounded), unequal groups
    frame = pd.DataFrame({"value": np.round(np.r_[rng.normal(0, 1, 40), rng.normal(0.5, 1, 30),
                                                   rng.normal(1, 1, 25), rng.normal(0.2, 1, 12)], 1),
                          "group": np.repeat(["h", "g", "p", "q"], [40, 30, 25, 12])})
    for adjust, name in (("none", None), ("bonferroni", "bonferroni")):
        ours = stats.dunn_test(frame["value"], frame["group"], adjust=adjust)
        theirs = scikit_posthocs.posthoc_dunn(frame, val_col="value", group_col="group", p_adjust=name)
        for row in ours.itertuples():
            assert row.p_adjusted == pytest.approx(theirs.loc[row.group_a, row.group_b], rel=1e-9)


def test_ancova_equals_nested_least_squares():
    rng = np.random.default_rng(3)
    n = 300
    group = rng.choice(["healthy", "glaucoma", "ptg"], n, p=[0.45, 0.45, 0.1])
    age = rng.uniform(40, 70, n)
    effect = {"healthy": 0.0, "glaucoma": -0.4, "ptg": 0.0}
    fvc = 4.5 - 0.03 * age + np.vectorize(effect.get)(group) + rng.normal(0, 0.5, n)
    frame = pd.DataFrame({"fvc": fvc, "group": group, "age": age})
    result = stats.ancova(frame, "fvc", "group", "age", reference="healthy")

    def rss(columns):
        x = np.column_stack([np.ones(n), *columns])
        beta = np.linalg.lstsq(x, fvc, rcond=None)[0]
        return float(((fvc - x @ beta) ** 2).sum()), x.shape[1]

    dummies = [(group == g).astype(float) for g in ("glaucoma", "ptg")]
    full, p_full = rss([*dummies, age])
    reduced, _ = rss([age])
    f = ((reduced - full) / 2) / (full / (n - p_full))
    assert result["f"] == pytest.approx(f) and result["df_group"] == 2 and result["df_residual"] == n - 4
    assert result["p"] == pytest.approx(sps.f.sf(f, 2, n - 4))
    glaucoma = result["effects"]["glaucoma"]
    assert glaucoma["ci_low"] < -0.4 < glaucoma["ci_high"]  # the generated effect is recovered
