"""``scilens astro`` on Spark equals the single-process reference, quarantines bad inputs, and reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.table import Table

from scilens import cli
from tests.astro.conftest import BAD_FILES, TINY_SKYMAP, assert_coadds_equal


def test_coadds_and_catalog_equal_the_reference(spark_run, reference_run):
    out, code = spark_run
    ref, _ = reference_run
    assert code == 0  # bad inputs are rejected, the rest succeed: not a failure without --strict
    assert len(assert_coadds_equal(out, ref)) == 4
    catalog, expected = pd.read_parquet(out / "catalog.parquet"), pd.read_parquet(ref / "catalog.parquet")
    assert len(catalog) > 150
    pd.testing.assert_frame_equal(catalog, expected, check_exact=False, rtol=1e-5)  # as the co-adds
    fits_copy = Table.read(out / "catalog.fits").to_pandas()
    assert np.array_equal(fits_copy["id"], catalog["id"]) and np.allclose(fits_copy["flux"], catalog["flux"])


def test_bad_inputs_are_rejected_with_their_reason(spark, spark_run):
    out, _ = spark_run
    rejected = {Path(r.path).name: r for r in spark.read.parquet(str(out / "_rejected" / "rejected.parquet")).collect()}
    assert set(rejected) == set(BAD_FILES)
    for name, record in rejected.items():
        assert name in record.message  # every reason names its file
    assert "no celestial WCS" in rejected["no_wcs.fits"].message
    assert "no HDU '3' for the variance plane" in rejected["no_variance.fits"].message
    assert rejected["corrupt.fits"].step == "scan"
    assert "every pixel is masked" in rejected["all_masked.fits"].message
    assert rejected["all_masked.fits"].step == "preprocess+warp"
    assert "overlaps no patch" in rejected["elsewhere.fits"].message
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"succeeded": 24, "rejected": 5}
    assert manifest["status"] == "partial"
    steps = {s["name"]: s for s in manifest["steps"]}
    assert steps["sky map"]["counts"]["patches_x"] == 2 and steps["sky map"]["counts"]["outside"] == 1
    work = steps["pre-process, warp, co-add, detect"]["counts"]
    assert work["patches"] == 4 and work["images"] == 24 and work["warp_task_ms"] > 0


def test_report_files(spark_run):
    out, _ = spark_run
    report = out / "report"
    for name in ("coadd.png", "completeness.png", "index.html"):
        assert (report / name).stat().st_size > 500
    page = (report / "index.html").read_text()
    assert "completeness" in page and "coadd.png" in page


def test_config_errors_fail_before_spark(tmp_path, capsys):
    code = cli.main(["astro", "--input", str(tmp_path), "--output", str(tmp_path / "o"),
                     "--set", "coadd.clip_sigma=-1"])
    assert code == 2
    assert "coadd.clip_sigma: -1.0 is below the minimum 0.5" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    with pytest.raises(SystemExit):
        cli.main(["astro", "--help"])
    text = capsys.readouterr().out
    for name in ("skymap.patch_inner_px", "coadd.clip_iterations", "detect.threshold_sigma", "warp.method"):
        assert name in text


def test_nothing_usable_fails(spark, tmp_path, spark_inputs):
    out = tmp_path / "out"
    code = cli.main(["astro", "--input", str(spark_inputs / "corrupt.fits"), "--output", str(out),
                     *[a for s in TINY_SKYMAP for a in ("--set", s)]])
    assert code == 1
    assert not out.exists()  # a run where nothing succeeded commits nothing
    assert not list(tmp_path.glob(".out.*"))
