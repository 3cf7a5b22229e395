"""`scilens ingest` end to end: good files fully ingested, bad ones quarantined, outputs atomic."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from astropy.io import fits

from scilens import cli
from scilens.core import tensor
from scilens.core.job import Job, JobContext, run_job
from scilens.io import fits as fits_io
from scilens.jobs.ingest import IngestConfig
from scilens.synth import sky


@pytest.fixture(scope="module")
def mixed_inputs(tmp_path_factory, small_64d) -> Path:
    """Two good NIfTI-free FITS images, one good 4-D NIfTI, and four bad files."""
    root = tmp_path_factory.mktemp("inputs")
    image_path, bval_path, bvec_path = small_64d
    for name in ("good", "mismatch"):
        shutil.copy(image_path, root / f"{name}.nii")
        shutil.copy(bvec_path, root / f"{name}.bvec")
    shutil.copy(bval_path, root / "good.bval")
    bvals = bval_path.read_text().split()
    (root / "mismatch.bval").write_text(" ".join(bvals[:-1]) + "\n")  # 64 b-values for 65 volumes
    raw = gzip.compress(image_path.read_bytes())
    (root / "truncated.nii.gz").write_bytes(raw[: len(raw) // 2])  # header and some volumes survive
    (root / "noise.fits").write_bytes(np.random.default_rng(0).bytes(5000))
    image = sky.make_image(shape=(40, 50), n_sources=5, seed=1)
    for i in range(2):
        fits_io.write_image(root / f"ccd{i}.fits", image.flux + i, image.variance, image.mask, image.wcs_header)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(image.flux, name="IMAGE"),
                  fits.ImageHDU(image.mask, name="MASK")]).writeto(root / "novariance.fits")
    return root


def _run(*args: str) -> int:
    return cli.main(["ingest", *args])


def test_good_files_ingested_bad_ones_quarantined(spark, mixed_inputs, tmp_path, small_64d):
    out = tmp_path / "out"
    assert _run("--input", str(mixed_inputs), "--output", str(out)) == 0
    volumes = spark.read.parquet(str(out / "volumes.parquet"))
    # Only the good subject: the truncated file's leading volumes must not leak through.
    assert {r.subject for r in volumes.select("subject").distinct().collect()} == {"good"}
    rows = sorted(volumes.collect(), key=lambda r: r.volume)
    expected = np.asanyarray(nib.load(str(small_64d[0])).dataobj)
    assert np.array_equal(np.stack([tensor.decode(r.data) for r in rows], -1), expected)

    images = spark.read.parquet(str(out / "images.parquet"))
    assert sorted(r.image_id for r in images.select("image_id").collect()) == ["ccd0", "ccd1"]

    rejected = {Path(r.path).name: r for r in spark.read.parquet(str(out / "_rejected" / "rejected.parquet")).collect()}
    assert set(rejected) == {"truncated.nii.gz", "mismatch.nii", "noise.fits", "novariance.fits"}
    for name, record in rejected.items():
        assert name in record.message  # every reason names its file
    assert "mismatch.bval has 64 b-values but" in rejected["mismatch.nii"].message
    assert "mismatch.bvec has 65 b-vectors" in rejected["mismatch.nii"].message
    assert "no HDU '3' for the variance plane" in rejected["novariance.fits"].message
    assert "not a readable FITS file" in rejected["noise.fits"].message
    assert rejected["truncated.nii.gz"].step == "read_nifti"

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"succeeded": 3, "rejected": 4}
    assert manifest["status"] == "partial"
    assert manifest["config"]["fits"]["variance"] == "3"
    assert {s["name"] for s in manifest["steps"]} >= {"list inputs", "ingest volumes", "ingest images"}
    import pyspark

    assert manifest["versions"]["pyspark"] == pyspark.__version__  # the stack's own (3.5 or 4.0)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_strict_fails_on_rejections_and_rerun_replaces(spark, mixed_inputs, tmp_path):
    out = tmp_path / "out"
    assert _run("--input", str(mixed_inputs), "--output", str(out)) == 0
    (out / "stale.txt").write_text("left in an earlier scilens output")
    assert _run("--input", str(mixed_inputs), "--output", str(out), "--strict") == 1
    assert not (out / "stale.txt").exists()  # replaced as a whole, not merged
    assert (out / "manifest.json").exists()


def test_nothing_succeeding_exits_nonzero_and_keeps_the_previous_output(spark, mixed_inputs, tmp_path):
    out = tmp_path / "out"
    assert _run("--input", str(mixed_inputs), "--output", str(out)) == 0
    before = json.loads((out / "manifest.json").read_text())
    assert _run("--input", str(mixed_inputs / "noise.fits"), "--output", str(out)) == 1
    assert json.loads((out / "manifest.json").read_text()) == before  # the failed run committed nothing


def test_failed_job_leaves_no_output(spark, tmp_path):
    class Crashing(Job):
        name = "crashing"
        summary = "writes, then fails"

        def run(self, ctx: JobContext) -> int:
            (ctx.output / "half.txt").write_text("partial")
            raise RuntimeError("boom")

    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="boom"):
        run_job(Crashing(), IngestConfig(), [str(tmp_path)], str(out))
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_config_errors_and_help(capsys, tmp_path):
    assert _run("--input", str(tmp_path), "--output", str(tmp_path / "o"), "--set", "formats=[dicom]") == 2
    err = capsys.readouterr().err
    assert "formats: 'dicom' is not allowed; choose one of 'nifti', 'fits'" in err
    with pytest.raises(SystemExit) as info:
        _run("--help")
    assert info.value.code == 0
    text = capsys.readouterr().out
    for name in ("formats", "fits.flux", "fits.variance_is_sigma", "spark.profile", "spark.master"):
        assert name in text
    assert cli.main(["no-such-job"]) == 2


def test_missing_input_is_named(spark, tmp_path):
    assert _run("--input", str(tmp_path / "nowhere"), "--output", str(tmp_path / "o")) == 1
    assert not (tmp_path / "o").exists()


def test_many_small_and_hostile_files_few_tasks_every_path_accounted(spark, tmp_path, small_64d):
    """300 tiny NIfTI files among hostile ones: grouped into a few tasks, good ones ingested, each bad one named."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    tiny = np.arange(3 * 2 * 2 * 2, dtype=np.int16).reshape(3, 2, 2, 2)
    good = {f"tiny{i:03d}.nii" for i in range(300)} | {"odd name ü;$(x) [1].nii.gz", "real.nii"}
    for i, name in enumerate(sorted(good - {"real.nii"})):
        nib.save(nib.Nifti1Image(tiny + i, np.eye(4)), str(inputs / name))
    shutil.copy(small_64d[0], inputs / "real.nii")
    (inputs / "empty.nii").write_bytes(b"")
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 0), np.int16), np.eye(4)), str(inputs / "novolumes.nii"))
    (inputs / "loop.nii").symlink_to(inputs / "loop.nii")
    header = nib.Nifti1Header()  # 2 GiB a volume claimed by a 2.4 KB file
    header.set_data_dtype(np.int16)
    header.set_data_shape((1024, 1024, 1024, 1))
    header.set_data_offset(352)
    with open(inputs / "liar.nii", "wb") as handle:
        header.write_to(handle)
        handle.write(b"\0" * (352 - handle.tell()) + b"\1" * 2000)

    tracker = spark.sparkContext.statusTracker()
    jobs_before = set(tracker.getJobIdsForGroup())
    out = tmp_path / "out"
    assert _run("--input", str(inputs), "--output", str(out)) == 0
    stages = [s for j in set(tracker.getJobIdsForGroup()) - jobs_before for s in tracker.getJobInfo(j).stageIds]
    tasks = [tracker.getStageInfo(s).numTasks for s in stages if tracker.getStageInfo(s)]
    assert tasks and max(tasks) <= 8  # one task per file would be 306

    volumes = spark.read.parquet(str(out / "volumes.parquet"))
    counts = {Path(r.path).name: r["count"] for r in volumes.groupBy("path").count().collect()}
    assert counts == {**{name: 2 for name in good}, "real.nii": 65}
    row = volumes.where(volumes.path == str(inputs / "tiny123.nii")).where("volume = 1").first()
    assert np.array_equal(tensor.decode(row.data), tiny[..., 1] + 124)  # sorted(): the odd name comes first
    rejected = {Path(r.path).name: r.message
                for r in spark.read.parquet(str(out / "_rejected" / "rejected.parquet")).collect()}
    assert set(rejected) == {"empty.nii", "novolumes.nii", "loop.nii", "liar.nii"}
    assert "empty file (0 bytes)" in rejected["empty.nii"]
    assert "4-D image with 0 volumes" in rejected["novolumes.nii"]
    assert "Too many levels of symbolic links" in rejected["loop.nii"]
    assert f"header claims {352 + 2**31} bytes" in rejected["liar.nii"]
    assert "the file holds only 2352 bytes" in rejected["liar.nii"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"succeeded": len(good), "rejected": 4}
    assert manifest["input_files"] == len(good) + 4  # every path listed ends in the output or in _rejected
