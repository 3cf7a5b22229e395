"""A synthetic UK Biobank cohort for the glaucoma study, in the showcase export format.

UK Biobank data cannot be had here, so :func:`simulate` draws participants from a documented
generating model and :func:`export_frame` writes them the way a showcase export does (``eid``
and ``<field>-<instance>.<array>`` columns, the field ids of ``conf/ukb_fields.yaml``, special
codes, missing values). :func:`write_cohort` writes the export with the truth next to it:
``truth.json`` (the model's coefficients) and ``truth.parquet`` (each participant's latent
state). At the default size (96,020 participants, ~65,000 with eye measurements) the
``glaucoma-cohort`` selection lands near the dissertation's groups (glaucoma 863 subjects /
1193 eyes, healthy 771 / 1283 after control sampling, progress-to-glaucoma 55 / 98).

Generating model (participant *i*, eye *e*, visit *v*; ages in years, IOP in mmHg)
-----------------------------------------------------------------------------------
* **Visits.** Baseline (instance 0) for everyone at age ~ U(40, 70); the repeat visit
  (instance 1) for 22% at +4.5 +- 1 y; the imaging visit (instance 2) for 16% at +7.5 +- 1.5 y.
  Eye measurements (IOP, corneal hysteresis and resistance factor, logMAR) at baseline for 67.7%
  and at the repeat visit for 85% of those who attend, none at instance 2 (as in the
  dissertation: "ocular measurements were only available for the first two visits"); an
  examined eye has a reading with probability 0.8.
* **Body.** 45.6% male; UK Biobank's ethnic mix (94% white). BMI log-normal around 27 kg/m2.
  FVC (L) = 4.35 (men) / 3.15 (women) - 0.030 (age - 55) - 0.5 (Black) + person effect, PEF
  (L/min) = 540 / 380 - 2.8 (age - 55) + a person effect correlated 0.6 with FVC's; three blows
  with 0.12 L / 25 L/min noise. Pulse, blood pressure (age, BMI, sex; +2.5 beats/min after
  caffeine, +3 mmHg systolic after smoking in the last hour), diabetes (age, BMI, sex).
* **Eyes.** Untreated IOP = 15.6 + 0.04 (age - 55) + 0.03 (SBP - 136 - 5 male) + person effect
  (sd 2.6) + eye effect (sd 1.6), rising 0.04 per year; each reading adds sd 1.0 noise. Sex does
  not move IOP, so it is no risk factor, directly or through IOP, and FVC (which differs by sex)
  is not confounded with glaucoma beyond age.
  CH and CRF depend weakly on age and IOP; logMAR ~ 0 +- 0.1, 5% of eyes with poor vision.
* **Glaucoma.** A person's liability L = alpha + beta_age (age0 - 55)/10 + beta_iop (mean untreated
  IOP - 15.6)/4 + beta_bmi (BMI - 27)/5 + beta_black Black + u, u ~ N(0, sigma_u). Diagnosed before
  baseline with probability logistic(L); otherwise diagnosed after an exponential time with rate
  lambda0 exp(L - alpha - (1 - incidence_age) beta_age (age0 - 55)/10) per year: the
  progress-to-glaucoma (PTG) group, healthy at baseline, younger, untreated and so with higher IOP
  than treated glaucoma. Both eyes are affected with probability 0.55, else one, more often the
  one with the higher IOP. Age and IOP are the strongest risk
  factors (see :class:`GlaucomaModel`); sex, diabetes, FVC, PEF, CH and CRF carry no risk.
* **Treatment** starts at diagnosis: IOP of a diagnosed eye x 0.88; FVC - 0.50 L and PEF
  - 60 L/min (topical beta-blockers; :class:`GlaucomaModel` holds the values), so *diagnosed*
  glaucoma has lower FVC while PTG before diagnosis looks healthy, and falls after
  (dissertation Fig. 3.7, Tables 3.2-3.3).
* **Answers.** Field 6148 at each visit lists glaucoma once diagnosed (a diagnosed person
  forgets it at a later visit with probability 0.05), cataract (age, 2.7x more with glaucoma),
  macular degeneration, diabetic eye disease (10% of diabetics), injury, other conditions, or
  -7 "none"; "do not know" (0.5%) and "prefer not to answer" (0.2%). Field 6119 names the
  diagnosed eyes. About half have an ICD-10 code in their hospital record (41270).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["FIELDS", "GlaucomaModel", "Simulation", "export_frame", "sample_eyes", "simulate", "truth_frame",
           "write_cohort"]

N_PARTICIPANTS = 96_020
"""The size of the dissertation's 2017 snapshot."""

VISITS = 3

FIELDS: dict[str, int | tuple[int, int]] = {
    "age": 21003, "sex": 31, "ethnicity": 21000, "bmi": 21001, "fvc": 3062, "pef": 3064, "pulse_rate": 102,
    "diastolic_bp": 4079, "systolic_bp": 4080, "diabetes": 2443, "caffeine": 3089, "nicotine": 3159,
    "iop": (5255, 5263), "corneal_hysteresis": (5256, 5264), "corneal_resistance_factor": (5257, 5265),
    "visual_acuity_logmar": (5201, 5208), "eye_problems": 6148, "glaucoma_eyes": 6119, "hospital_icd10": 41270,
}
"""Feature -> field id ((right, left) per eye), as in ``conf/ukb_fields.yaml``."""

_ETHNICITY = {1001: 0.880, 1002: 0.027, 1003: 0.033, 2001: 0.002, 2002: 0.001, 2003: 0.002, 2004: 0.002,
              3001: 0.010, 3002: 0.003, 3003: 0.001, 3004: 0.004, 4001: 0.008, 4002: 0.006, 4003: 0.001,
              5: 0.003, 6: 0.009, -1: 0.002, -3: 0.006}
_ICD10 = ["I10", "E119", "K573", "M171", "J459", "N390", "K219", "Z864", "R074", "K801", "I251", "M545",
          "D649", "E780", "N179", "H251", "L039", "C443", "S7200", "J181"]


@dataclass(frozen=True)
class GlaucomaModel:
    """The coefficients of the generating model (module doc); written to ``truth.json``."""

    alpha: float = -7.02
    """Log-odds of diagnosed glaucoma at baseline at age 55, mean IOP 15.6, BMI 27, non-Black, u = 0."""
    beta_age: float = 1.0
    """Log-odds per decade of age at baseline."""
    beta_iop: float = 3.0
    """Log-odds per 4 mmHg of the mean untreated IOP of the two eyes."""
    beta_bmi: float = 0.4
    """Log-odds per 5 kg/m2 of BMI."""
    beta_black: float = 0.7
    """Log-odds for Black ethnicity."""
    sigma_u: float = 1.0
    """Sd of the unobserved person effect u."""
    incidence: float = 0.000042
    """lambda0: diagnoses per person-year after baseline at the reference liability."""
    incidence_age: float = 0.3
    """Share of the age effect (beta_age) acting on incidence after baseline: new diagnoses are younger."""
    bilateral: float = 0.55
    """Probability both eyes are affected; otherwise the eye with the higher IOP is more likely."""
    treated_iop_factor: float = 0.88
    """IOP of a treated eye relative to untreated."""
    treated_fvc_drop: float = 0.50
    """FVC fall (L) once treated."""
    treated_pef_drop: float = 60.0
    """PEF fall (L/min) once treated."""
    forget_glaucoma: float = 0.05
    """Probability a diagnosed person does not report glaucoma at a follow-up visit."""

    @property
    def risk_factors(self) -> list[str]:
        """Generating risk factors, strongest first by log-odds per population sd."""
        per_sd = {"iop": self.beta_iop / 4 * 3.5, "age": self.beta_age / 10 * 8.7, "bmi": self.beta_bmi / 5 * 4.4}
        return sorted(per_sd, key=per_sd.__getitem__, reverse=True)


@dataclass
class Simulation:
    """Everything drawn for a cohort: per-participant arrays (n,), per-visit (n, 3), per-eye (n, 3, 2)."""

    model: GlaucomaModel
    seed: int
    eid: np.ndarray
    arrays: dict[str, np.ndarray]


def _logistic(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def simulate(n_participants: int = N_PARTICIPANTS, seed: int = 0, model: GlaucomaModel | None = None) -> Simulation:
    """Draw a cohort from the generating model (deterministic by ``seed``)."""
    model = model or GlaucomaModel()
    rng = np.random.default_rng(seed)
    n = n_participants
    a: dict[str, np.ndarray] = {}

    # visits: times in years after baseline; NaN = did not attend
    t = np.full((n, VISITS), np.nan)
    t[:, 0] = 0.0
    t[:, 1] = np.where(rng.random(n) < 0.22, 4.5 + rng.uniform(-1, 1, n), np.nan)
    t[:, 2] = np.where(rng.random(n) < 0.16, 7.5 + rng.uniform(-1.5, 1.5, n), np.nan)
    a["time"] = t
    age0 = rng.uniform(40, 70, n)
    age = age0[:, None] + t
    a["age"] = age
    male = rng.random(n) < 0.456
    a["male"] = male
    codes = np.array(list(_ETHNICITY))
    probs = np.array(list(_ETHNICITY.values()))
    a["ethnicity"] = rng.choice(codes, n, p=probs / probs.sum())
    black = (a["ethnicity"] >= 4000) & (a["ethnicity"] < 5000)

    bmi0 = np.exp(rng.normal(np.log(27.0), 0.16, n))
    bmi = bmi0[:, None] + 0.05 * t + rng.normal(0, 0.5, (n, VISITS))
    a["bmi"] = bmi

    # eye exams and per-eye readings
    exam = np.zeros((n, VISITS), bool)
    exam[:, 0] = rng.random(n) < 0.677
    exam[:, 1] = ~np.isnan(t[:, 1]) & (rng.random(n) < 0.85)
    measured = exam[:, :, None] & (rng.random((n, VISITS, 2)) < 0.8)
    a["eye_measured"] = measured

    caffeine = rng.random((n, VISITS)) < 0.30
    nicotine = rng.random((n, VISITS)) < 0.07
    a["caffeine"], a["nicotine"] = caffeine, nicotine
    sbp_person = 136 + 0.6 * (age0 - 55) + 0.9 * (bmi0 - 27) + 5 * male + rng.normal(0, 15, n)
    a["systolic_bp"] = (sbp_person[:, None] + 0.6 * t + 3 * nicotine + rng.normal(0, 6, (n, VISITS)))
    dbp_person = 82 + 0.45 * (bmi0 - 27) + 3 * male - 0.1 * (age0 - 55) + rng.normal(0, 8, n)
    a["diastolic_bp"] = dbp_person[:, None] + 1.5 * nicotine + rng.normal(0, 4, (n, VISITS))
    a["pulse_rate"] = (69 + rng.normal(0, 10, n))[:, None] + 2.5 * caffeine + rng.normal(0, 4, (n, VISITS))
    diabetes0 = rng.random(n) < _logistic(-3.4 + 0.06 * (age0 - 55) + 0.12 * (bmi0 - 27) + 0.3 * male)
    diabetes_onset = np.where(diabetes0, -1.0, rng.exponential(1 / 0.006, n))
    a["diabetes"] = diabetes_onset[:, None] <= t

    # untreated IOP per eye, its drift, and the corneal measures
    # IOP follows blood pressure beyond what sex explains, so sex is no risk factor, directly or via IOP
    iop0 = (15.6 + 0.04 * (age0 - 55) + 0.03 * (sbp_person - 136 - 5 * male))[:, None] \
        + rng.normal(0, 2.6, n)[:, None] + rng.normal(0, 1.6, (n, 2))
    a["iop_untreated"] = iop0

    # glaucoma: a person's liability, diagnosis before baseline or after an exponential time;
    # both eyes, or the eye with the higher pressure more often
    u = rng.normal(0, model.sigma_u, n)
    liability = (model.alpha + model.beta_age * (age0 - 55) / 10 + model.beta_iop * (iop0.mean(axis=1) - 15.6) / 4
                 + model.beta_bmi * (bmi0 - 27) / 5 + model.beta_black * black + u)
    prevalent = rng.random(n) < _logistic(liability)
    incidence_rate = model.incidence * np.exp(liability - model.alpha
                                              - (1 - model.incidence_age) * model.beta_age * (age0 - 55) / 10)
    onset = np.where(prevalent, -1.0, rng.exponential(1.0 / incidence_rate))
    bilateral = rng.random(n) < model.bilateral
    right_first = rng.random(n) < _logistic(model.beta_iop * (iop0[:, 0] - iop0[:, 1]) / 4)
    affected = np.column_stack([bilateral | right_first, bilateral | ~right_first])
    a["liability"], a["diagnosed_at"], a["affected"] = liability, onset, affected
    person_dx = onset[:, None] <= np.where(np.isnan(t), -np.inf, t)  # (n, visit); False where no visit
    eye_dx = person_dx[:, :, None] & affected[:, None, :]  # (n, visit, eye)
    a["eye_diagnosed"], a["person_diagnosed"] = eye_dx, person_dx

    # readings: treatment lowers IOP in diagnosed eyes, FVC and PEF in diagnosed people
    iop_true = iop0[:, None, :] + 0.04 * t[:, :, None]
    iop = np.where(eye_dx, iop_true * model.treated_iop_factor, iop_true) + rng.normal(0, 1.0, (n, VISITS, 2))
    a["iop_reading"] = iop
    a["iop"] = np.where(measured, iop, np.nan)
    ch = (10.6 - 0.03 * (age0 - 55))[:, None, None] - 0.08 * (iop_true - 15.6) \
        + rng.normal(0, 1.3, n)[:, None, None] + rng.normal(0, 0.7, (n, VISITS, 2))
    crf = 10.7 + 0.15 * (iop - 15.6) + rng.normal(0, 1.2, n)[:, None, None] + rng.normal(0, 0.6, (n, VISITS, 2))
    a["ch_reading"], a["crf_reading"] = ch, crf
    a["corneal_hysteresis"] = np.where(measured, ch, np.nan)
    a["corneal_resistance_factor"] = np.where(measured, crf, np.nan)
    poor = rng.random((n, 2)) < 0.05
    logmar = rng.normal(-0.05, 0.08, (n, VISITS, 2)) + 0.004 * (age - 55)[:, :, None] \
        + np.where(poor, rng.uniform(0.2, 1.0, (n, 2)), 0.0)[:, None, :]
    a["visual_acuity_logmar"] = np.where(exam[:, :, None], np.round(logmar, 2), np.nan)

    z_lung = rng.normal(0, 1, n)
    fvc_person = np.where(male, 4.35, 3.15) - 0.5 * black + np.where(male, 0.65, 0.5) * z_lung
    pef_person = np.where(male, 540, 380) + np.where(male, 95, 70) * (0.6 * z_lung + 0.8 * rng.normal(0, 1, n))
    a["fvc_true"] = fvc_person[:, None] - 0.030 * (age - 55) - model.treated_fvc_drop * person_dx
    a["pef_true"] = pef_person[:, None] - 2.8 * (age - 55) - model.treated_pef_drop * person_dx

    # answers to field 6148 per visit: glaucoma (remembered), other conditions, no answer
    cataract_onset = np.where(
        rng.random(n) < _logistic(-4.3 + 0.1 * (age0 - 55) + 1.0 * person_dx[:, 0]), -1.0,
        rng.exponential(1 / 0.004, n))
    amd_onset = np.where(rng.random(n) < _logistic(-6.0 + 0.12 * (age0 - 55)), -1.0, rng.exponential(1 / 0.001, n))
    diabetic_eye = rng.random(n) < 0.10
    injury = np.where(rng.random(n) < 0.005, -1.0, rng.exponential(1 / 0.0004, n))
    other = np.where(rng.random(n) < 0.012, -1.0, rng.exponential(1 / 0.001, n))
    tt = np.where(np.isnan(t), -np.inf, t)  # no visit, nothing reported
    a["report_cataract"] = cataract_onset[:, None] <= tt
    a["report_amd"] = amd_onset[:, None] <= tt
    a["report_diabetic_eye"] = diabetic_eye[:, None] & a["diabetes"]
    a["report_injury"] = injury[:, None] <= tt
    a["report_other"] = other[:, None] <= tt
    forget = (rng.random((n, VISITS)) < model.forget_glaucoma) & (np.arange(VISITS) > 0)
    a["report_glaucoma"] = person_dx & ~forget
    no_answer = rng.random((n, VISITS))
    a["answer_special"] = np.where(no_answer < 0.005, -1, np.where(no_answer < 0.007, -3, 0))
    a["hospital_codes"] = np.where(
        rng.random(n) < _logistic(-0.2 + 0.04 * (age0 - 55) + 0.5 * diabetes0), rng.integers(1, 9, n), 0)
    return Simulation(model, seed, np.arange(1_000_001, 1_000_001 + n, dtype=np.int64), a)


def _column(field_id: int, instance: int, array: int = 0) -> str:
    return f"{field_id}-{instance}.{array}"


def _fmt(values: np.ndarray, decimals: int) -> np.ndarray:
    """Numbers as export text: NaN -> empty, whole numbers without a decimal point."""
    values = values.astype(float)
    missing = np.isnan(values)
    rounded = np.round(np.where(missing, 0.0, values), decimals)
    out = rounded.astype(np.int64).astype(str) if decimals == 0 else rounded.astype(str)
    return np.where(missing, "", out)


def export_frame(sim: Simulation) -> pd.DataFrame:
    """The simulation as a showcase export: one row per participant, text columns, '' for missing."""
    a = sim.arrays
    rng = np.random.default_rng(sim.seed + 1)
    n = len(sim.eid)
    attended = ~np.isnan(a["time"])
    cols: dict[str, np.ndarray] = {"eid": sim.eid.astype(str)}
    cols[_column(31, 0)] = a["male"].astype(int).astype(str)
    for v in range(VISITS):
        here = attended[:, v]
        cols[_column(21003, v)] = np.where(here, _fmt(np.floor(a["age"][:, v]), 0), "")
        cols[_column(21000, v)] = np.where(here & (v == 0 or rng.random(n) < 0.5), a["ethnicity"].astype(str), "")
        cols[_column(21001, v)] = np.where(here & (rng.random(n) > 0.015), _fmt(a["bmi"][:, v], 4), "")
        spiro = here & (rng.random(n) > 0.12)
        blows = rng.integers(1, 4, n)
        for k in range(3):
            ok = spiro & (blows > k)
            cols[_column(3062, v, k)] = np.where(ok, _fmt(a["fvc_true"][:, v] + rng.normal(0, 0.12, n), 3), "")
            cols[_column(3064, v, k)] = np.where(ok, _fmt(a["pef_true"][:, v] + rng.normal(0, 25, n), 0), "")
        bp = here & (rng.random(n) > 0.02)
        for k in range(2):
            cols[_column(102, v, k)] = np.where(bp, _fmt(a["pulse_rate"][:, v] + rng.normal(0, 2, n), 0), "")
            cols[_column(4079, v, k)] = np.where(bp, _fmt(a["diastolic_bp"][:, v] + rng.normal(0, 3, n), 0), "")
            cols[_column(4080, v, k)] = np.where(bp, _fmt(a["systolic_bp"][:, v] + rng.normal(0, 4, n), 0), "")
        special = rng.random(n)
        diabetes = np.where(special < 0.004, "-1", np.where(special < 0.005, "-3", a["diabetes"][:, v].astype(int)
                                                             .astype(str)))
        cols[_column(2443, v)] = np.where(here, diabetes, "")
        cols[_column(3089, v)] = np.where(bp, np.where(rng.random(n) < 0.001, "-3",
                                                       a["caffeine"][:, v].astype(int).astype(str)), "")
        cols[_column(3159, v)] = np.where(bp, a["nicotine"][:, v].astype(int).astype(str), "")
        for feature in ("iop", "corneal_hysteresis", "corneal_resistance_factor", "visual_acuity_logmar"):
            per_eye = FIELDS[feature]
            if not isinstance(per_eye, tuple):
                raise TypeError(f"{feature} is a per-eye feature: FIELDS holds its (right, left) field ids")
            for e, field_id in enumerate(per_eye):
                cols[_column(field_id, v)] = _fmt(a[feature][:, v, e], 2)
        # field 6148: up to 5 answers, or -7, or a special code alone
        answers = [(1, a["report_diabetic_eye"][:, v]), (2, a["report_glaucoma"][:, v]),
                   (3, a["report_injury"][:, v]), (4, a["report_cataract"][:, v]), (5, a["report_amd"][:, v]),
                   (6, a["report_other"][:, v])]
        slots = [np.full(n, "", dtype=object) for _ in range(5)]
        filled = np.zeros(n, int)
        for code, says in answers:
            put = here & says & (filled < 5) & (a["answer_special"][:, v] == 0)
            for k in range(5):
                slots[k] = np.where(put & (filled == k), str(code), slots[k])
            filled += put
        nothing = here & (filled == 0)
        slots[0] = np.where(nothing, np.where(a["answer_special"][:, v] != 0, a["answer_special"][:, v].astype(str),
                                              "-7"), slots[0])
        for k in range(5):
            cols[_column(6148, v, k)] = slots[k]
        said = here & a["report_glaucoma"][:, v] & (a["answer_special"][:, v] == 0)
        eyes = a["eye_diagnosed"][:, v]
        which = np.where(eyes[:, 0] & eyes[:, 1], "3", np.where(eyes[:, 0], "1", "2"))
        which = np.where(rng.random(n) < 0.02, "-1", which)
        cols[_column(6119, v)] = np.where(said, which, "")
    n_codes = a["hospital_codes"]
    picks = rng.integers(0, len(_ICD10), (n, 8))
    for k in range(8):
        cols[_column(41270, 0, k)] = np.where(n_codes > k, np.array(_ICD10)[picks[:, k]], "")
    return pd.DataFrame(cols)


def truth_frame(sim: Simulation) -> pd.DataFrame:
    """Each participant's latent state: what the cohort selection and models should recover."""
    a = sim.arrays
    out = {"eid": sim.eid, "male": a["male"], "ethnicity": a["ethnicity"]}
    for v in range(VISITS):
        out[f"time_{v}"] = a["time"][:, v]
        out[f"age_{v}"] = a["age"][:, v]
        out[f"glaucoma_{v}"] = a["person_diagnosed"][:, v]
    out["liability"] = a["liability"]
    out["diagnosed_at"] = a["diagnosed_at"]
    for e, eye in enumerate(("right", "left")):
        out[f"iop_untreated_{eye}"] = a["iop_untreated"][:, e]
        out[f"affected_{eye}"] = a["affected"][:, e]
    return pd.DataFrame(out)


def truth_document(sim: Simulation) -> dict[str, Any]:
    """``truth.json``: the generating model's coefficients and what they mean."""
    model = sim.model
    return {
        "generator": "scilens.synth.ukb", "seed": sim.seed, "participants": len(sim.eid),
        "model": dataclasses.asdict(model),
        "risk_factors_strongest_first": model.risk_factors,
        "no_risk": ["sex", "diabetes", "fvc", "pef", "corneal_hysteresis", "corneal_resistance_factor",
                    "pulse_rate", "diastolic_bp", "caffeine", "nicotine"],
        "treatment_effects": {"iop_factor": model.treated_iop_factor, "fvc_l": -model.treated_fvc_drop,
                              "pef_l_per_min": -model.treated_pef_drop},
        "liability": "alpha + beta_age (age0 - 55)/10 + beta_iop (mean untreated iop - 15.6)/4 + beta_bmi (bmi - 27)/5 "
                     "+ beta_black black + u, u ~ N(0, sigma_u); P(diagnosed before baseline) = logistic(liability); "
                     "later diagnosis at rate incidence * exp(liability - alpha - (1 - incidence_age) beta_age "
                     "(age0 - 55)/10) per year; both eyes with probability bilateral, else one eye, right with "
                     "logistic(beta_iop (iop_right - iop_left)/4)",
        "fields": dict(FIELDS),
        "documented_in": "scilens.synth.ukb (module docstring)",
    }


def write_cohort(root: str | Path, n_participants: int = N_PARTICIPANTS, seed: int = 0,
                 model: GlaucomaModel | None = None, file_format: str = "csv") -> Path:
    """Write ``ukb_export.<csv|parquet>``, ``truth.json`` and ``truth.parquet`` under ``root``; return the export."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    sim = simulate(n_participants, seed, model)
    export = export_frame(sim)
    if file_format == "csv":
        path = root / "ukb_export.csv"
        export.to_csv(path, index=False)
    elif file_format == "parquet":
        path = root / "ukb_export.parquet"
        export.to_parquet(path, index=False)
    else:
        raise ValueError(f"file_format {file_format!r}: choose csv or parquet")
    (root / "truth.json").write_text(json.dumps(truth_document(sim), indent=2) + "\n")
    truth_frame(sim).to_parquet(root / "truth.parquet", index=False)
    return path


def sample_eyes(n_eyes: int, seed: int = 0, model: GlaucomaModel | None = None) -> pd.DataFrame:
    """An eye-level feature table straight from the model (no export), half glaucoma, half healthy.

    For benchmarks at sizes no cohort selection gives: eyes diagnosed at baseline (``label``
    1, with treated readings) and eyes of people without glaucoma at baseline (``label`` 0),
    with the features of ``eyes.parquet`` at baseline and every eye measured. Prevalence is
    raised (alpha + 3) so few draws are needed; the other coefficients hold.
    """
    model = model or GlaucomaModel()
    enriched = dataclasses.replace(model, alpha=model.alpha + 3.0)
    half = n_eyes // 2
    positives: list[pd.DataFrame] = []
    negatives: list[pd.DataFrame] = []
    n_pos = n_neg = 0
    draw = 0
    while n_pos < half or n_neg < n_eyes - half:
        sim = simulate(max(n_eyes // 2, 1000), seed * 1000 + draw, enriched)
        a = sim.arrays
        ethnicity = np.where(a["ethnicity"] >= 1000, a["ethnicity"] // 1000, a["ethnicity"]).astype(float)
        for e, eye in enumerate(("right", "left")):
            frame = pd.DataFrame({
                "eid": sim.eid + draw * 10**8, "eye": eye, "age": np.floor(a["age"][:, 0]),
                "sex": a["male"].astype(float), "ethnicity": np.where(ethnicity < 0, np.nan, ethnicity),
                "bmi": a["bmi"][:, 0], "fvc": a["fvc_true"][:, 0], "pef": a["pef_true"][:, 0],
                "pulse_rate": a["pulse_rate"][:, 0], "diastolic_bp": a["diastolic_bp"][:, 0],
                "systolic_bp": a["systolic_bp"][:, 0], "diabetes": a["diabetes"][:, 0].astype(float),
                "caffeine": a["caffeine"][:, 0].astype(float), "nicotine": a["nicotine"][:, 0].astype(float),
                "iop": a["iop_reading"][:, 0, e], "corneal_hysteresis": a["ch_reading"][:, 0, e],
                "corneal_resistance_factor": a["crf_reading"][:, 0, e],
                "label": a["eye_diagnosed"][:, 0, e].astype(int)})
            positives.append(frame[frame["label"] == 1])
            negatives.append(frame[~a["person_diagnosed"][:, 0]])
            n_pos += len(positives[-1])
            n_neg += len(negatives[-1])
        draw += 1
    out = pd.concat([pd.concat(positives).head(half), pd.concat(negatives).head(n_eyes - half)])
    return out.sample(frac=1.0, random_state=seed).reset_index(drop=True)
