"""Cohort rules on hand-built participants; subject-level splits; glaucoma-cohort's failures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scilens import cli
from scilens.glaucoma import cohort
from scilens.glaucoma.splits import SplitConfig, SplitError, assign_splits
from scilens.io import ukb
from tests.glaucoma.conftest import PARTICIPANTS


@pytest.fixture(scope="module")
def hand_visits(tmp_path_factory) -> pd.DataFrame:
    from tests.glaucoma.conftest import hand_built_export

    path = tmp_path_factory.mktemp("hand") / "export.csv"
    hand_built_export().to_csv(path, index=False)
    return ukb.read_export_pandas([path], ukb.load_field_map())


def _outcome(rows: pd.DataFrame) -> dict[int, str]:
    """eid -> 'label eyes' or the exclusion reason, as PARTICIPANTS states them."""
    out = {}
    for eid, mine in rows.groupby("eid"):
        eyes = mine[mine["kind"] == "eye"]
        out[int(eid)] = (f"{eyes['label'].iloc[0]} {'+'.join(eyes['eye'])}" if len(eyes)
                         else mine["reason"].iloc[0])
    return out


def test_each_rule_lands_its_participant(hand_visits):
    rows = cohort.select_rows(hand_visits, cohort.CohortRules())
    assert _outcome(rows) == {eid: expected for eid, (expected, _, _) in PARTICIPANTS.items()}
    # the PTG eye's features come from the visit before diagnosis, its post row from the diagnosis visit
    ptg = rows[rows["eid"] == 1006].set_index("kind")
    assert ptg.loc["eye", "visit"] == 0 and ptg.loc["eye", "fvc"] == 3.4
    assert ptg.loc["ptg_post", "visit"] == 1 and ptg.loc["ptg_post", "fvc"] == 2.9
    left = rows[(rows["eid"] == 1001) & (rows["eye"] == "left")].iloc[0]
    assert left["iop"] == 16.5 and left["corneal_hysteresis"] == 10.3  # the left eye's own measures


def test_rules_are_configurable(hand_visits):
    lenient = cohort.CohortRules(max_logmar=0.5, exclude_hospital_diagnoses=False, require_eye_measures=False)
    outcome = _outcome(cohort.select_rows(hand_visits, lenient))
    assert outcome[1004] == "healthy right+left"
    assert outcome[1005] == "healthy right+left"
    assert outcome[1011] == "healthy right+left"


def test_spark_selection_equals_pandas(spark, hand_visits):
    visits = spark.createDataFrame(hand_visits, ukb.visit_schema(ukb.load_field_map()))
    ours = cohort.select_cohort(visits, cohort.CohortRules(), buckets=3).toPandas()
    reference = cohort.select_rows(hand_visits, cohort.CohortRules())
    key = ["eid", "kind", "eye"]
    ours = ours.sort_values(key, na_position="first").reset_index(drop=True)
    reference = reference.sort_values(key, na_position="first").reset_index(drop=True)
    assert list(ours.columns) == list(reference.columns) and len(ours) == len(reference) == 15
    for column in reference.columns:
        a, b = reference[column], ours[column]
        if column in ("eid", "visit") or a.dtype.kind == "f":
            assert np.allclose(a.astype(float), b.astype(float), equal_nan=True), column
        else:
            assert a.where(a.notna(), None).tolist() == b.where(b.notna(), None).tolist(), column


def _eye_table(n_subjects: int, seed: int) -> pd.DataFrame:
    """Subjects with one or two eyes, half glaucoma, plus PTG subjects."""
    rng = np.random.default_rng(seed)
    rows = []
    for eid in range(n_subjects):
        label = "glaucoma" if eid % 2 else "healthy"
        label = "ptg" if eid % 10 == 0 else label
        for eye in (("right", "left") if rng.random() < 0.6 else (("right",) if rng.random() < 0.5 else ("left",))):
            rows.append((eid, eye, label))
    return pd.DataFrame(rows, columns=["eid", "eye", "label"])


def test_splits_keep_subjects_whole_and_hit_the_sizes():
    eyes = _eye_table(600, seed=1)
    split = assign_splits(eyes, SplitConfig())
    assert split.groupby(eyes["eid"]).nunique().max() == 1          # no subject in two splits
    test = eyes[split == "test"]
    assert (test["label"] == "glaucoma").sum() == 50 and (test["label"] == "healthy").sum() == 50
    assert (split == "validation").sum() == 170
    assert set(split[eyes["label"] == "ptg"]) == {"ptg"} and "ptg" not in set(split[eyes["label"] != "ptg"])
    assert split.equals(assign_splits(eyes, SplitConfig()))                  # deterministic
    assert not split.equals(assign_splits(eyes, SplitConfig(seed=1)))


def test_impossible_splits_name_the_counts():
    eyes = _eye_table(120, seed=2)
    n_glaucoma = int((eyes["label"] == "glaucoma").sum())
    with pytest.raises(SplitError, match=f"needs {n_glaucoma} glaucoma eyes .* the cohort has {n_glaucoma} glaucoma"):
        assign_splits(eyes, SplitConfig(test_eyes_per_class=n_glaucoma))
    left = int(eyes["label"].isin(["glaucoma", "healthy"]).sum()) - 120
    with pytest.raises(SplitError, match=f"validation split needs 170 eyes .* but {left} eyes are left"):
        assign_splits(eyes, SplitConfig(test_eyes_per_class=60))
    both = pd.DataFrame({"eid": np.repeat(np.arange(80), 2), "eye": ["right", "left"] * 80,
                         "label": np.repeat(["glaucoma", "healthy"], 80)})
    with pytest.raises(SplitError, match="cannot put exactly 5 test glaucoma eyes in one split"):
        assign_splits(both, SplitConfig(test_eyes_per_class=5, validation_eyes=10))
    # A subject whose eyes have two classes is named by eid; its diagnoses (participant data) are not printed.
    mixed = both.copy()
    mixed.loc[1, "label"] = "ptg"
    with pytest.raises(SplitError, match=r"^subject 0 has eyes of 2 different classes; a subject must") as raised:
        assign_splits(mixed, SplitConfig())
    assert "glaucoma" not in str(raised.value) and "ptg" not in str(raised.value)


def test_cohort_job_fails_cleanly_when_splits_cannot_be_made(spark, hand_export, tmp_path):
    # 3 glaucoma eyes cannot fill a test split of 50 (the message is checked above): exit 1, nothing written
    out = tmp_path / "cohort"
    assert cli.main(["glaucoma-cohort", "--input", str(hand_export), "--output", str(out)]) == 1
    assert not out.exists() and not list(tmp_path.glob(".cohort*"))
