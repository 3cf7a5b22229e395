"""The clinical features of the glaucoma models and how visit rows become them.

``BM1`` (demographics), ``BM2`` (+ systemic) and ``BM3`` (+ ocular) are the dissertation's
baseline models (Ch. 3 §3.2); :data:`BASELINE_MODELS` maps their names to the lists. Every
name is a column of ``eyes.parquet`` (written by ``scilens glaucoma-cohort``), numeric, with
NaN where unknown (XGBoost treats NaN as missing):

=============================  =================================================================
``age``                        years at the visit used (field 21003)
``sex``                        1 male, 0 female (31)
``ethnicity``                  top-level group of field 21000: 1 White, 2 Mixed, 3 Asian, 4 Black,
                               5 Chinese, 6 Other
``bmi``                        kg/m2 (21001)
``fvc``, ``pef``               best blow: litres, litres/min (3062, 3064)
``pulse_rate``                 beats/min, mean of the readings (102)
``diastolic_bp``,              mmHg, mean of the readings (4079, 4080)
``systolic_bp``
``diabetes``                   1 if diagnosed by a doctor (2443)
``caffeine``, ``nicotine``     1 if a caffeine drink / a cigarette or pipe within the last hour (3089, 3159)
``iop``                        Goldmann-correlated IOP of that eye, mmHg (5255 right / 5263 left)
``corneal_hysteresis``,        mmHg, that eye (5256 / 5264, 5257 / 5265)
``corneal_resistance_factor``
``visual_acuity_logmar``       that eye (5201 / 5208); a cohort rule, not a model feature
=============================  =================================================================
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

__all__ = ["BASELINE_MODELS", "BM1", "BM2", "BM3", "CFP_FEATURE", "EYE_FEATURES", "PER_EYE", "SCAN_PREFIX",
           "eye_features", "image_features"]

BM1: list[str] = ["age", "sex", "ethnicity"]
"""Demographics."""
BM2: list[str] = [*BM1, "bmi", "fvc", "pef", "pulse_rate", "diastolic_bp", "systolic_bp", "diabetes",
                  "caffeine", "nicotine"]
"""BM1 plus systemic (cardiovascular, pulmonary, diabetes) and transient (caffeine, nicotine) features."""
BM3: list[str] = [*BM2, "iop", "corneal_hysteresis", "corneal_resistance_factor"]
"""BM2 plus ocular features of the eye."""
BASELINE_MODELS: dict[str, list[str]] = {"BM1": BM1, "BM2": BM2, "BM3": BM3}

PER_EYE = ("iop", "corneal_hysteresis", "corneal_resistance_factor", "visual_acuity_logmar")
"""Features measured per eye (``<name>_right`` / ``<name>_left`` in the visit table)."""
EYE_FEATURES: list[str] = [*BM3, "visual_acuity_logmar"]
"""Feature columns of ``eyes.parquet``, in order."""

SCAN_PREFIX = "p_oct_scan_"
"""Prefix of the final model's OCT features: ``p_oct_scan_###``, one probability per scan position."""
CFP_FEATURE = "p_cfp"
"""The final model's fundus feature: the probability of the eye's fundus photo."""

_YES_NO = ("diabetes", "caffeine", "nicotine")


def image_features(columns: Iterable[str]) -> list[str]:
    """The image probability columns among ``columns``: the OCT scans in order, then the fundus photo.

    Parameters
    ----------
    columns
        Columns of glaucoma-infer's ``retina_vectors.parquet``.

    Returns
    -------
    list of str
        The ``p_oct_scan_###`` columns sorted, then ``p_cfp`` if present.
    """
    columns = list(columns)
    names = sorted(c for c in columns if c.startswith(SCAN_PREFIX))
    if CFP_FEATURE in columns:
        names.append(CFP_FEATURE)
    return names


def _code(values: pd.Series) -> pd.Series:
    """A UK Biobank code column as float, special (negative) codes as NaN."""
    out = pd.to_numeric(values, errors="coerce").astype(float)
    return out.where(out >= 0)


def eye_features(visits: pd.DataFrame, eye: pd.Series) -> pd.DataFrame:
    """Model features of eye rows.

    Parameters
    ----------
    visits : DataFrame
        Visit-table rows (one per eye row; the visit whose values are used).
    eye : Series
        ``"right"`` or ``"left"`` per row, aligned with ``visits``.

    Returns
    -------
    DataFrame
        The columns of :data:`EYE_FEATURES`, float, NaN where unknown.
    """
    out = pd.DataFrame(index=visits.index)
    out["age"] = visits["age"].astype(float)
    out["sex"] = _code(visits["sex"])
    ethnicity = _code(visits["ethnicity"])
    out["ethnicity"] = np.where(ethnicity >= 1000, ethnicity // 1000, ethnicity)
    for name in ("bmi", "fvc", "pef", "pulse_rate", "diastolic_bp", "systolic_bp"):
        out[name] = visits[name].astype(float)
    for name in _YES_NO:
        out[name] = _code(visits[name])
    right = (eye == "right").to_numpy()
    for name in PER_EYE:
        out[name] = np.where(right, visits[f"{name}_right"].astype(float), visits[f"{name}_left"].astype(float))
    return out[EYE_FEATURES]
