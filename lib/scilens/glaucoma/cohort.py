"""The glaucoma study's cohort: classes, exclusion rules and eye rows (dissertation Ch. 3 §3.2).

From the UK Biobank visit table (:mod:`scilens.io.ukb`), every participant gets one
:class:`Decision` by :func:`classify_participant`:

* **glaucoma** -- reports glaucoma (field 6148) at their first answered visit and at every
  later answered visit;
* **healthy** -- reports no eye condition (6148 = -7) at every answered visit, visual acuity no
  worse than 20/30 (logMAR <= 0.176) in either eye whenever recorded, and no hospital inpatient
  diagnosis (field 41270);
* **ptg** (progress to glaucoma) -- no eye condition at the first answered visit, glaucoma at a
  later one and at every answered visit after it;

and is excluded (with a reason from :data:`REASONS`) for: never answering 6148; answering "do
not know" or "prefer not to answer" at any visit; any other eye condition (diabetic eye
disease, injury, cataract, macular degeneration, other serious condition) at any visit;
answers that change back; glaucoma eyes not stated (field 6119).

Eyes: a glaucoma participant's eyes named in 6119 at their first visit, a PTG participant's at
the visit of diagnosis, both eyes of a healthy participant. The features come from the first
answered visit (for PTG: before diagnosis); with ``require_eye_measures`` an eye without an IOP
reading at that visit is dropped (the stand-in for "the eye was examined"), and a participant
left without eyes is excluded. PTG eyes also get a row at the diagnosis visit (``ptg_post``)
for the group statistics.

:func:`select_rows` applies all this to a batch of participants (pure pandas);
:func:`select_cohort` maps it over a Spark visit table. :func:`draw_controls`,
:func:`split_eyes`, :func:`exclusions_table` and :func:`counts_table` make the
``glaucoma-cohort`` outputs from the selected rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from scilens.core.config import Config, field
from scilens.core.inputs import InputError
from scilens.glaucoma.features import EYE_FEATURES, eye_features

__all__ = ["COHORT_SCHEMA", "EYE_COLUMNS", "LABELS", "REASONS", "CohortRules", "Decision", "classify_participant",
           "counts_table", "draw_controls", "exclusions_table", "eyes_table", "kept_eye_rows", "ptg_post_rows",
           "sample_controls", "select_cohort", "select_rows", "split_eyes"]

LABELS = ("glaucoma", "healthy", "ptg")

REASONS = {
    "no_eye_answer": "never answered the eye-problems question (field 6148)",
    "no_answer_code": "answered 'do not know' or 'prefer not to answer' about eye problems (field 6148)",
    "other_condition": "reported an eye condition other than glaucoma (field 6148)",
    "inconsistent": "answers change back across visits (glaucoma, then not)",
    "which_eye_unknown": "which eye has glaucoma not stated, 'do not know' or 'prefer not to answer' (field 6119)",
    "poor_visual_acuity": "healthy, but visual acuity worse than 20/30 in an eye (fields 5201/5208)",
    "hospital_diagnosis": "healthy, but with a hospital inpatient diagnosis (field 41270)",
    "no_eye_measures": "no IOP reading for the selected eye(s) at the visit used (fields 5255/5263)",
    "not_sampled": "eligible healthy control not drawn (healthy_per_glaucoma)",
}
"""Exclusion reason code -> what it means."""

GLAUCOMA_CODE = 2
NONE_CODE = -7
_WHICH_EYES = {1: ("right",), 2: ("left",), 3: ("right", "left")}


@dataclass
class CohortRules(Config):
    """Rules of the cohort selection."""

    max_logmar: float = field(0.176, "Healthy eyes must see at least this well (logMAR; 20/30 = 0.176) "
                              "wherever visual acuity was recorded.", min=-0.5, max=3.0)
    other_conditions: list[int] = field([1, 3, 4, 5, 6], "Codes of field 6148 that are eye conditions other "
                                        "than glaucoma (1 diabetic eye disease, 3 injury, 4 cataract, 5 macular "
                                        "degeneration, 6 other serious).")
    exclude_hospital_diagnoses: bool = field(True, "Exclude healthy participants with any ICD-10 code in their "
                                             "hospital inpatient record (field 41270).")
    require_eye_measures: bool = field(True, "Keep an eye only if its IOP was measured at the visit used.")


class Visit(NamedTuple):
    """What the rules need from one visit."""

    visit: int
    problems: tuple[int, ...] | None
    which_eyes: int | None
    logmar: tuple[float, float]
    iop_measured: tuple[bool, bool]


class Decision(NamedTuple):
    """A participant's class (or exclusion reason), visits used and eyes."""

    label: str | None
    reason: str | None
    visit: int | None = None
    diagnosis_visit: int | None = None
    eyes: tuple[str, ...] = ()


def classify_participant(visits: Sequence[Visit], hospital_diagnosis: bool, rules: CohortRules) -> Decision:
    """Apply the cohort rules to one participant's visits (any order)."""
    answered = sorted((v for v in visits if v.problems), key=lambda v: v.visit)
    if not answered:
        return Decision(None, "no_eye_answer")
    answers = [v.problems or () for v in answered]  # every one non-empty: answered keeps only those
    if any(code in (-1, -3) for problems in answers for code in problems):
        return Decision(None, "no_answer_code")
    others = set(rules.other_conditions)
    if any(code in others for problems in answers for code in problems):
        return Decision(None, "other_condition")
    glaucoma = [GLAUCOMA_CODE in problems for problems in answers]
    first = answered[0]
    if glaucoma[0]:
        if not all(glaucoma):
            return Decision(None, "inconsistent")
        label, eyes_visit = "glaucoma", first
    elif any(glaucoma):
        onset = glaucoma.index(True)
        if not all(glaucoma[onset:]):
            return Decision(None, "inconsistent")
        label, eyes_visit = "ptg", answered[onset]
    else:
        label, eyes_visit = "healthy", first
    if label == "healthy":
        worst = [x for v in visits for x in v.logmar if x is not None and not np.isnan(x)]
        if worst and max(worst) > rules.max_logmar:
            return Decision(None, "poor_visual_acuity")
        if rules.exclude_hospital_diagnoses and hospital_diagnosis:
            return Decision(None, "hospital_diagnosis")
        eyes: tuple[str, ...] = ("right", "left")
    else:
        eyes = _WHICH_EYES.get(eyes_visit.which_eyes if eyes_visit.which_eyes is not None else 0, ())
        if not eyes:
            return Decision(None, "which_eye_unknown")
    if rules.require_eye_measures:
        measured = dict(zip(("right", "left"), first.iop_measured))
        eyes = tuple(e for e in eyes if measured[e])
        if not eyes:
            return Decision(None, "no_eye_measures")
    diagnosis = eyes_visit.visit if label == "ptg" else None
    return Decision(label, None, first.visit, diagnosis, eyes)


COHORT_SCHEMA = T.StructType([
    T.StructField("eid", T.LongType(), False),
    T.StructField("kind", T.StringType(), False),   # eye | ptg_post | excluded
    T.StructField("eye", T.StringType()),
    T.StructField("label", T.StringType()),
    T.StructField("visit", T.IntegerType()),
    T.StructField("reason", T.StringType()),
    *[T.StructField(name, T.DoubleType()) for name in EYE_FEATURES],
])
"""Rows of :func:`select_rows`: one per selected eye (``eye``), per PTG eye at diagnosis
(``ptg_post``) and per excluded participant (``excluded``, with ``reason``)."""

EYE_COLUMNS = ["eid", "eye", "label", "split", "visit", *EYE_FEATURES]
"""Columns of ``eyes.parquet`` and ``ptg_post.parquet``, in order."""

_SPLIT_SCHEMA = T.StructType([T.StructField("eid", T.LongType()), T.StructField("eye", T.StringType()),
                              T.StructField("split", T.StringType())])


def _tuple(value: Any) -> tuple[int, ...] | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return tuple(int(v) for v in value)


def _optional_int(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def select_rows(visits: pd.DataFrame, rules: CohortRules) -> pd.DataFrame:
    """Classify every participant in ``visits`` and build their cohort rows (:data:`COHORT_SCHEMA`).

    ``visits`` holds whole participants (all their visit rows) of the visit table.
    """
    visits = visits.reset_index(drop=True)
    if visits.empty:
        return pd.DataFrame({name: pd.Series(dtype=object) for name in COHORT_SCHEMA.names})
    iop_right, iop_left = visits["iop_right"].notna().to_numpy(), visits["iop_left"].notna().to_numpy()
    hospital = visits["hospital_icd10"].map(lambda v: v is not None and len(v) > 0 if not isinstance(v, float)
                                            else False).to_numpy()
    records = [Visit(int(v), _tuple(p), _optional_int(w), (lr, ll), (bool(ir), bool(il)))
               for v, p, w, lr, ll, ir, il in zip(visits["visit"], visits["eye_problems"], visits["glaucoma_eyes"],
                                                 visits["visual_acuity_logmar_right"],
                                                 visits["visual_acuity_logmar_left"], iop_right, iop_left)]
    row_of: dict[tuple[int, int], int] = {}
    members: dict[int, list[int]] = {}
    for i, (eid, visit) in enumerate(zip(visits["eid"].to_numpy(), visits["visit"].to_numpy())):
        row_of[(int(eid), int(visit))] = i
        members.setdefault(int(eid), []).append(i)
    picks: list[tuple[int, int, str, str, str]] = []  # (eid, visit row, eye, label, kind)
    excluded: list[tuple[int, str | None]] = []
    for eid, rows in members.items():
        decision = classify_participant([records[i] for i in rows], bool(hospital[rows].any()), rules)
        if decision.label is None or decision.visit is None:  # a class always comes with the visit used
            excluded.append((eid, decision.reason))
            continue
        for eye in decision.eyes:
            picks.append((eid, row_of[(eid, decision.visit)], eye, decision.label, "eye"))
            if decision.diagnosis_visit is not None:
                picks.append((eid, row_of[(eid, decision.diagnosis_visit)], eye, decision.label, "ptg_post"))
    frames = []
    if picks:
        eids, picked_rows, eyes, labels, kinds = zip(*picks)
        chosen = visits.iloc[list(picked_rows)].reset_index(drop=True)
        eye_series = pd.Series(eyes)
        frame = pd.DataFrame({"eid": np.asarray(eids, dtype=np.int64), "kind": kinds, "eye": eyes, "label": labels,
                              "visit": chosen["visit"].astype("int32"), "reason": None})
        frames.append(pd.concat([frame, eye_features(chosen, eye_series)], axis=1))
    if excluded:
        eids, reasons = zip(*excluded)
        frames.append(pd.DataFrame({"eid": np.asarray(eids, dtype=np.int64), "kind": "excluded", "eye": None,
                                    "label": None, "visit": None, "reason": reasons}))
    out = pd.concat(frames, ignore_index=True)
    for name in EYE_FEATURES:
        if name not in out:
            out[name] = np.nan
    out["visit"] = out["visit"].astype("Int32")
    return out[COHORT_SCHEMA.names]


def select_cohort(visits: DataFrame, rules: CohortRules, buckets: int = 16) -> DataFrame:
    """:func:`select_rows` over a Spark visit table; participants are grouped into ``buckets`` batches."""
    keyed = visits.withColumn("_bucket", F.pmod(F.xxhash64("eid"), F.lit(buckets)))

    def select(batch: pd.DataFrame) -> pd.DataFrame:
        return select_rows(batch.drop(columns="_bucket"), rules)

    return keyed.groupBy("_bucket").applyInPandas(select, COHORT_SCHEMA)


def sample_controls(eids: Sequence[int], n: int, seed: int) -> set[int]:
    """``n`` of ``eids`` drawn without replacement, the same for the same ids and seed."""
    pool = np.sort(np.unique(np.asarray(eids, dtype=np.int64)))
    if n >= len(pool):
        return set(pool.tolist())
    rng = np.random.default_rng(seed)
    return set(rng.choice(pool, size=n, replace=False).tolist())


def eyes_table(path: str | Path) -> Path:
    """The ``eyes.parquet`` that ``path`` names: the table, or the glaucoma-cohort output directory holding it."""
    found = Path(str(path).removeprefix("file://"))
    if found.is_dir() and (found / "eyes.parquet").exists():
        found = found / "eyes.parquet"
    if not found.exists() or (found.is_dir() and not (found / "_SUCCESS").exists()):
        raise InputError(f"{path}: no eyes.parquet there (run scilens glaucoma-cohort first)")
    return found


def draw_controls(eligible: pd.DataFrame, n_glaucoma: int, per_glaucoma: float | None,
                  seed: int) -> tuple[set[int], list[int], np.ndarray]:
    """Draw the healthy controls: ``per_glaucoma`` healthy subjects per glaucoma subject, at random.

    Parameters
    ----------
    eligible
        One row per selected eye: ``eid``, ``label``.
    n_glaucoma
        Glaucoma subjects.
    per_glaucoma
        Healthy subjects drawn per glaucoma subject; None keeps every healthy subject.
    seed
        Seed of the draw (:func:`sample_controls`).

    Returns
    -------
    drawn : set of int
        The healthy subjects kept.
    not_drawn : list of int
        The healthy subjects left out, sorted.
    kept : numpy.ndarray
        Every subject kept (all glaucoma and PTG subjects, the drawn healthy ones).
    """
    healthy = eligible.loc[eligible["label"] == "healthy", "eid"].unique()
    if per_glaucoma is None:
        drawn = set(healthy.tolist())
    else:
        drawn = sample_controls(healthy, round(per_glaucoma * n_glaucoma), seed)
    not_drawn = sorted(set(healthy.tolist()) - drawn)
    kept = eligible[(eligible["label"] != "healthy") | eligible["eid"].isin(drawn)]["eid"].unique()
    return drawn, not_drawn, kept


def kept_eye_rows(spark: SparkSession, rows: DataFrame, kept: np.ndarray) -> DataFrame:
    """The eye rows (``kind`` = ``eye``) of :func:`select_cohort` whose subject is in ``kept``."""
    kept_frame = spark.createDataFrame(pd.DataFrame({"eid": kept.astype("int64")}))
    return rows.where(F.col("kind") == "eye").join(F.broadcast(kept_frame), "eid")


def split_eyes(spark: SparkSession, eye_rows: DataFrame, split_keys: pd.DataFrame) -> DataFrame:
    """The rows of ``eyes.parquet``: ``eye_rows`` with their ``split`` (``split_keys``), :data:`EYE_COLUMNS`."""
    split_frame = spark.createDataFrame(split_keys[["eid", "eye", "split"]], _SPLIT_SCHEMA)
    return eye_rows.join(F.broadcast(split_frame), ["eid", "eye"]).select(*EYE_COLUMNS).orderBy("eid", "eye")


def ptg_post_rows(rows: DataFrame) -> DataFrame:
    """The rows of ``ptg_post.parquet``: PTG eyes at the diagnosis visit, ``split`` = ``ptg_post``."""
    return (rows.where(F.col("kind") == "ptg_post").withColumn("split", F.lit("ptg_post"))
            .select(*EYE_COLUMNS).orderBy("eid", "eye"))


def exclusions_table(keys: pd.DataFrame, not_drawn: Sequence[int]) -> pd.DataFrame:
    """``exclusions.parquet``: ``eid`` and ``reason`` of every excluded subject and every control not drawn."""
    excluded = keys.loc[keys["kind"] == "excluded", ["eid", "reason"]]
    excluded = pd.concat([excluded, pd.DataFrame({"eid": not_drawn, "reason": "not_sampled"})],
                         ignore_index=True).sort_values("eid")
    excluded["eid"] = excluded["eid"].astype("int64")
    return excluded


def counts_table(eyes: pd.DataFrame, exclusions: pd.DataFrame) -> pd.DataFrame:
    """Subjects and eyes per class (and eyes per split), then exclusions per reason, as the paper reports.

    Parameters
    ----------
    eyes
        One row per eye: ``eid``, ``label``, ``split``.
    exclusions
        :func:`exclusions_table`.

    Returns
    -------
    pandas.DataFrame
        ``counts.csv``: ``group``, ``subjects``, ``eyes``, ``eyes_<split>``, ``note``.
    """
    rows = []
    for label in LABELS:
        mine = eyes[eyes["label"] == label]
        row = {"group": label, "subjects": mine["eid"].nunique(), "eyes": len(mine)}
        for split in ("train", "validation", "test", "ptg"):
            row[f"eyes_{split}"] = int((mine["split"] == split).sum())
        rows.append(row)
    for reason, n in exclusions["reason"].value_counts().sort_index().items():
        rows.append({"group": f"excluded: {reason}", "subjects": int(n),
                     "eyes": None, "note": REASONS.get(str(reason), "")})
    return pd.DataFrame(rows)
