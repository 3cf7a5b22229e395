"""Inputs for the neuro job tests: dipy's real subjects, a phantom with truth, and broken subjects."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dipy.data import get_fnames

from scilens.synth import dmri

PHANTOM_SHAPE = (64, 64, 48)
PHANTOM_SNR = 30.0


def copy_subject(name: str, directory: Path, subject: str | None = None) -> Path:
    """Copy dipy's ``name`` sample (image + .bval + .bvec) into ``directory`` as ``subject``."""
    subject = subject or name
    image, bval, bvec = (Path(p) for p in get_fnames(name=name))
    suffix = ".nii.gz" if image.name.endswith(".gz") else ".nii"
    shutil.copy(image, directory / f"{subject}{suffix}")
    shutil.copy(bval, directory / f"{subject}.bval")
    shutil.copy(bvec, directory / f"{subject}.bvec")
    return directory / f"{subject}{suffix}"


@pytest.fixture(scope="session")
def neuro_inputs(tmp_path_factory) -> dict[str, Path]:
    """A directory of subjects: small_64D, small_101D, a phantom at SNR 30, and five broken ones.

    Broken: ``mismatch`` (64 b-values for 65 volumes), ``nob0`` (its b0 relabelled b=1000),
    ``nanvolume`` (volume 7 all NaN), ``truncated`` (a cut .nii.gz), ``nogradients`` (no side files).
    """
    root = tmp_path_factory.mktemp("neuro-inputs")
    inputs = root / "subjects"
    inputs.mkdir()
    copy_subject("small_64D", inputs)
    copy_subject("small_101D", inputs)
    phantom = dmri.write_phantom(root / "truth", subject="phantom", shape=PHANTOM_SHAPE, snr=PHANTOM_SNR, seed=3)
    for path in (phantom.nifti, phantom.bval, phantom.bvec):
        shutil.move(path, inputs / path.name)

    image = copy_subject("small_64D", inputs, "mismatch")
    bvals = (inputs / "mismatch.bval").read_text().split()
    (inputs / "mismatch.bval").write_text(" ".join(bvals[:-1]) + "\n")

    copy_subject("small_64D", inputs, "nob0")
    (inputs / "nob0.bval").write_text(" ".join(["1000", *bvals[1:]]) + "\n")
    vecs = np.loadtxt(inputs / "nob0.bvec")  # (65, 3) in this file; FSL's (3, 65) works as well
    vecs[0] = [1.0, 0.0, 0.0]  # the old b0 needs a direction to be a diffusion-weighted volume
    np.savetxt(inputs / "nob0.bvec", vecs)

    img = nib.load(str(image))
    data = np.asanyarray(img.dataobj).astype(np.float32)
    data[..., 7] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine), str(inputs / "nanvolume.nii.gz"))
    shutil.copy(inputs / "small_64D.bval", inputs / "nanvolume.bval")
    shutil.copy(inputs / "small_64D.bvec", inputs / "nanvolume.bvec")

    raw = gzip.compress(image.read_bytes())
    (inputs / "truncated.nii.gz").write_bytes(raw[: len(raw) // 2])
    shutil.copy(inputs / "small_64D.bval", inputs / "truncated.bval")
    shutil.copy(inputs / "small_64D.bvec", inputs / "truncated.bvec")

    shutil.copy(image, inputs / "nogradients.nii")
    return {"subjects": inputs, "truth": root / "truth"}
