"""The pipeline (single-process reference, the same kernels as the job) recovers the generated truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits

from scilens.astro import coadd, pipeline, validate
from scilens.astro.report import UNRELIABLE
from scilens.io import fits as fits_io

SNR_MIN = 10.0
MATCH_ARCSEC = 1.0


@pytest.fixture(scope="module")
def scored(reference_run, survey_dir, astro_config):
    out, result = reference_run
    skymap = result["skymap"]
    catalog = pd.read_parquet(out / "catalog.parquet")
    variances = {p: fits.getdata(pipeline.coadd_path(out, skymap, p), "VARIANCE").astype(float)
                 for p in skymap.patch_names()}
    fwhm = pipeline.median_psf_fwhm(out, skymap, skymap.patch_names(), astro_config)  # measured, not configured
    truth = validate.truth_in_patches(pd.read_parquet(survey_dir / "truth.parquet"), skymap, variances, fwhm)
    pairs = validate.match(catalog, truth, MATCH_ARCSEC)
    return catalog, truth, pairs, skymap


def test_completeness_purity_astrometry_photometry(scored):
    catalog, truth, pairs, skymap = scored
    s = validate.score(catalog, truth, pairs, skymap.config.pixel_scale_arcsec, SNR_MIN, exclude_flags=UNRELIABLE)
    # Enough sources that 95 % is a real bar: 5 % of >= 100 is at least 5 misses allowed, not zero.
    assert s.n_true_bright >= 100 and s.n_det_bright >= 100
    assert s.completeness >= 0.95
    assert s.purity >= 0.95
    # Centroid error of a source at S/N 10 is about sigma_psf / (S/N) ~ 1.3 px / 10 per axis; the RMS over
    # all sources above S/N 10 (most of them near it) must stay below 0.2 px.
    assert s.astrometric_rms_px < 0.2
    # Kron apertures hold ~97-99 % of a Moffat or Gaussian star and ~95 % of an exponential disk.
    assert abs(s.median_flux_ratio - 1.0) < 0.02


def test_purity_counts_every_detection_where_clipping_can_work(scored):
    """The only unmatched bright detections are where fewer than 3 visits overlap (single-visit artifacts)."""
    catalog, _, pairs, _ = scored
    matched = np.zeros(len(catalog), bool)
    matched[pairs["det"].to_numpy()] = True
    spurious = catalog[(catalog["snr"] >= SNR_MIN) & ~matched]
    assert ((spurious["flags"] & coadd.FEW_INPUTS) != 0).all(), spurious


def test_cosmic_rays_and_the_trail_give_no_detections(scored, survey_dir):
    catalog, truth, _, _ = scored
    artifacts = pd.read_parquet(survey_dir / "artifacts.parquet")
    assert (artifacts["kind"] == "cosmic_ray").sum() > 100 and (artifacts["kind"] == "trail").sum() > 20
    art = SkyCoord(artifacts["ra"].to_numpy(), artifacts["dec"].to_numpy(), unit="deg")
    det = SkyCoord(catalog["ra"].to_numpy(), catalog["dec"].to_numpy(), unit="deg")
    tru = SkyCoord(truth["ra"].to_numpy(), truth["dec"].to_numpy(), unit="deg")
    # Artifacts on top of a real source cannot be told apart from it: judge those away from any source.
    clear = art.match_to_catalog_sky(tru)[1].arcsec > 3.0
    near = art[clear].match_to_catalog_sky(det)
    hit = near[1].arcsec < 1.5
    hit_flags = catalog["flags"].to_numpy()[near[0][hit]]
    assert clear.sum() > 80
    # Any detection on an artifact must be where fewer than 3 visits overlap (nothing to clip against).
    assert np.all((hit_flags & coadd.FEW_INPUTS) != 0), catalog.iloc[near[0][hit]]


def test_border_sources_appear_exactly_once(scored):
    catalog, truth, pairs, skymap = scored
    det = SkyCoord(catalog["ra"].to_numpy(), catalog["dec"].to_numpy(), unit="deg")
    sep = det.match_to_catalog_sky(det, nthneighbor=2)[1]
    assert sep.arcsec.min() > 2.0  # no source twice (generated sources are >= 4" apart)
    # True sources in the overlap of two patches (within a border of an inner edge) are each found once.
    border = skymap.config.patch_border_px
    shared = np.zeros(len(truth), bool)
    for name in skymap.patch_names():
        x, y = skymap.patch_wcs(name).all_world2pix(truth["ra"], truth["dec"], 0)
        in_outer = (x > 0) & (x < skymap.patch_shape[1] - 1) & (y > 0) & (y < skymap.patch_shape[0] - 1)
        shared |= in_outer & ~skymap.in_inner(name, x, y) & truth["patch"].notna().to_numpy()
    bright = truth["expected_snr"].to_numpy() >= SNR_MIN
    found = np.bincount(pairs["true"].to_numpy(), minlength=len(truth))
    assert (shared & bright).sum() >= 10 and border > 0
    assert np.all(found[shared & bright] == 1)


def test_an_image_contributes_to_every_patch_it_overlaps(reference_run, survey_dir):
    out, result = reference_run
    skymap = result["skymap"]
    infos = [pipeline.scan(str(p), fits_io.FitsLayout()) for p in sorted((survey_dir / "images").glob("*.fits"))]
    counts = {}
    for info in infos:
        counts[info.image_id] = len(skymap.overlaps(info.footprint_ra, info.footprint_dec))
    assert max(counts.values()) >= 2
    rng = np.random.default_rng(0)
    for name in skymap.patch_names():
        with fits.open(pipeline.coadd_path(out, skymap, name)) as hdul:
            mask, count = hdul["MASK"].data, hdul["COUNT"].data
        wcs = skymap.patch_wcs(name)
        ys, xs = rng.integers(0, mask.shape[0], 400), rng.integers(0, mask.shape[1], 400)
        clean = (mask[ys, xs] & ~(coadd.FEW_INPUTS)) == 0  # nothing clipped or masked here
        ra, dec = wcs.all_pix2world(xs, ys, 0)
        covering = np.zeros(len(xs), int)
        clear = np.ones(len(xs), bool)
        for info in infos:  # how many images hold each sampled position; skip those near an image's edge
            ix, iy = fits_io.wcs_from_text(info.wcs_header).all_world2pix(ra, dec, 0)
            ny, nx = info.shape
            covering += (ix > 4) & (ix < nx - 5) & (iy > 4) & (iy < ny - 5)
            clear &= ~((ix > -6) & (ix < nx + 5) & (iy > -6) & (iy < ny + 5)) | (
                (ix > 4) & (ix < nx - 5) & (iy > 4) & (iy < ny - 5))
        inside = clean & clear & (covering > 0)
        assert inside.sum() > 100
        # The COUNT plane is exactly the number of images over each unclipped, unmasked pixel.
        assert np.array_equal(count[ys, xs][inside], covering[inside])


def test_blank_sky_noise_falls_as_one_over_sqrt_visits(survey_dir, astro_config, reference_run):
    """Co-adds of the first 1, 2, 3, 6 visits of one patch: blank-sky scatter ~ 1/sqrt(N) within 15 %."""
    _, result = reference_run
    skymap = result["skymap"]
    patch = "0,0"
    warps = []
    for path in sorted((survey_dir / "images").glob("*.fits")):
        image = pipeline.prepare(fits_io.read_image(path), astro_config)
        warps += [w for w in pipeline.warp_image(image, skymap, astro_config) if w.patch == patch]
    truth = pd.read_parquet(survey_dir / "truth.parquet")
    x, y = skymap.patch_wcs(patch).all_world2pix(truth["ra"], truth["dec"], 0)
    yy, xx = np.mgrid[0:skymap.patch_shape[0], 0:skymap.patch_shape[1]]
    blank = np.ones(yy.shape, bool)
    for xi, yi, flux in zip(x, y, truth["flux"]):
        r = 8 + 4 * max(0.0, np.log10(max(flux, 1.0)) - 3)  # bright sources' wings reach farther
        box = (slice(max(int(yi - r), 0), max(int(yi + r + 1), 0)), slice(max(int(xi - r), 0), max(int(xi + r + 1), 0)))
        blank[box] &= np.hypot(xx[box] - xi, yy[box] - yi) > r
    full = coadd.run(warps, skymap.patch_shape, astro_config.coadd)
    region = blank & (full.count == 6) & (full.mask == 0)
    assert region.sum() > 5000
    stds = {}
    for n in (1, 2, 3, 6):
        subset = [w for w in warps if int(w.image_id[1:5]) < n]
        stack = coadd.run(subset, skymap.patch_shape, astro_config.coadd)
        values = stack.flux[region & (stack.count == n)]
        stds[n] = 1.4826 * np.median(np.abs(values - np.median(values)))  # robust: a few faint sources remain
    for n in (2, 3, 6):
        assert stds[n] / stds[1] == pytest.approx(1 / np.sqrt(n), rel=0.15), stds


def test_reference_outputs_are_complete(reference_run):
    out, result = reference_run
    assert result["images"] == 24 and not result["skipped"]
    files = sorted(Path(out / "coadds").glob("*.fits"))
    assert [f.name for f in files] == ["0_0,0.fits", "0_0,1.fits", "0_1,0.fits", "0_1,1.fits"]
    with fits.open(files[0]) as hdul:
        assert [h.name for h in hdul[1:]] == ["IMAGE", "MASK", "VARIANCE", "COUNT", "INPUTS"]
        assert hdul["COUNT"].data.max() == 6


def test_defaults_measure_each_image_psf_and_the_native_scale(reference_run, survey_dir, astro_config):
    """Only the patch geometry is set (the tiny preset): scale, PSF, kernels and deblending are the defaults."""
    out, result = reference_run
    assert astro_config.detect.kernel_fwhm_arcsec is None and astro_config.detect.deblend
    assert result["skymap"].config.pixel_scale_arcsec == pytest.approx(0.263, rel=1e-4)  # DECam's own scale
    generated = pd.read_parquet(survey_dir / "images.parquet").set_index("image_id")
    images = pd.read_parquet(out / "images.parquet").set_index("image_id")
    measured = images["psf_measured"].astype(bool)
    # 320x320 px CCDs hold a few bright isolated stars each: most images have the 5 a measurement needs.
    assert len(images) == 24 and measured.sum() >= 18 and (images.loc[measured, "psf_stars"] >= 5).all()
    ratio = images["psf_fwhm_arcsec"] / generated.loc[images.index, "seeing_fwhm_arcsec"]
    assert np.all(np.abs(ratio[measured] - 1) < 0.05), ratio
    # The others say so and carry the configured fallback, which the co-adds leave out of their PSF.
    assert (images.loc[~measured, "psf_fwhm_arcsec"] == astro_config.psf.fallback_fwhm_arcsec).all()
    assert (images.loc[~measured, "psf_stars"] == 0).all()
    skymap = result["skymap"]
    for patch in skymap.patch_names():
        fwhm, inputs = pipeline.read_psf(out, skymap, patch)
        used = inputs[inputs["psf_measured"].astype(bool)]
        assert len(used) >= 3 and used["psf_fwhm_arcsec"].min() <= fwhm <= used["psf_fwhm_arcsec"].max()
        assert set(inputs["image_id"]) <= set(images.index)  # names survive the FITS table
