"""Fixtures of the glaucoma tests: a hand-built export (one participant per cohort rule) and a
synthetic cohort run through glaucoma-cohort, glaucoma-clinical and glaucoma-stats once."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from scilens import cli
from scilens.synth import ukb as synth

# Visit-level defaults of a participant who is measured and healthy; rows override them.
_VISIT = {"21003": "60", "21001": "27.5", "3062": ["3.1", "3.4", ""], "3064": ["400", "420", "410"],
          "102": ["70", "72"], "4079": ["80", "84"], "4080": ["120", "130"], "2443": "0", "3089": "1", "3159": "0",
          "5255": "15.5", "5263": "16.5", "5256": "10.1", "5264": "10.3", "5257": "10.0", "5265": "10.4",
          "5201": "0.0", "5208": "0.1", "6148": ["-7"], "6119": ""}

# eid -> (what the rules must conclude, participant fields, {visit: overrides})
PARTICIPANTS: dict[int, tuple[str, dict, dict[int, dict]]] = {
    1001: ("glaucoma right+left", {}, {0: {"6148": ["2"], "6119": "3"}, 1: {"6148": ["2"], "6119": "3"}}),
    1002: ("glaucoma left", {}, {0: {"6148": ["2"], "6119": "2"}}),
    1003: ("healthy right+left", {}, {0: {}, 1: {"21003": "64", "5255": "", "5263": ""}}),
    1004: ("poor_visual_acuity", {}, {0: {"5201": "0.3"}}),
    1005: ("hospital_diagnosis", {"41270": ["I10", "K573"]}, {0: {}}),
    1006: ("ptg right", {}, {0: {}, 1: {"6148": ["2"], "6119": "1", "3062": ["2.9", "", ""]}}),
    1007: ("other_condition", {}, {0: {"6148": ["2", "4"], "6119": "3"}}),
    1008: ("no_answer_code", {}, {0: {"6148": ["-1"]}}),
    1009: ("inconsistent", {}, {0: {"6148": ["2"], "6119": "3"}, 1: {"6148": ["-7"]}}),
    1010: ("which_eye_unknown", {}, {0: {"6148": ["2"], "6119": "-3"}}),
    1011: ("no_eye_measures", {"21000": "-3"}, {0: {"5255": "", "5263": "", "2443": "-3"}}),
    1012: ("no_eye_answer", {}, {0: {"6148": [""]}}),
}


def hand_built_export(participants: dict = PARTICIPANTS) -> pd.DataFrame:
    """The export of :data:`PARTICIPANTS`: text columns named ``<field>-<instance>.<array>``."""
    rows = []
    for eid, (_, person, visits) in participants.items():
        row = {"eid": str(eid), "31-0.0": "1" if eid % 2 else "0", "21000-0.0": person.get("21000", "1001")}
        for k, code in enumerate(person.get("41270", [])):
            row[f"41270-0.{k}"] = code
        for visit, overrides in visits.items():
            for fid, value in {**_VISIT, **overrides}.items():
                for k, v in enumerate(value if isinstance(value, list) else [value]):
                    row[f"{fid}-{visit}.{k}"] = v
        rows.append(row)
    frame = pd.DataFrame(rows).fillna("")
    for fid in ("41270-0.0", "41270-0.1"):
        if fid not in frame:
            frame[fid] = ""
    return frame


@pytest.fixture
def hand_export(tmp_path) -> Path:
    path = tmp_path / "ukb_hand.csv"
    hand_built_export().to_csv(path, index=False)
    return path


# A cohort small enough for the tests: glaucoma e^3.2 ~ 25x as common, PTG incidence x30, so
# 8,000 participants give ~370 glaucoma and ~370 healthy subjects and ~40 PTG subjects.
TEST_MODEL = dataclasses.replace(synth.GlaucomaModel(), alpha=synth.GlaucomaModel().alpha + 3.2,
                                 incidence=synth.GlaucomaModel().incidence * 30)
TEST_PARTICIPANTS = 8000
TEST_SEED = 11


@pytest.fixture(scope="session")
def synthetic_export(tmp_path_factory) -> Path:
    return synth.write_cohort(tmp_path_factory.mktemp("ukb"), TEST_PARTICIPANTS, TEST_SEED, TEST_MODEL)


@pytest.fixture(scope="session")
def glaucoma_run(spark, synthetic_export, tmp_path_factory) -> dict[str, Path]:
    """glaucoma-cohort, glaucoma-clinical and glaucoma-stats on the synthetic export, once per session."""
    root = tmp_path_factory.mktemp("glaucoma")
    out = {"export": synthetic_export, "cohort": root / "cohort", "clinical": root / "clinical",
           "stats": root / "stats", "root": root}
    assert cli.main(["glaucoma-cohort", "--input", str(synthetic_export), "--output", str(out["cohort"]),
                     "--set", "healthy_per_glaucoma=1.0", "--set", "splits.test_eyes_per_class=100"]) == 0
    # 600 rounds at the paper's learning rate (early stopping needs ~3000): the ranking of the models
    # is settled, at a fifth of the time; SHAP interactions (~16x SHAP's cost) for 40 eyes.
    assert cli.main(["glaucoma-clinical", "--input", str(out["cohort"]), "--output", str(out["clinical"]),
                     "--set", "xgb.n_estimators=600", "--set", "shap_splits=[validation,test]",
                     "--set", "interaction_eyes=40"]) == 0
    assert cli.main(["glaucoma-stats", "--input", str(out["cohort"]), "--output", str(out["stats"])]) == 0
    return out
