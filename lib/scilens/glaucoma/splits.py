"""Subject-level splits of the eye table: test, validation, train (dissertation Ch. 3 §3.2).

The test split holds exactly ``test_eyes_per_class`` glaucoma and as many healthy eyes, the
validation split exactly ``validation_eyes`` eyes (each class in proportion to the eyes left),
the rest trains; both eyes of a subject always share a split, PTG eyes form their own ``ptg``
evaluation set. Subjects are drawn in a seeded random order, so the same cohort and seed give
the same splits. A split that cannot be made raises :class:`SplitError` naming the counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from scilens.core.config import Config, field
from scilens.core.job import JobFailed

__all__ = ["SPLITS", "SplitConfig", "SplitError", "assign_splits"]

SPLITS = ("train", "validation", "test", "ptg")
_CLASSES = ("glaucoma", "healthy")


class SplitError(JobFailed):
    """The cohort is too small (or its eyes fall badly) for the requested splits."""


@dataclass
class SplitConfig(Config):
    """Sizes of the evaluation splits."""

    test_eyes_per_class: int = field(50, "Glaucoma eyes, and as many healthy eyes, in the test split.", min=1)
    validation_eyes: int = field(170, "Eyes in the validation split (early stopping, thresholds).", min=2)
    seed: int = field(0, "Seed of the subject draw.")


def _draw(subjects: pd.Series, quota: int, rng: np.random.Generator, what: str) -> list[int]:
    """Subjects (eid -> eye count) in random order, taken while they fit, to exactly ``quota`` eyes."""
    order = rng.permutation(subjects.index.to_numpy())
    taken, left = [], quota
    for eid in order:
        if left == 0:
            break
        if subjects[eid] <= left:
            taken.append(int(eid))
            left -= int(subjects[eid])
    if left:
        raise SplitError(f"cannot put exactly {quota} {what} eyes in one split keeping each subject's eyes "
                         f"together: {int(subjects.sum())} eyes of {len(subjects)} subjects available")
    return taken


def assign_splits(eyes: pd.DataFrame, config: SplitConfig) -> pd.Series:
    """The split of every eye.

    Parameters
    ----------
    eyes : DataFrame
        ``eid``, ``eye``, ``label`` (``glaucoma``, ``healthy`` or ``ptg``).
    config : SplitConfig
        Split sizes and seed.

    Returns
    -------
    Series
        ``train`` / ``validation`` / ``test`` / ``ptg``, aligned with ``eyes``.
    """
    labels = eyes.groupby("eid")["label"].agg(lambda s: set(s))
    mixed = labels[labels.map(len) > 1]
    if len(mixed):
        # The eid and the rule, not the subject's diagnoses (participant data, printed to the terminal).
        raise SplitError(f"subject {mixed.index[0]} has eyes of {len(mixed.iloc[0])} different classes; "
                         "a subject must have one class")
    rng = np.random.default_rng(config.seed)
    counts = {c: eyes[eyes["label"] == c].groupby("eid").size().sort_index() for c in _CLASSES}
    for c in _CLASSES:
        total = int(counts[c].sum())
        if total <= config.test_eyes_per_class:
            raise SplitError(f"the test split needs {config.test_eyes_per_class} {c} eyes and training needs more, "
                             f"but the cohort has {total} {c} eyes ({len(counts[c])} subjects)")
    split_of: dict[int, str] = {}
    for c in _CLASSES:
        split_of.update(dict.fromkeys(_draw(counts[c], config.test_eyes_per_class, rng, f"test {c}"), "test"))
    left = {c: counts[c].drop(index=[e for e in counts[c].index if e in split_of]) for c in _CLASSES}
    total_left = sum(int(s.sum()) for s in left.values())
    if total_left <= config.validation_eyes:
        raise SplitError(f"the validation split needs {config.validation_eyes} eyes and training needs more, "
                         f"but {total_left} eyes are left after the test split")
    quota = {c: round(config.validation_eyes * int(left[c].sum()) / total_left) for c in _CLASSES}
    quota[_CLASSES[1]] = config.validation_eyes - quota[_CLASSES[0]]
    for c in _CLASSES:
        split_of.update(dict.fromkeys(_draw(left[c], quota[c], rng, f"validation {c}"), "validation"))
    out = pd.Series(np.where(eyes["label"] == "ptg", "ptg", "train"), index=eyes.index, dtype=object)
    chosen = eyes["eid"].map(split_of)
    out = out.where(chosen.isna() | (eyes["label"] == "ptg"), chosen)
    for c in _CLASSES:
        if not ((out == "train") & (eyes["label"] == c)).any():
            raise SplitError(f"no {c} eyes left for training after the test and validation splits")
    return out
