"""The assert job with the built-in glaucoma set: each assertion fires on its injected fault and nowhere else."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from scilens import cli

EYES_PER_SIDE, SCANS = 40, 16
JUMP, FLIP, SWAP, ODD_PERSON, MISLABELLED = (1001, "left"), (1002, "right"), (1039, "left"), 1004, (1035, "left")
FAULTY = {JUMP[0], FLIP[0], SWAP[0], ODD_PERSON, MISLABELLED[0]}


def _outputs(root):
    """glaucoma-infer-like tables with one injected fault per assertion (and a smooth, consistent rest)."""
    rng = np.random.default_rng(0)
    scans, photos = [], []
    for k in range(EYES_PER_SIDE):
        eid = 1000 + k
        label = "glaucoma" if k % 2 else "healthy"
        # A person's two eyes sit close in the cohort; glaucoma eyes high, healthy eyes low.
        level = (0.65 if label == "glaucoma" else 0.2) + 0.1 * k / EYES_PER_SIDE
        for eye in ("left", "right"):
            p_eye = level + (0.005 if eye == "right" else 0.0)
            if eid == ODD_PERSON and eye == "right":
                p_eye = 0.95  # its left eye is at the bottom of the cohort
            if (eid, eye) == MISLABELLED:
                p_eye = 0.9  # labelled healthy, looks like glaucoma to the OCT model
            for visit in (0, 1):
                p_visit = 1 - p_eye if ((eid, eye) == FLIP and visit == 1) else p_eye
                curve = p_visit + 0.01 * np.sin(np.arange(SCANS) / 3) + rng.normal(0, 0.002, SCANS)
                if (eid, eye) == JUMP and visit == 0:
                    curve[7] += 0.3  # one B-scan out of line (a misaligned volume)
                # The faulty eyes are not training eyes: the learned assertion's trusted rows are clean.
                split = "train" if k < 30 and eid not in FAULTY else "test"
                scans += [(eid, eye, visit, label if (eid, eye) != MISLABELLED else "healthy", split, s, float(c))
                          for s, c in enumerate(curve)]
                cfp = p_visit if (eid, eye) != SWAP else 0.05  # the top of the cohort by OCT, the bottom by fundus
                photos.append((eid, eye, visit, label, split, float(cfp)))
    cols = ["eid", "eye", "visit", "label", "split"]
    pd.DataFrame(scans, columns=[*cols, "scan", "probability"]).to_parquet(root / "oct_predictions.parquet")
    pd.DataFrame(photos, columns=[*cols, "probability"]).to_parquet(root / "cfp_predictions.parquet")
    return root


@pytest.fixture(scope="module")
def run(spark, tmp_path_factory):
    root = _outputs(tmp_path_factory.mktemp("infer"))
    out = root / "assert"
    assert cli.main(["assert", "--input", str(root), "--output", str(out), "--set", "assertions=glaucoma"]) == 0
    flags = pd.read_parquet(out / "severity.parquet")
    flags["key"] = flags["key"].map(dict)
    return out, flags


def _flagged(flags, assertion, *columns):
    keys = flags.loc[flags["assertion"] == assertion, "key"]
    return {tuple(type_(k[c]) for c, type_ in columns) for k in keys}


def test_each_assertion_fires_on_its_fault_only(run):
    out, flags = run
    eye = (("eid", int), ("eye", str))
    assert _flagged(flags, "neighbouring B-scans agree", *eye) == {JUMP}
    assert {int(k["scan"]) for k in flags.loc[flags.assertion == "neighbouring B-scans agree", "key"]} == {6, 7}
    assert _flagged(flags, "an eye's OCT call is the same at every visit", *eye) == {FLIP}
    assert _flagged(flags, "OCT and fundus models rank the eye alike", *eye) == {SWAP}
    # The odd person at both visits, and the flipped eye's person at the visit where it flipped.
    assert _flagged(flags, "both eyes of a person are plausible together", ("eid", int), ("visit", int)) == {
        (ODD_PERSON, 0), (ODD_PERSON, 1), (FLIP[0], 1)}
    # The learned density scores every labelled eye. Least likely for their label: the mislabelled eye, and
    # the two healthy-labelled eyes whose OCT output looks glaucomatous (the odd person's right eye, and the
    # flipped eye at its second visit).
    learned = flags[flags.assertion == "OCT probability likely for the label"]
    eyes = learned.assign(eye=[(int(k["eid"]), k["eye"]) for k in learned["key"]]).groupby("eye")["severity"].max()
    assert set(eyes.sort_values(ascending=False).index[:3]) == {MISLABELLED, (ODD_PERSON, "right"), FLIP}
    counts = json.loads((out / "counts.json").read_text())
    assert counts["scans: neighbouring B-scans agree"] == 2


def test_report_ranks_the_faulty_eyes_first(run):
    out, _ = run
    top = pd.read_csv(out / "top.csv")
    assert {(int(r.eid), r.eye) for r in top.head(3).itertuples()} <= {JUMP, FLIP, SWAP, MISLABELLED, (1004, "right")}
    assert (out / "top.png").stat().st_size > 0 and "top.png" in (out / "report.html").read_text()


def test_bad_sets_are_named(spark, tmp_path, job_log):
    root = _outputs(tmp_path)
    assert cli.main(["assert", "--input", str(root), "--output", str(tmp_path / "o1"),
                     "--set", "assertions=nosuchset"]) != 0
    assert any("no built-in set of that name" in line for line in job_log)
    bad = tmp_path / "bad.yaml"
    bad.write_text("tables: {t: {sql: SELECT * FROM oct, key: [eid]}}\nviews: {oct: oct_predictions.parquet}\n"
                   "assertions: [{kind: identifier, table: t, identifier: [eid], attribute: eye, windw: 3}]\n")
    assert cli.main(["assert", "--input", str(root), "--output", str(tmp_path / "o2"),
                     "--set", f"assertions={bad}"]) != 0
    assert any("identifier assertions take no windw" in line for line in job_log)
    bad.write_text("tables: {t: {sql: SELECT * FROM oct, key: [eid]}}\nviews: {oct: missing.parquet}\n"
                   "assertions: [{kind: identifier, table: t, identifier: [eid], attribute: nosuchcolumn}]\n")
    assert cli.main(["assert", "--input", str(root), "--output", str(tmp_path / "o3"),
                     "--set", f"assertions={bad}"]) != 0
    assert any("missing.parquet, which does not exist" in line for line in job_log)


def test_diagnosis_set_on_embeddings_ranks_the_model_errors_first(spark, tmp_path):
    """Latent clusters per class; 20 items predicted as another class, far from its centroid, unsure."""
    rng = np.random.default_rng(1)
    n, classes, dim = 600, 3, 8
    label = rng.integers(0, classes, n)
    centres = rng.normal(0, 5, (classes, dim))
    latent = centres[label] + rng.normal(0, 1, (n, dim))
    prediction = label.copy()
    wrong = rng.choice(n, 20, replace=False)
    prediction[wrong] = (label[wrong] + 1) % classes
    logits = np.where(np.arange(classes)[None, :] == prediction[:, None], 4.0, 0.0) + rng.normal(0, 0.3, (n, 3))
    logits[wrong] = rng.normal(0, 0.3, (len(wrong), classes))  # unsure
    logits[wrong, prediction[wrong]] += 0.5
    pd.DataFrame({"id": np.arange(n), "label": label, "prediction": prediction, "correct": label == prediction,
                  "latent": list(latent.astype(np.float32)), "logits": list(logits.astype(np.float32))}
                 ).to_parquet(tmp_path / "embeddings.parquet")
    out = tmp_path / "assert"
    assert cli.main(["assert", "--input", str(tmp_path), "--output", str(out), "--set", "assertions=diagnosis",
                     "--set", "top=20"]) == 0
    top = pd.read_csv(out / "top.csv")
    assert len(top) == 20 and len(set(top["id"]) & set(wrong.tolist())) >= 18


def test_astro_set_flags_the_implausible_sources(spark, tmp_path):
    rng = np.random.default_rng(2)
    n = 300
    flux = rng.lognormal(3, 1, n)
    catalog = pd.DataFrame({"id": np.arange(n), "tract": 0, "patch": rng.integers(0, 4, n), "ra": 0.0, "dec": 0.0,
                            "x": 0.0, "y": 0.0, "flux": flux, "flux_err": flux / 20, "snr": 20.0,
                            "npix": (10 * np.sqrt(flux)).astype(np.int64) + 5, "flags": 0})
    catalog.loc[[3, 4], "flux"] = [-1.0, 0.0]
    catalog.loc[[10, 11, 12], "npix"] = [1, 2, 4]  # cosmic-ray-like footprints
    catalog.loc[[20], "flags"] = 4
    catalog.to_parquet(tmp_path / "catalog.parquet")
    out = tmp_path / "assert"
    assert cli.main(["assert", "--input", str(tmp_path), "--output", str(out), "--set", "assertions=astro"]) == 0
    flags = pd.read_parquet(out / "severity.parquet")
    ids = {a: sorted(int(dict(k)["id"]) for k in flags.loc[flags.assertion == a, "key"]) for a in set(flags.assertion)}
    assert ids["positive flux"] == [3, 4] and ids["footprint of at least 5 pixels"] == [10, 11, 12]
    assert ids["no masked pixel in the footprint"] == [20]
