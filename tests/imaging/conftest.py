"""A small labelled cohort with retinal images (and a few bad files), and the jobs run on it once per session.

The glaucoma signal is made easy (strong thinning) so a tiny model trained for a few epochs must find it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scilens.io import retina as retina_io
from scilens.synth import retina

N_SCANS = 16
IMAGE_SIZE = 32
SYNTH = retina.RetinaSynthConfig(n_scans=N_SCANS, oct_height=64, oct_width=80, fundus_size=96,
                                 thinning_glaucoma=0.8, misaligned_fraction=0.0)
IMAGES_SETTINGS = [f"n_scans={N_SCANS}", "scan_height=64", "scan_width=80", f"oct.image_size={IMAGE_SIZE}",
                   f"cfp.image_size={IMAGE_SIZE}", "figure_eyes=2", "files_per_task=16"]


def small_cohort(n_subjects: int, seed: int = 0) -> pd.DataFrame:
    """Eye rows as glaucoma-cohort writes them: both eyes of a subject share label and split."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_subjects):
        eid = 1_000_000 + i
        label = ("glaucoma", "healthy")[i % 2] if i % 25 != 24 else "ptg"
        split = "ptg" if label == "ptg" else ("train" if i % 10 < 6 else "validation" if i % 10 < 8 else "test")
        for eye in ("left", "right"):
            rows.append({"eid": eid, "eye": eye, "label": label, "split": split, "visit": 0,
                         "age": float(rng.normal(60, 7))})
    return pd.DataFrame(rows)


@pytest.fixture(scope="session")
def retina_cohort(tmp_path_factory) -> dict:
    """eyes.parquet, the images of its eyes, and planted bad files (name -> what is wrong)."""
    root = tmp_path_factory.mktemp("retina_cohort")
    eyes = small_cohort(64)
    eyes.to_parquet(root / "eyes.parquet")
    images = root / "images"
    good = eyes.iloc[:-8]  # the last four subjects' eyes get the bad files below
    truth = retina.write_cohort_images(good, images, SYNTH, seed=1)
    spare = eyes.iloc[-8:].reset_index(drop=True)
    bad: dict[str, str] = {}

    def oct_path(k: int, eid: int | None = None) -> Path:
        row = spare.iloc[k]
        return images / "oct" / retina_io.image_name(eid or row.eid, row.eye, 0, "oct")

    rng = np.random.default_rng(9)
    corrupt = oct_path(0)
    corrupt.write_bytes(b"II*\x00" + rng.bytes(300))
    bad[corrupt.name] = "not a readable TIFF"
    import tifffile

    wrong = oct_path(1)
    volume = retina.oct_volume(spare.eye[1], 0.0, rng, N_SCANS, 64, 80)
    with tifffile.TiffWriter(wrong) as tif:
        for j, scan in enumerate(volume):
            tif.write(scan[:60] if j == 5 else scan, contiguous=False)
    bad[wrong.name] = "B-scan 5 is 60x80, expected 64x80"
    short = retina_io.write_oct(oct_path(2), volume[:N_SCANS - 2])
    bad[short.name] = f"has {N_SCANS - 2} B-scans, fewer than the {N_SCANS} configured"
    jumped = retina_io.write_oct(oct_path(3), retina.oct_volume(spare.eye[3], 0.0, rng, N_SCANS, 64, 80, "jump"))
    bad[jumped.name] = "cannot be aligned by translation: B-scans"
    blinked = retina_io.write_oct(oct_path(4), retina.oct_volume(spare.eye[4], 0.0, rng, N_SCANS, 64, 80, "blink"))
    bad[blinked.name] = "cannot be aligned by translation: B-scans"
    stranger = retina_io.write_oct(oct_path(5, eid=999_999), volume)
    bad[stranger.name] = f"eid 999999 {spare.eye[5]} eye is not in the cohort"
    misnamed = images / "fundus" / f"{spare.eid[6]}_21017_0_0.png"
    retina_io.write_fundus(misnamed, np.zeros((8, 8, 3), np.uint8))
    bad[misnamed.name] = "field 21017 (OCT) needs a .tif file"
    return {"root": root, "eyes": eyes, "images": images, "truth": truth, "bad": bad}


@pytest.fixture(scope="session")
def retina_images(retina_cohort, spark, tmp_path_factory) -> Path:
    """Output of scilens glaucoma-images on the cohort's images."""
    from scilens import cli

    out = tmp_path_factory.mktemp("glaucoma_images") / "out"
    code = cli.main(["glaucoma-images", "--input", str(retina_cohort["images"]), "--output", str(out),
                     "--set", f"cohort={retina_cohort['root'] / 'eyes.parquet'}",
                     *(a for s in IMAGES_SETTINGS for a in ("--set", s))])
    assert code == 0
    return out


OCT_TRAINING = ["modality=oct", "oct.model.preset=tiny", "oct.training.epochs=6", "oct.training.batch_size=16",
                "oct.training.learning_rate=0.005", "oct.training.early_stopping_patience=6",
                "oct.training.shuffle_buffer=256", "petastorm.row_groups_per_rank=2"]
"""Tiny DenseNet, 2 ranks x 16 images per step, six epochs: enough for the easy set's signal.
The learning rate is 5x the paper's because the paper trained 60 epochs on ~300k scans."""


@pytest.fixture(scope="session")
def oct_training(retina_images, spark, tmp_path_factory) -> Path:
    """Output of scilens glaucoma-train (OCT, 2 Horovod ranks) on the images."""
    from scilens import cli

    out = tmp_path_factory.mktemp("glaucoma_train") / "oct"
    code = cli.main(["glaucoma-train", "--input", str(retina_images), "--output", str(out),
                     *(a for s in OCT_TRAINING for a in ("--set", s))])
    assert code == 0
    return out
