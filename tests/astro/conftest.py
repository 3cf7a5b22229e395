"""Astro fixtures: one generated survey, its reference run and its Spark run, shared by the astro tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from scilens.astro.config import AstroConfig
from scilens.io import fits as fits_io
from scilens.synth import sky

TINY_SKYMAP = ["skymap.preset=tiny"]
"""The ``tiny`` sky map: 2x2 patches of 300+2x30 px over the tiny survey."""

def assert_coadds_equal(out: Path, ref: Path) -> list[str]:
    """The co-adds of two runs are the same: identical masks and counts, float planes within 1e-5 relative.

    Spark tasks and the reference are separate processes whose float sums may round differently, so the
    float planes get a tolerance far below any science effect. Returns the co-adds' file names.
    """
    names = sorted(p.name for p in (ref / "coadds").glob("*.fits"))
    assert names and names == sorted(p.name for p in (out / "coadds").glob("*.fits"))
    for name in names:
        with fits.open(out / "coadds" / name) as a, fits.open(ref / "coadds" / name) as b:
            for plane in ("IMAGE", "VARIANCE"):
                x, y = a[plane].data.astype(np.float64), b[plane].data.astype(np.float64)
                assert np.array_equal(np.isnan(x), np.isnan(y)), (name, plane)
                ok = ~np.isnan(x)
                assert np.all(np.abs(x[ok] - y[ok]) <= 1e-5 * np.maximum(np.abs(y[ok]), 1e-3)), (name, plane)
            for plane in ("MASK", "COUNT"):
                assert np.array_equal(a[plane].data, b[plane].data), (name, plane)
            assert a["IMAGE"].header["CRPIX1"] == b["IMAGE"].header["CRPIX1"]
    return names


BAD_FILES = ("no_wcs.fits", "no_variance.fits", "corrupt.fits", "all_masked.fits", "elsewhere.fits")


@pytest.fixture(scope="session")
def survey_dir(tmp_path_factory) -> Path:
    """The ``tiny`` survey: 6 visits x 2x2 CCDs of 320x320 px, with truth (seed 0)."""
    root = tmp_path_factory.mktemp("survey")
    sky.write_survey(sky.survey_preset("tiny"), root)
    return root


@pytest.fixture(scope="session")
def astro_config() -> AstroConfig:
    return AstroConfig().with_overrides(TINY_SKYMAP)


@pytest.fixture(scope="session")
def reference_run(survey_dir, astro_config, tmp_path_factory) -> tuple[Path, dict]:
    """The single-process reference on the survey's good images: (output dir, its result)."""
    from bench.reference import astro_ref

    out = tmp_path_factory.mktemp("reference")
    return out, astro_ref.run(str(survey_dir / "images"), out, astro_config)


def write_bad_inputs(root: Path, template: Path) -> list[Path]:
    """One file for each way an input can be unusable, made from a good ``template`` image."""
    image = fits_io.read_image(template)
    wcs = fits_io.header_from_text(image["wcs_header"])
    flux, var, mask = image["flux"], image["variance"], image["mask"]
    paths = [fits_io.write_image(root / "no_wcs.fits", flux, var, mask, None)]
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(flux, header=wcs, name="IMAGE"),
                  fits.ImageHDU(mask, header=wcs, name="MASK")]).writeto(root / "no_variance.fits")
    paths.append(root / "no_variance.fits")
    (root / "corrupt.fits").write_bytes(template.read_bytes()[:2880] + os.urandom(5000))  # header, then garbage
    paths.append(root / "corrupt.fits")
    paths.append(fits_io.write_image(root / "all_masked.fits", flux, var, np.ones_like(mask), wcs))
    far = wcs.copy()
    far["CRVAL1"] = (far["CRVAL1"] + 30.0) % 360.0  # the same CCD, pointed 30 degrees away
    paths.append(fits_io.write_image(root / "elsewhere.fits", flux, var, mask, far))
    return paths


@pytest.fixture(scope="session")
def spark_inputs(survey_dir, tmp_path_factory) -> Path:
    """The survey's images (linked) plus one bad file of each kind."""
    root = tmp_path_factory.mktemp("spark-inputs")
    images = sorted((survey_dir / "images").glob("*.fits"))
    for path in images:
        (root / path.name).symlink_to(path)
    write_bad_inputs(root, images[0])
    return root


@pytest.fixture(scope="session")
def spark_run(spark, spark_inputs, survey_dir, tmp_path_factory) -> tuple[Path, int]:
    """``scilens astro`` on local[2] over the good and bad inputs: (output dir, exit code)."""
    from scilens import cli

    out = tmp_path_factory.mktemp("spark") / "out"
    code = cli.main(["astro", "--input", str(spark_inputs), "--output", str(out),
                     *[a for s in TINY_SKYMAP for a in ("--set", s)],
                     "--set", f"report.truth={survey_dir / 'truth.parquet'}"])
    return out, code
