"""The glaucoma imaging chain per file, per image and per eye, on in-memory data (no Spark).

:mod:`scilens.glaucoma.stages` runs these functions inside ``mapInPandas`` tasks;
the single-process references and the tests call them directly:

* one file -> its model inputs: :func:`oct_scan_rows` (an OCT volume: checked, aligned,
  flipped, cropped, resized into one row per B-scan) and :func:`fundus_row` (a photo);
* one image -> its saliency masks: :func:`saliency_records`;
* the eyes' predictions -> the numbers the paper reports: :func:`scan_position_auc`,
  :func:`auc_with_ci`; and :func:`choose_eyes`, the eyes whose masks are drawn.

Rows are dicts of plain values and numpy images; the Spark layer encodes the images as tensors.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scilens.core.config import ConfigError
from scilens.core.inputs import InputError
from scilens.glaucoma.config import GlaucomaImagesConfig
from scilens.glaucoma.features import SCAN_PREFIX
from scilens.glaucoma.metrics import BootstrapConfig
from scilens.glaucoma.preprocess import preprocess_fundus, preprocess_oct
from scilens.io import retina as retina_io
from scilens.vision.saliency import SaliencyConfig

__all__ = [
    "KEYS",
    "LABELS",
    "auc_with_ci",
    "choose_eyes",
    "cohort_path",
    "fundus_row",
    "model_file",
    "oct_scan_rows",
    "saliency_records",
    "saliency_scans",
    "scan_feature",
    "scan_position_auc",
]

LABELS = ("glaucoma", "healthy", "ptg")
KEYS = ["eid", "eye", "visit", "label", "split"]
"""The columns naming an eye and its class in every per-eye table."""


def scan_feature(scan: int) -> str:
    """Column of the final model's feature for scan position ``scan``."""
    return f"{SCAN_PREFIX}{scan:03d}"


def cohort_path(cohort: str) -> Path:
    """The ``eyes.parquet`` a ``cohort`` setting names (the table or the glaucoma-cohort output holding it)."""
    from scilens.glaucoma.cohort import eyes_table

    if not cohort:
        raise ConfigError("cohort: required; give the eyes.parquet of scilens glaucoma-cohort")
    return eyes_table(cohort)


def model_file(setting: str, name: str) -> Path:
    """The model file a ``*_model`` setting names (the file, or a glaucoma-train output directory)."""
    path = Path(setting)
    if path.is_dir():
        path = path / "model.keras"
    if not path.is_file():
        raise InputError(f"{name} {setting}: no model file (model.keras)")
    return path


def oct_scan_rows(path: str, config: GlaucomaImagesConfig) -> Iterator[dict[str, Any]]:
    """One row per preprocessed B-scan of the OCT volume ``path``.

    Parameters
    ----------
    path : str
        An OCT volume named as :mod:`scilens.io.retina` says.
    config : GlaucomaImagesConfig
        ``n_scans`` and the B-scan size every volume must have, and the preprocessing.

    Returns
    -------
    Iterator of dict
        ``eid``, ``eye``, ``visit``, ``scan``, ``path``, ``shift_axial``, ``shift_lateral`` and
        ``image`` (uint8 array, size x size), superior scan first.

    Raises
    ------
    ValueError
        The file is not an OCT volume of the configured size, or it cannot be aligned.
    """
    key = retina_io.parse_image_name(path)
    if key.modality != "oct":
        raise ValueError(f"{path}: a {key.modality.upper()} file where an OCT volume was expected")
    shape = (config.scan_height, config.scan_width) if config.scan_height and config.scan_width else None
    volume = retina_io.read_oct(path, shape)
    n_scans = config.n_scans
    if len(volume) < n_scans:
        raise ValueError(f"{path}: has {len(volume)} B-scans, fewer than the {n_scans} configured")
    if len(volume) > n_scans:
        raise ValueError(f"{path}: has {len(volume)} B-scans, more than the {n_scans} configured")
    scans, alignment = preprocess_oct(volume, key.eye, config.oct)
    for j, scan in enumerate(scans):
        yield {"eid": key.eid, "eye": key.eye, "visit": key.visit, "scan": j, "path": path,
               "shift_axial": int(alignment.shifts[j, 0]), "shift_lateral": int(alignment.shifts[j, 1]),
               "image": scan}


def fundus_row(path: str, config: GlaucomaImagesConfig) -> dict[str, Any]:
    """The preprocessed fundus photo ``path`` as one row.

    Parameters
    ----------
    path : str
        A fundus photo named as :mod:`scilens.io.retina` says.
    config : GlaucomaImagesConfig
        Its ``cfp`` section is the preprocessing.

    Returns
    -------
    dict
        ``eid``, ``eye``, ``visit``, ``path``, the optic-disc centre found (``disc_row``, ``disc_col``,
        in the flipped photo) and ``image`` (uint8 array, size x size x 3).
    """
    key = retina_io.parse_image_name(path)
    if key.modality != "cfp":
        raise ValueError(f"{path}: an {key.modality.upper()} file where a fundus photo was expected")
    image, disc = preprocess_fundus(retina_io.read_fundus(path), key.eye, config.cfp)
    return {"eid": key.eid, "eye": key.eye, "visit": key.visit, "path": path, "disc_row": disc[0],
            "disc_col": disc[1], "image": image}


def saliency_scans(n_scans: int, stride: int) -> list[int]:
    """Every ``stride``-th scan position of ``n_scans``, counted from the central scan both ways."""
    centre = n_scans // 2
    return sorted({s for s in range(n_scans) if (s - centre) % stride == 0})


def saliency_records(model: Any, rows: Iterable[tuple[Any, np.ndarray]], modality: str,
                     methods: SaliencyConfig) -> Iterator[dict[str, Any]]:
    """Saliency masks of images by every configured method, one record per (image, method).

    Parameters
    ----------
    model : keras.Model
        The model, taking raw pixel values.
    rows : iterable of (row, image)
        ``row`` has attributes ``eid``, ``eye``, ``label`` and ``scan``; ``image`` is its
        (h, w) or (h, w, c) uint8 model input.
    modality : str
        ``oct`` or ``cfp``, stored in each record.
    methods : SaliencyConfig
        The saliency methods and their settings.

    Returns
    -------
    Iterator of dict
        ``eid``, ``eye``, ``label``, ``modality``, ``scan``, ``method``, ``probability`` (the model's
        output), ``completeness_gap``, ``band_top`` and ``band_bottom`` (an OCT scan's retinal band,
        :func:`~scilens.glaucoma.preprocess.retinal_band`; None for a photo), ``image`` and ``mask`` (arrays).
    """
    from scilens.glaucoma.preprocess import retinal_band
    from scilens.vision.saliency import saliency_masks

    for row, image in rows:
        x = image.astype(np.float32)
        x = x[..., None] if x.ndim == 2 else x
        p = float(np.asarray(model(x[None], training=False)).ravel()[0])
        top, bottom = retinal_band(image) if modality == "oct" else (None, None)
        for method, (mask, gap) in saliency_masks(model, x, methods).items():
            yield {"eid": row.eid, "eye": row.eye, "label": row.label, "modality": modality,
                   "scan": int(row.scan), "method": method, "probability": p, "completeness_gap": gap,
                   "band_top": top, "band_bottom": bottom, "image": image, "mask": mask}


def auc_with_ci(frame: pd.DataFrame, score: str, bootstrap: BootstrapConfig) -> dict[str, float]:
    """AUC of ``frame[score]`` for glaucoma vs healthy rows, with its bootstrap CI (scilens.glaucoma.metrics)."""
    from scilens.glaucoma import metrics

    interval = metrics.auc_ci((frame["label"] == "glaucoma").to_numpy(int), frame[score].to_numpy(float),
                              frame["eid"].to_numpy(), bootstrap)
    return {"auc": interval.estimate, "ci_low": interval.low, "ci_high": interval.high, "n": len(frame)}


def scan_position_auc(oct_predictions: pd.DataFrame, n_scans: int, bootstrap: BootstrapConfig) -> pd.DataFrame:
    """AUC of the single-scan predictions at each scan position (glaucoma vs healthy eyes)."""
    return pd.DataFrame([{"scan": scan, **auc_with_ci(oct_predictions[oct_predictions["scan"] == scan],
                                                      "probability", bootstrap)} for scan in range(n_scans)])


def choose_eyes(vectors: pd.DataFrame, n: int) -> pd.DataFrame:
    """``n`` eyes of the evaluation split, half glaucoma and half healthy, lowest eids first."""
    per_class = []
    for label, k in (("glaucoma", (n + 1) // 2), ("healthy", n // 2)):
        per_class.append(vectors[vectors["label"] == label].sort_values(["eid", "eye"]).head(k))
    return pd.concat(per_class, ignore_index=True)
