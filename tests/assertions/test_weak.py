"""Weak labels from identifier consistency: equal to a pandas reference, and mostly right on a synthetic cohort."""

from __future__ import annotations

import numpy as np
import pandas as pd

from scilens.assertions.weak import propose_labels


def _reference(frame: pd.DataFrame) -> pd.DataFrame:
    out = []
    for _, rows in frame.dropna(subset=["predicted"]).groupby("eye"):
        counts = rows["predicted"].value_counts()
        top = counts[counts == counts.max()]
        if len(top) > 1:
            continue  # a tie: no majority
        for r in rows[rows["predicted"] != top.index[0]].itertuples():
            out.append((r.eye, r.scan, r.predicted, top.index[0], counts.max() / len(rows)))
    return pd.DataFrame(out, columns=["eye", "scan", "predicted", "proposed", "support"])


def test_proposals_equal_the_reference_and_recover_the_truth(spark):
    rng = np.random.default_rng(4)
    eyes, scans = 300, 9
    truth = rng.integers(0, 2, eyes)
    # A weak per-scan model: right 80% of the time; a few scans without an output.
    correct = rng.random((eyes, scans)) < 0.8
    predicted = np.where(correct, truth[:, None], 1 - truth[:, None]).astype(float)
    predicted[rng.random((eyes, scans)) < 0.03] = np.nan
    frame = pd.DataFrame({"eye": np.repeat(np.arange(eyes), scans), "scan": np.tile(np.arange(scans), eyes),
                          "predicted": predicted.ravel()})
    got = propose_labels(spark.createDataFrame(frame), "eye", "predicted", ["eye", "scan"]).toPandas()
    want = _reference(frame)
    cols = ["eye", "scan"]
    got, want = got.sort_values(cols).reset_index(drop=True), want.sort_values(cols).reset_index(drop=True)
    pd.testing.assert_frame_equal(got[want.columns], want, check_dtype=False)
    # The proposals fix the weak model's wrong scans: almost all of them are the eye's true label.
    accuracy = float((got["proposed"].to_numpy() == truth[got["eye"].to_numpy()]).mean())
    assert len(got) > 0.15 * eyes * scans and accuracy > 0.97


COHORT_EYES, COHORT_SCANS = 200, 8
COHORT_RETINA = dict(n_scans=COHORT_SCANS, oct_height=48, oct_width=64, fundus_size=32, misaligned_fraction=0.0,
                     thinning_glaucoma=0.6)
"""Small OCT volumes of the synthetic cohort's eyes; glaucoma thins the RNFL/GCL by 0.6 at the superior and
inferior edges (0.45 is the default; the glaucoma imaging tests use 0.8) and, by ``thinning_weight``, by 0.3
of that at the central scans, so a per-scan model errs mostly there."""


def _cohort_scans():
    """Per-scan outputs of a per-scan model on the synthetic glaucoma cohort's held-out eyes, with their truth.

    The eyes and their diagnoses are the synthetic UK Biobank model's (``sample_eyes``: half glaucoma); each
    eye's OCT volume is rendered from its diagnosis (``render_eye``). The per-scan model is a logistic
    regression on a B-scan's mean depth profile (log intensity averaged across the lateral axis: where the
    inner layers thin, the bright RNFL band narrows), fitted on the scans of half the eyes.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from scilens.synth import retina, ukb

    eyes = ukb.sample_eyes(COHORT_EYES, seed=3)
    config = retina.RetinaSynthConfig(**COHORT_RETINA)
    profiles = np.stack([np.log1p(retina.render_eye(int(e.eid), e.eye, "glaucoma" if e.label else "healthy",
                                                    config)[0].astype(np.float64)).mean(axis=2)
                         for e in eyes.itertuples()])  # (eyes, scans, depth)
    truth = eyes["label"].to_numpy()
    train = np.arange(len(eyes)) < len(eyes) // 2
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)).fit(
        profiles[train].reshape(-1, profiles.shape[2]), np.repeat(truth[train], COHORT_SCANS))
    test = eyes[~train]
    predicted = model.predict(profiles[~train].reshape(-1, profiles.shape[2]))
    return pd.DataFrame({"eid": np.repeat(test["eid"].to_numpy(), COHORT_SCANS),
                         "eye": np.repeat(test["eye"].to_numpy(), COHORT_SCANS),
                         "scan": np.tile(np.arange(COHORT_SCANS), len(test)),
                         "predicted": predicted.astype(np.int64),
                         "truth": np.repeat(truth[~train], COHORT_SCANS)})


def test_weak_labels_where_an_eye_disagrees_beat_the_per_scan_model_on_the_synthetic_cohort(spark):
    """Where the per-eye consistency assertion fires, the eye's majority is proposed for its minority scans.

    For two classes the proposal on a disagreeing scan is the opposite of that scan's own call, so the two
    accuracies on those scans sum to 1, and the proposals help exactly when they are right more than half
    the time. Bound: the one-sided 99% Clopper-Pearson lower bound of the proposals' accuracy exceeds 1/2
    (the proposals beat the per-scan model on the scans they relabel, beyond chance); an assertion that
    proposed the minority, or a model without signal, fails it.
    """
    from scipy import stats

    from scilens.assertions import Checker, IdentifierConsistencyAssertion

    scans = _cohort_scans()
    frame = spark.createDataFrame(scans)
    key, eye = ["eid", "eye", "scan"], ["eid", "eye"]
    checker = Checker(key=key)
    checker.register(IdentifierConsistencyAssertion(eye, "predicted", name="an eye's B-scans agree"))
    result = checker.run(frame)
    flags = result.severities.toPandas()
    result.unpersist()
    proposals = propose_labels(frame, eye, "predicted", key).toPandas().merge(scans, on=[*key, "predicted"])
    # The assertion fires on every scan of a disagreeing eye; its minority (severity > 1/2, the share of the
    # eye disagreeing with the scan) are the scans given a proposal.
    minority = {(int(k["eid"]), k["eye"], int(k["scan"])) for k, s in zip(flags["key"].map(dict), flags["severity"],
                                                                        strict=True) if s > 0.5}
    assert set(zip(proposals["eid"], proposals["eye"], proposals["scan"], strict=True)) == minority
    right = int((proposals["proposed"] == proposals["truth"]).sum())
    n = len(proposals)
    accuracy = right / n
    model_there = float((proposals["predicted"] == proposals["truth"]).mean())
    model_overall = float((scans["predicted"] == scans["truth"]).mean())
    lower = float(stats.beta.ppf(0.01, right, n - right + 1))
    print(f"\nweak labels on the synthetic cohort: {n} of {len(scans)} scans relabelled; proposals right "
          f"{accuracy:.3f} (99% lower bound {lower:.3f}); the per-scan model on those scans {model_there:.3f}, "
          f"on all scans {model_overall:.3f}")
    assert n >= 0.05 * len(scans)
    assert lower > 0.5 and accuracy > model_there
