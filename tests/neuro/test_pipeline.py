"""`scilens neuro` end to end on a real local SparkSession: equal to the reference, true to the phantom.

One run (``run_all``) takes every subject at once: dipy's two real samples, a
phantom, and five broken subjects. ``b0_threshold`` is 50 there because
dipy's ``small_101D`` has no b-value <= 10 (its b0 is b=15); for ``small_64D``
and the phantom 10 and 50 select the same volume (b=0; every other b-value is
near 1000), so their results are those of the reference parameters.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from dipy.data import get_fnames
from dipy.io.gradients import read_bvals_bvecs
from scipy import ndimage

from bench.reference.neuro_ref import run_reference
from scilens import cli
from scilens.neuro import pipeline
from scilens.neuro.config import NeuroConfig
from scilens.neuro.gradients import b0_volumes
from scilens.neuro.stages import TASK_VOXELS, choose_granularity, volumes_per_task
from scilens.synth import dmri
from tests.neuro.conftest import PHANTOM_SHAPE, PHANTOM_SNR, copy_subject
from tests.neuro.dti_noise import fa_md_standard_errors

REAL = {"small_64D": "small_64D.nii", "small_101D": "small_101D.nii.gz"}


def _image(out: Path, subject: str, name: str) -> np.ndarray:
    return np.asanyarray(nib.load(str(out / "subjects" / subject / f"{name}.nii.gz")).dataobj)


@pytest.fixture(scope="module")
def run_all(spark, neuro_inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("neuro-run") / "out"
    code = cli.main(["neuro", "--input", str(neuro_inputs["subjects"]), "--output", str(out),
                     "--set", "b0_threshold=50", "--set", "write_denoised=true",
                     "--set", "volumes_per_task=8", "--set", "block_shape=[8,8,8]"])
    assert code == 0  # some subjects were rejected, the others succeeded
    return out


@pytest.mark.parametrize("subject", sorted(REAL))
def test_real_subjects_equal_the_reference(run_all, neuro_inputs, subject):
    image = neuro_inputs["subjects"] / REAL[subject]
    bval, bvec = image.with_name(f"{subject}.bval"), image.with_name(f"{subject}.bvec")
    ref = run_reference(image, bval, bvec, b0_threshold=50, num_threads=1)
    if subject == "small_64D":
        bvals, _ = read_bvals_bvecs(str(bval), str(bvec))
        assert np.array_equal(b0_volumes(bvals, 10), b0_volumes(bvals, 50))  # the reference's own selection
    assert np.array_equal(_image(run_all, subject, "mask").astype(bool), ref.mask)
    denoised = _image(run_all, subject, "denoised")
    assert denoised.dtype == ref.denoised.dtype
    assert np.max(np.abs(denoised - ref.denoised.astype(np.float64)) / np.maximum(np.abs(ref.denoised), 1)) <= 1e-4
    assert np.max(np.abs(_image(run_all, subject, "fa") - ref.fa)) <= 1e-5
    assert np.max(np.abs(_image(run_all, subject, "md") - ref.md)) <= 1e-5
    assert np.array_equal(nib.load(str(run_all / "subjects" / subject / "fa.nii.gz")).affine,
                          nib.load(str(image)).affine)

    voxels = pd.read_parquet(run_all / "voxels.parquet", filters=[("subject", "==", subject)])
    assert len(voxels) == ref.mask.sum()
    ijk = (voxels.i.to_numpy(), voxels.j.to_numpy(), voxels.k.to_numpy())
    assert ref.mask[ijk].all()
    assert np.max(np.abs(voxels.fa.to_numpy() - ref.fa[ijk])) <= 1e-5
    assert np.max(np.abs(voxels.md.to_numpy() - ref.md[ijk])) <= 1e-5
    assert np.max(np.abs(np.stack(voxels.eigenvalues.to_numpy()) - ref.evals[ijk])) <= 1e-5


def test_phantom_tensors_recovered_within_the_noise(run_all, neuro_inputs):
    labels = dmri.tissue_labels(PHANTOM_SHAPE)
    truth = dmri.true_maps(labels)
    mask = _image(run_all, "phantom", "mask").astype(bool)
    # The b0 image is >= 500 in the head and pure noise (mean sigma*sqrt(pi/2) ~ 42) outside it, so
    # Otsu's threshold separates them: all brain in (bar a few edge voxels the median filter rounds
    # off), no background.
    assert mask[labels >= 2].mean() >= 0.98 and not mask[labels == 0].any()
    fa, md = _image(run_all, "phantom", "fa"), _image(run_all, "phantom", "md")
    bvals, bvecs = dmri.acquisition("single_shell")
    signals = dmri.tissue_signals(bvals, bvecs, s0=1000.0)
    sigma = dmri.noise_sigma(1000.0, PHANTOM_SNR)
    # Interior voxels: their own 3x3x3 similarity patch (patch_radius 1) lies in one tissue. At a
    # tissue edge non-local means averages across the edge by design; no noise bound applies there.
    for label in (*dmri.WHITE_MATTER, 2):
        core = ndimage.binary_erosion(labels == label, np.ones((3, 3, 3))) & mask
        se_fa, se_md = fa_md_standard_errors(signals[label], bvals, bvecs, sigma)
        name = dmri.TISSUES[label].name
        assert core.sum() >= 100, name
        fa_err, md_err = fa[core] - truth["fa"][core], md[core] - truth["md"][core]
        # A voxel's raw-data estimate spreads by se (delta method); denoising averages similar voxels,
        # which only narrows that. Bounds: RMS within 3 se (room for the first-order approximation),
        # bias within 1 se (noise biases FA upwards only at second order).
        if label in dmri.WHITE_MATTER:
            assert np.sqrt(np.mean(fa_err**2)) <= 3 * se_fa, name
            assert abs(fa_err.mean()) <= se_fa, name
        assert np.sqrt(np.mean(md_err**2)) <= 3 * se_md, name
        assert abs(md_err.mean()) <= se_md, name


def test_bad_subjects_quarantined_good_ones_complete(spark, run_all):
    rejected = {r.record: r for r in spark.read.parquet(str(run_all / "_rejected" / "rejected.parquet")).collect()}
    assert set(rejected) == {"mismatch", "nob0", "nanvolume", "truncated", "nogradients"}
    for subject, record in rejected.items():
        assert subject in record.message, record.message  # every reason names the subject's file
        assert not (run_all / "subjects" / subject).exists()  # and nothing of it is left in the output
    assert "has 64 b-values but" in rejected["mismatch"].message and rejected["mismatch"].step == "read_nifti"
    assert "no b0 volume" in rejected["nob0"].message and rejected["nob0"].step == "segment"
    assert "volume(s) 7 hold NaN or infinite values" in rejected["nanvolume"].message
    assert rejected["truncated"].step == "read_nifti"
    assert "no FSL gradient files" in rejected["nogradients"].message

    manifest = json.loads((run_all / "manifest.json").read_text())
    assert manifest["counts"] == {"succeeded": 3, "rejected": 5} and manifest["status"] == "partial"
    steps = {s["name"]: s for s in manifest["steps"]}
    # Seven listed subjects on two cores: each subject's chain runs whole in one task.
    assert "denoise" not in steps and steps["subject chains"]["counts"]["volumes"] == 65 + 102 + 65
    assert manifest["config"]["segment"] == {"median_radius": 4, "numpass": 2, "dilate": 1}
    for subject in ("small_64D", "small_101D", "phantom"):
        assert {p.name for p in (run_all / "subjects" / subject).iterdir()} == {
            "mask.nii.gz", "fa.nii.gz", "md.nii.gz", "denoised.nii.gz", "report.png"}
        assert f"subjects/{subject}/report.png" in (run_all / "report.html").read_text()
    assert {p.name for p in run_all.iterdir()} == {"subjects", "voxels.parquet", "report.html", "manifest.json",
                                                    "_rejected", *(p.name for p in run_all.glob(".*"))}
    assert not list(run_all.glob(".denoised-parts*"))
    assert set(pd.read_parquet(run_all / "voxels.parquet", columns=["subject"]).subject) == {
        "small_64D", "small_101D", "phantom"}


def test_the_volume_cut_writes_the_bits_and_rejections_of_the_subject_cut(spark, run_all, neuro_inputs, tmp_path):
    """The same subjects split into volume and block tasks: same files, voxels and quarantined records."""
    out = tmp_path / "out"
    assert cli.main(["neuro", "--input", str(neuro_inputs["subjects"]), "--output", str(out),
                     "--set", "b0_threshold=50", "--set", "write_denoised=true", "--set", "report=false",
                     "--set", "volumes_per_task=8", "--set", "block_shape=[8,8,8]",
                     "--set", "granularity=volume"]) == 0
    steps = {s["name"] for s in json.loads((out / "manifest.json").read_text())["steps"]}
    assert {"denoise", "fit"} <= steps and "subject chains" not in steps
    for subject in ("small_64D", "small_101D", "phantom"):
        for name in ("mask", "denoised", "fa", "md"):
            assert np.array_equal(_image(out, subject, name), _image(run_all, subject, name)), (subject, name)

    def voxels(root: Path) -> pd.DataFrame:
        return pd.read_parquet(root / "voxels.parquet").sort_values(["subject", "i", "j", "k"], ignore_index=True)

    by_volume, by_subject = voxels(out), voxels(run_all)
    assert len(by_volume) == len(by_subject) > 0
    for column in ("subject", "i", "j", "k", "fa", "md"):
        assert np.array_equal(by_volume[column].to_numpy(), by_subject[column].to_numpy()), column
    assert np.array_equal(np.stack(by_volume.eigenvalues.to_numpy()), np.stack(by_subject.eigenvalues.to_numpy()))

    def rejected(root: Path) -> dict[str, tuple[str, str]]:
        rows = spark.read.parquet(str(root / "_rejected" / "rejected.parquet")).collect()
        return {r.record: (r.step, r.message) for r in rows}

    assert rejected(out) == rejected(run_all)


def test_the_subject_chain_runs_without_spark_and_writes_what_the_job_writes(run_all, neuro_inputs, tmp_path):
    """The phantom through :mod:`scilens.neuro.pipeline` alone (no SparkSession used) equals its Spark run."""
    subject = pipeline.read_subject(next(neuro_inputs["subjects"].glob("phantom.nii*")))
    result = pipeline.run_subject(subject, NeuroConfig(b0_threshold=50, write_denoised=True), tmp_path)
    assert {p.name for p in (tmp_path / "subjects" / "phantom").iterdir()} == {
        "mask.nii.gz", "fa.nii.gz", "md.nii.gz", "denoised.nii.gz"}
    mask = _image(tmp_path, "phantom", "mask")
    assert np.array_equal(mask, _image(run_all, "phantom", "mask")) and np.array_equal(mask, result.segmentation.mask)
    ours, job = _image(tmp_path, "phantom", "denoised"), _image(run_all, "phantom", "denoised")
    assert ours.dtype == job.dtype == subject.data.dtype and np.array_equal(ours, result.denoised)
    assert np.max(np.abs(ours - job.astype(np.float64)) / np.maximum(np.abs(job), 1)) <= 1e-4
    for name in ("fa", "md"):
        ours = _image(tmp_path, "phantom", name)
        assert np.array_equal(ours, getattr(result.maps, name)), name
        assert np.max(np.abs(ours - _image(run_all, "phantom", name))) <= 1e-5, name
        assert np.array_equal(nib.load(str(tmp_path / "subjects" / "phantom" / f"{name}.nii.gz")).affine,
                              nib.load(str(run_all / "subjects" / "phantom" / f"{name}.nii.gz")).affine)


def test_one_subject_from_a_manifest_equals_the_multi_subject_run(spark, run_all, tmp_path):
    """Cut differently (4 volumes per task, one 32x32x32 block), alone, named by a manifest: same bits."""
    data = tmp_path / "data"
    data.mkdir()
    copy_subject("small_101D", data, "scan")
    manifest = tmp_path / "subjects.csv"
    manifest.write_text("subject,nifti,bval,bvec\ndsi,data/scan.nii.gz,data/scan.bval,data/scan.bvec\n")
    out = tmp_path / "out"
    assert cli.main(["neuro", "--input", str(manifest), "--output", str(out), "--set", "b0_threshold=50",
                     "--set", "volumes_per_task=4", "--set", "write_denoised=true", "--set", "report=false",
                     "--strict"]) == 0
    for name in ("mask", "denoised", "fa", "md"):
        assert np.array_equal(_image(out, "dsi", name), _image(run_all, "small_101D", name)), name
    alone = pd.read_parquet(out / "voxels.parquet").drop(columns="subject").sort_values(["i", "j", "k"])
    together = (pd.read_parquet(run_all / "voxels.parquet", filters=[("subject", "==", "small_101D")])
                .drop(columns="subject").sort_values(["i", "j", "k"]))
    assert len(alone) == len(together) > 0
    for column in ("i", "j", "k", "fa", "md"):
        assert np.array_equal(alone[column].to_numpy(), together[column].to_numpy()), column
    assert np.array_equal(np.stack(alone.eigenvalues.to_numpy()), np.stack(together.eigenvalues.to_numpy()))


def test_input_and_config_errors_fail_before_spark_work(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["neuro", "--input", str(tmp_path), "--output", str(out), "--set", "block_shape=[4,4]"]) == 2
    assert "block_shape: [4, 4] is not allowed; three sizes, one per voxel axis" in capsys.readouterr().err
    assert cli.main(["neuro", "--input", str(tmp_path), "--output", str(out),
                     "--set", "denoise.method=fast"]) == 2
    assert "denoise.method: 'fast' is not allowed" in capsys.readouterr().err
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        copy_subject("small_64D", tmp_path / sub, "sub-01")
    assert cli.main(["neuro", "--input", str(tmp_path), "--output", str(out)]) == 1
    assert not out.exists()
    assert cli.main(["neuro", "--input", str(tmp_path / "missing"), "--output", str(out)]) == 1
    with pytest.raises(SystemExit):
        cli.main(["neuro", "--help"])
    assert "denoise.method" in capsys.readouterr().out
    shutil.rmtree(tmp_path / "a")


def test_small_volumes_share_denoising_tasks_large_ones_do_not():
    class Subject:
        def __init__(self, shape):
            self.shape = shape

    # An HCP subject (145x145x174, 3.7M voxels a volume) or the 2 GB phantom: a task per volume.
    assert volumes_per_task([Subject((145, 145, 174, 288))], 2) == 1
    assert volumes_per_task([Subject((128, 128, 170, 193))], 64) == 1
    # 96x96x60 (0.55M voxels): four volumes make TASK_VOXELS of work.
    assert volumes_per_task([Subject((96, 96, 60, 65))] * 4, 2) == math.ceil(TASK_VOXELS / (96 * 96 * 60))
    # dipy's 10x10x10 sample: as many as keeps four tasks per core (65 volumes -> 8 per task, 9 tasks).
    assert volumes_per_task([Subject((10, 10, 10, 65))], 2) == 65 // 8


def _cut(*args, **kwargs) -> tuple[str, int]:
    cut = choose_granularity(*args, **kwargs)
    return cut.mode, cut.threads


def test_subjects_run_whole_when_they_can_fill_the_cores_and_fit_the_budget():
    mb = 2**20
    config = NeuroConfig()  # subject_task_mb 2048
    both = {"a": 72 * mb, "b": 72 * mb}
    assert _cut(both, 2, config) == ("subject", 1)
    # One subject on two local cores: its task denoises and fits with two threads.
    assert _cut({"a": 72 * mb}, 2, config) == ("subject", 2)
    # On a cluster of 4-core executors, one subject cannot use 16 cores: split it.
    assert _cut({"a": 72 * mb}, 16, config, executor_cores=4) == ("volume", 1)
    assert _cut({s: mb for s in "abcd"}, 16, config, executor_cores=4) == ("subject", 4)
    # Past the budget, or a third of the Python worker cap: the 2 GB subject is split whatever the cores.
    cut = choose_granularity({"a": 72 * mb, "big": 2300 * mb}, 2, config)
    assert cut.mode == "volume" and "2300 MiB" in cut.reason
    assert choose_granularity({"big": 2050 * mb}, 2, config, worker_mb=1024).mode == "volume"
    # A header the driver cannot read leaves the decision to the executors' reader.
    assert choose_granularity({"a": 72 * mb, "remote": None}, 2, config).mode == "volume"
    assert choose_granularity({"a": 72 * mb}, 2, NeuroConfig(granularity="volume")).mode == "volume"
    assert choose_granularity(both, 2, NeuroConfig(granularity="subject")).mode == "subject"


def test_reference_threshold_rejects_small_101d():
    _, bval, bvec = get_fnames(name="small_101D")
    bvals, _ = read_bvals_bvecs(str(bval), str(bvec))
    assert not b0_volumes(bvals, 10).any() and bvals.min() == 15
