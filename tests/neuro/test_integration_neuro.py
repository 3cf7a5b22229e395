"""`scilens neuro` through spark-submit on a real standalone cluster, with the shipped config.

The shipped config has the reference's b0_threshold=10, so dipy's small_64D
must equal the reference, and small_101D (whose b0 is b=15) must be rejected.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from bench.reference.neuro_ref import run_reference
from tests.cluster import submit
from tests.neuro.conftest import copy_subject

pytestmark = pytest.mark.integration


def test_neuro_on_standalone_cluster_equals_reference(tmp_path, standalone_master):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    image = copy_subject("small_64D", inputs)
    copy_subject("small_101D", inputs)
    out = tmp_path / "out"
    master = standalone_master
    done = submit(master, "neuro", "--input", str(inputs), "--output", str(out),
                  "--config", "conf/neuro.yaml", "--set", "write_denoised=true")
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["spark_master"] == master  # it really ran there
    assert manifest["counts"] == {"succeeded": 1, "rejected": 1}
    assert manifest["rejected_examples"][0]["record"] == "small_101D"
    assert "no b0 volume" in manifest["rejected_examples"][0]["message"]

    ref = run_reference(image, image.with_suffix(".bval"), image.with_suffix(".bvec"), num_threads=1)

    def load(name: str) -> np.ndarray:
        return np.asanyarray(nib.load(str(out / "subjects" / "small_64D" / f"{name}.nii.gz")).dataobj)

    assert np.array_equal(load("mask").astype(bool), ref.mask)
    # Same dipy code in another process: allow float rounding, not a different algorithm.
    denoised = load("denoised")
    assert np.max(np.abs(denoised - ref.denoised.astype(np.float64)) / np.maximum(np.abs(ref.denoised), 1)) <= 1e-4
    assert np.max(np.abs(load("fa") - ref.fa)) <= 1e-5
    assert np.max(np.abs(load("md") - ref.md)) <= 1e-5
