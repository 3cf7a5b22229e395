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
