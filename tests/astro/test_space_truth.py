"""A space-telescope-like crowded field, run with DEFAULT settings (only the input given), recovers the truth.

The ``space`` survey (``scilens.synth.sky``): 4 dithered visits of one
500x500 px CCD at 0.04"/px, a 0.08" (2 px) Moffat PSF, ~2,000 stars per frame
no closer than 3 FWHM, 2,000 cosmic rays per Mpix per exposure. With the
former defaults (a 1" ground-seeing kernel, no deblending, 0.333"/px co-adds)
it gave a few dozen blends of hundreds of stars each.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.table import Table

from scilens.astro import pipeline, validate
from scilens.astro.config import AstroConfig
from scilens.astro.report import UNRELIABLE
from scilens.synth import sky

SNR_MIN = 10.0
MATCH_ARCSEC = 0.08
"""One PSF FWHM (2 native pixels): a star's nearest neighbour is at least 3 FWHM away."""


@pytest.fixture(scope="module")
def space_run(tmp_path_factory):
    from bench.reference import astro_ref

    root = tmp_path_factory.mktemp("space")
    survey = sky.write_survey(sky.survey_preset("space"), root / "survey")
    out = root / "out"
    result = astro_ref.run(str(root / "survey" / "images"), out, AstroConfig())  # defaults only
    return root / "survey", out, result, survey


@pytest.fixture(scope="module")
def space_scored(space_run):
    survey_dir, out, result, _ = space_run
    skymap = result["skymap"]
    patches = [p for p in skymap.patch_names() if pipeline.coadd_path(out, skymap, p).exists()]
    variances = {p: fits.getdata(pipeline.coadd_path(out, skymap, p), "VARIANCE").astype(float) for p in patches}
    catalog = pd.read_parquet(out / "catalog.parquet")
    fwhm = pipeline.median_psf_fwhm(out, skymap, patches, AstroConfig())
    truth = validate.truth_in_patches(pd.read_parquet(survey_dir / "truth.parquet"), skymap, variances, fwhm)
    pairs = validate.match(catalog, truth, MATCH_ARCSEC)
    return catalog, truth, pairs, skymap


def test_the_field_is_crowded_and_has_cosmic_rays(space_run):
    survey_dir, _, result, _ = space_run
    images = pd.read_parquet(survey_dir / "images.parquet")
    assert len(images) == 4 and images["sources"].min() >= 1500
    artifacts = pd.read_parquet(survey_dir / "artifacts.parquet")
    assert (artifacts["kind"] == "cosmic_ray").sum() >= 4 * 300
    assert result["images"] == 4 and not result["skipped"]


def test_default_sky_map_takes_the_native_pixel_scale(space_run):
    _, _, result, survey = space_run
    assert result["skymap"].config.pixel_scale_arcsec == pytest.approx(survey.config.pixel_scale_arcsec, rel=1e-4)


def test_each_image_psf_is_measured_and_recorded(space_run):
    survey_dir, out, result, _ = space_run
    generated = pd.read_parquet(survey_dir / "images.parquet").set_index("image_id")
    images = pd.read_parquet(out / "images.parquet").set_index("image_id")
    assert sorted(images.index) == sorted(generated.index)
    assert images["psf_measured"].all() and (images["psf_stars"] >= 15).all()
    ratio = images["psf_fwhm_arcsec"] / generated.loc[images.index, "seeing_fwhm_arcsec"]
    assert np.all(np.abs(ratio - 1) < 0.05), ratio
    skymap = result["skymap"]
    for patch in skymap.patch_names():
        path = pipeline.coadd_path(out, skymap, patch)
        if path.exists():
            header = fits.getheader(path)
            # The co-add's effective PSF is the weighted mix of its inputs': between their extremes.
            lo, hi = images["psf_fwhm_arcsec"].min(), images["psf_fwhm_arcsec"].max()
            assert lo - 1e-9 <= header["PSFFWHM"] <= hi + 1e-9
            assert header["PSFPIX"] == pytest.approx(header["PSFFWHM"] / skymap.config.pixel_scale_arcsec)
            assert Table.read(path, hdu="INPUTS")["psf_measured"].all()
            assert fits.getheader(out / "catalog.fits", 1)[f"PSF{skymap.patch_number(patch)}"] == pytest.approx(
                header["PSFFWHM"], rel=1e-5)


def test_completeness_and_purity_with_default_settings(space_scored):
    catalog, truth, pairs, skymap = space_scored
    s = validate.score(catalog, truth, pairs, skymap.config.pixel_scale_arcsec, SNR_MIN, exclude_flags=UNRELIABLE)
    assert s.n_true_bright >= 400 and s.n_det_bright >= 300  # crowded: hundreds of stars above S/N 10
    assert s.completeness >= 0.95, s
    assert s.purity >= 0.95, s
    # A 2-pixel PSF at S/N >= 10: centroids good to a small fraction of a pixel.
    assert s.astrometric_rms_px < 0.25, s
