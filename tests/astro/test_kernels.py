"""The pure kernels of the astronomy pipeline against known truth (no Spark)."""

from __future__ import annotations

import numpy as np
import pytest

from scilens.astro import background, coadd, pipeline, warp
from scilens.astro.config import AstroConfig
from scilens.astro.preprocess import CalibratedImage
from scilens.astro.skymap import PatchBox, SkyMap, SkyMapConfig, footprint
from scilens.io import fits as fits_io
from scilens.synth import profiles, sky


def _skymap(nx: int = 3, ny: int = 2, inner: int = 100, border: int = 10) -> SkyMap:
    config = SkyMapConfig(pixel_scale_arcsec=0.333, patch_inner_px=inner, patch_border_px=border, center_ra=150.0,
                          center_dec=2.0, patches=[nx, ny])
    return SkyMap.from_config(config)


def test_patches_tile_the_tract_and_share_its_grid():
    skymap = _skymap()
    tract = skymap.tract_wcs()
    ny, nx = skymap.tract_shape
    x, y = np.meshgrid(np.arange(-15, nx + 15, 3.5), np.arange(-15, ny + 15, 3.5))
    ra, dec = tract.all_pix2world(x.ravel(), y.ravel(), 0)
    owners = np.zeros(x.size, int)
    for name in skymap.patch_names():
        px, py = skymap.patch_wcs(name).all_world2pix(ra, dec, 0)
        ox, oy = skymap.patch_origin(name)
        # Same grid: a sky position's patch pixel is its tract pixel minus the patch origin.
        assert np.allclose(px, x.ravel() - ox, atol=1e-6) and np.allclose(py, y.ravel() - oy, atol=1e-6)
        owners += skymap.in_inner(name, px, py)
    inside = (x.ravel() >= -0.5) & (x.ravel() < nx - 0.5) & (y.ravel() >= -0.5) & (y.ravel() < ny - 0.5)
    assert np.all(owners[inside] == 1)  # every tract position belongs to exactly one inner region
    assert np.all(owners[~inside] == 0)


@pytest.mark.parametrize(("shape", "centre", "expected"), [
    ((50, 50), (150, 150), 1),   # inside one inner region, clear of the borders
    ((50, 50), (200, 150), 2),   # across a vertical patch boundary
    ((50, 50), (200, 200), 4),   # on a patch corner
    ((50, 110), (160, 200), 6),  # reaching into three columns of patches (their 10 px borders) on two rows
])
def test_an_image_overlaps_one_to_six_patches(shape, centre, expected):
    skymap = _skymap(nx=4, ny=3)  # inner 100 px, border 10 px: patch i spans tract x in [100 i - 10, 100 i + 110)
    wcs = skymap.tract_wcs()  # an image on the tract's own grid, its pixel edges spanning centre -+ shape / 2
    wcs.wcs.crpix = [wcs.wcs.crpix[0] - (centre[0] - shape[1] / 2 + 0.5),
                     wcs.wcs.crpix[1] - (centre[1] - shape[0] / 2 + 0.5)]
    overlaps = skymap.overlaps(*footprint(wcs, shape))
    assert len(overlaps) == expected
    for box in overlaps.values():
        assert box.nx > 0 and box.ny > 0
        assert box.x0 >= 0 and box.x0 + box.nx <= skymap.patch_shape[1]


def test_automatic_skymap_covers_the_images_and_leaves_outliers_out():
    cfg = sky.survey_preset("tiny", visits=2)
    survey = sky.make_survey_truth(cfg)
    prints = {}
    for visit in survey.visits:
        for ccd in range(4):
            prints[f"{visit.visit}-{ccd}"] = footprint(sky.ccd_wcs(cfg, visit, ccd), tuple(cfg.ccd_shape))
    far_ra, far_dec = prints["0-0"]
    prints["far"] = (far_ra + 25.0, far_dec)
    skymap = SkyMap.from_config(SkyMapConfig(pixel_scale_arcsec=0.333, patch_inner_px=300, patch_border_px=30),
                                prints)
    assert (skymap.patches_x, skymap.patches_y) == (2, 2)  # 2.9' of mosaic + dithers on 100" patches
    for name, (ra, dec) in prints.items():
        assert bool(skymap.overlaps(ra, dec)) == (name != "far")


def test_named_skymap_presets_set_the_geometry_and_refuse_contradictions():
    from scilens.core.config import ConfigError

    tiny = SkyMapConfig(preset="tiny")
    assert (tiny.patch_inner_px, tiny.patch_border_px, tiny.pixel_scale_arcsec) == (380, 38, None)  # native scale
    paper = SkyMapConfig(preset="dissertation", patch_inner_px=2000)  # agreeing explicitly is fine
    assert (paper.patch_inner_px, paper.patch_border_px, paper.projection) == (2000, 100, "TAN")
    assert paper.pixel_scale_arcsec == 0.333 and paper.with_native_scale([0.04]).pixel_scale_arcsec == 0.333
    with pytest.raises(ConfigError, match="patch_inner_px: 500 contradicts preset 'tiny'"):
        SkyMapConfig(preset="tiny", patch_inner_px=500)
    with pytest.raises(ConfigError, match="preset: 'huge' is not allowed"):
        SkyMapConfig(preset="huge")


def test_default_pixel_scale_is_the_inputs_native_scale(tmp_path):
    """Co-adds default to the median scale of the inputs (no resampling loss), not the 0.333"/px of one survey."""
    images = []
    for k, scale in enumerate([0.04, 0.05, 0.04]):  # a stray image at another scale does not set the grid
        image = sky.make_image((64, 64), n_sources=3, seed=k, fwhm_px=2.0)
        wcs = sky.tan_wcs((64, 64), 150.0, 2.2, scale)
        images.append(fits_io.write_image(tmp_path / f"i{k}.fits", image.flux, image.variance, image.mask,
                                          wcs.to_header()))
    infos = [pipeline.scan(str(p), fits_io.FitsLayout()) for p in images]
    assert [round(i.pixel_scale_arcsec, 6) for i in infos] == [0.04, 0.05, 0.04]
    skymap, inside, _ = pipeline.build_skymap(infos, SkyMapConfig())
    assert skymap.config.pixel_scale_arcsec == 0.04 and len(inside) == 3
    assert AstroConfig().skymap.pixel_scale_arcsec is None
    paper, _, _ = pipeline.build_skymap(infos, SkyMapConfig(preset="dissertation"))
    assert paper.config.pixel_scale_arcsec == 0.333
    with pytest.raises(ValueError, match="pixel scale is automatic"):
        SkyMap.from_config(SkyMapConfig(), {"a": (infos[0].footprint_ra, infos[0].footprint_dec)})


def test_detection_defaults_follow_the_measured_psf_and_deblend():
    """A pair of 2-pixel stars 5 pixels apart on a 0.04"/px co-add: two sources with the defaults."""
    from scilens.astro import detect

    config = detect.DetectConfig()
    assert config.kernel_fwhm_arcsec is None and config.deblend
    shape = (160, 160)
    rng = np.random.default_rng(3)
    flux = rng.normal(0.0, 1.0, shape)
    for x0, y0, f in [(70.2, 80.4, 4000.0), (75.3, 80.1, 2500.0), (40.0, 40.0, 3000.0)]:
        flux += profiles.moffat_psf(shape, 2.0, 2.5, x0=x0, y0=y0, flux=f)
    stack = coadd.Coadd(flux.astype(np.float32), np.ones(shape, np.float32), np.zeros(shape, np.int32),
                        np.full(shape, 4, np.int16), psf_fwhm_arcsec=0.08)
    wcs = sky.tan_wcs(shape, 150.0, 2.2, 0.04)
    found = detect.run(stack, wcs, 0.04, config)
    assert len(found) == 3
    pair = found[found["x"].between(65, 80)].sort_values("x")
    assert np.allclose(pair["x"], [70.2, 75.3], atol=0.3) and np.allclose(pair["y"], [80.4, 80.1], atol=0.3)
    # The former defaults -- a 1" ground-seeing kernel, no deblending -- merge everything into one blob.
    merged = detect.run(stack, wcs, 0.04, detect.DetectConfig(kernel_fwhm_arcsec=1.0, deblend=False))
    assert len(merged) < 3
    with pytest.raises(ValueError, match="no PSF measurement"):
        detect.run(coadd.Coadd(stack.flux, stack.variance, stack.mask, stack.count), wcs, 0.04, config)


def test_background_follows_a_gradient_to_the_edges():
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:320, 0:300]
    sky_level = 1000 + 0.5 * xx - 0.3 * yy
    data = sky_level + rng.normal(0, 30, sky_level.shape)
    bad = np.zeros(data.shape, bool)
    bad[:, 77] = True
    fitted = background.estimate(data, bad, 64, order=2)
    # A box's SExtractor estimate (2.5 median - 1.5 mean) scatters by ~2.5 sigma/sqrt(n) = 2.5*30/64 = 1.2;
    # the order-2 fit over 5x5 boxes, extrapolated half a box to a corner, at most doubles a box's error:
    # 3 sd * 2 = 7.2 anywhere, and well under one sd on average.
    error = np.abs(fitted - sky_level)
    assert error.max() < 8.0 and error.mean() < 1.2
    # photutils' spline map goes flat over the outer half box: 0.5 * 32 = 16 off along the left and right edges.
    spline = background.estimate(data, bad, 64, order=None)
    assert np.abs(spline - sky_level)[:, [0, -1]].mean() > 12.0


def _stack(n: int, rng: np.random.Generator, shape=(40, 40), sigma=10.0):
    flux = rng.normal(0, sigma, (n, *shape)).astype(np.float32)
    variance = np.full((n, *shape), sigma**2, np.float32)
    return flux, variance


def test_clipping_removes_a_cosmic_ray_and_keeps_the_rest():
    rng = np.random.default_rng(2)
    flux, variance = _stack(5, rng)
    weights = np.array([1.0, 0.8, 1.2, 1.0, 0.9])
    flux[2, 20, 20:23] += 3000.0  # a cosmic ray in one visit
    flux[4, 5:8, 5] = np.nan  # a masked pixel run in another
    config = coadd.CoaddConfig(clip_grow_px=0)
    mean, mean_var, count, kept = coadd.clipped_mean(flux, variance, weights, config)
    assert not kept[2, 20, 20:23].any()
    assert np.all(count[20, 20:23] == 4) and np.all(count[5:8, 5] == 4)
    w = weights[[0, 1, 3, 4]]
    expected = (w[:, None] * flux[[0, 1, 3, 4], 20, 20:23]).sum(0) / w.sum()
    assert np.allclose(mean[20, 20:23], expected, rtol=1e-6)
    # A weighted mean's variance: sum(w^2 var) / (sum w)^2.
    assert np.allclose(mean_var[20, 20], (w**2).sum() * 100.0 / w.sum() ** 2, rtol=1e-6)
    # Pure noise is rarely clipped: |x - median| > 3 sigma happens for ~0.5 % of values (the median of 5
    # has its own noise, sigma * 0.54), so of 8000 noise values fewer than 2 % go.
    assert (~kept & np.isfinite(flux)).sum() < 0.02 * flux.size


def test_clipping_spares_stars_whose_seeing_differs():
    fwhms = [3.4, 3.8, 4.2, 4.6, 5.0]  # seeing within +-20 % of the median, as in a survey's visits
    stack = np.stack([profiles.moffat_psf((41, 41), f, flux=2e5) for f in fwhms]).astype(np.float32)
    rng = np.random.default_rng(3)
    variance = (stack + 1000.0).astype(np.float32)
    stack = stack + rng.normal(0, np.sqrt(variance)).astype(np.float32)
    mean, _, _, _ = coadd.clipped_mean(stack, variance, np.ones(5), coadd.CoaddConfig())
    # The co-add of PSFs of equal flux keeps the flux: the sum over the stamp is the mean of the inputs' sums.
    assert mean.sum() == pytest.approx(stack.sum(axis=(1, 2)).mean(), rel=0.01)
    no_amplitude = coadd.CoaddConfig(clip_amplitude_fraction=0.0)
    _, _, count, _ = coadd.clipped_mean(stack, variance, np.ones(5), no_amplitude)
    assert count[20, 20] < 5  # without the amplitude term the sharpest core is clipped


def test_coadd_does_not_depend_on_strips_or_order():
    rng = np.random.default_rng(4)
    warps = []
    for k in range(4):
        box = PatchBox(int(rng.integers(0, 20)), int(rng.integers(0, 20)), 60, 50)
        f = rng.normal(0, 5, (box.ny, box.nx)).astype(np.float32)
        f[rng.integers(0, box.ny), rng.integers(0, box.nx)] = 1e4
        warps.append(warp.Warp(f"img{k}", "0,0", box, f, np.full_like(f, 25.0), np.zeros(f.shape, np.int32), 1.0))
    big = coadd.run(warps, (80, 90), coadd.CoaddConfig(strip_rows=256))
    small = coadd.run(warps[::-1], (80, 90), coadd.CoaddConfig(strip_rows=8))
    for a, b in ((big.flux, small.flux), (big.variance, small.variance), (big.mask, small.mask),
                 (big.count, small.count)):
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    assert big.count.max() == 4 and (big.mask & coadd.CLIPPED).any()


def test_warp_conserves_flux_and_maps_positions():
    shape = (120, 120)
    wcs_in = sky.tan_wcs(shape, 150.0, 2.0, 0.263, rotation_deg=17.0)
    star = profiles.moffat_psf(shape, 4.0, x0=61.3, y0=58.7, flux=1e5)
    image = CalibratedImage("star", "star.fits", star.astype(np.float32), np.full(shape, 50.0, np.float32),
                            np.zeros(shape, np.int32), wcs_in, 1 / 50.0, 0.0)
    skymap = SkyMap.from_config(SkyMapConfig(pixel_scale_arcsec=0.333, patch_inner_px=100, patch_border_px=10,
                                             center_ra=150.0, center_dec=2.0, patches=[1, 1]))
    (name, box), = skymap.overlaps(*footprint(wcs_in, shape)).items()
    out = warp.run(image, name, skymap.patch_wcs(name), box, warp.WarpConfig())
    # Flux is conserved to the resampler's accuracy (DeForest: < 1 %), measured well inside the image.
    assert np.nansum(out.flux) == pytest.approx(1e5, rel=0.01)
    ra, dec = wcs_in.all_pix2world([61.3], [58.7], 0)
    px, py = skymap.patch_wcs(name).all_world2pix(ra, dec, 0)
    yy, xx = np.mgrid[0:box.ny, 0:box.nx]
    f = np.nan_to_num(out.flux)
    cx, cy = (f * xx).sum() / f.sum() + box.x0, (f * yy).sum() / f.sum() + box.y0
    assert np.hypot(cx - px[0], cy - py[0]) < 0.05
    # Variance is warped as an extensive quantity: its total scales with the pixel-area ratio.
    area = (0.333 / 0.263) ** 2
    inner = np.isfinite(out.variance)
    assert np.nanmedian(out.variance[inner]) == pytest.approx(50.0 * area, rel=0.02)


def test_survey_is_deterministic_and_its_truth_is_in_the_pixels():
    cfg = sky.survey_preset("tiny", visits=1, trail_visits=[], cosmic_rays_per_mpix=0.0)
    survey = sky.make_survey_truth(cfg)
    first = next(sky.observe(survey))
    again = next(sky.observe(sky.make_survey_truth(cfg)))
    assert np.array_equal(first[2].flux, again[2].flux)
    image = first[2]
    visit = survey.visits[0]
    fwhm_px = visit.seeing_fwhm_arcsec / cfg.pixel_scale_arcsec
    truth = image.truth[(image.truth["type"] == "star") & (image.truth["mag"].between(17, 21))]
    truth = truth[truth["x"].between(25, 295) & truth["y"].between(25, 295)]
    assert len(truth) >= 3
    yy, xx = np.mgrid[0:320, 0:320]
    sky_level = np.median(image.flux)
    for _, star in truth.iterrows():
        r = np.hypot(xx - star["x"], yy - star["y"])
        ring = image.flux[(r > 5 * fwhm_px) & (r < 7 * fwhm_px)]
        inside = r <= 5 * fwhm_px
        measured = float((image.flux[inside] - np.median(ring)).sum())
        # 5 FWHM holds > 99.9 % of a Moffat(3.5) or Gaussian; noise: sqrt(npix * sky) ~ 1 % of these fluxes.
        noise = np.sqrt(inside.sum() * (sky_level + cfg.read_noise**2) + star["flux"])
        assert abs(measured - star["flux"]) < 4 * noise + 0.002 * star["flux"]


def test_inputs_from_a_manifest(tmp_path):
    (tmp_path / "a.fits").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.fits").write_bytes(b"")
    manifest = tmp_path / "images.txt"
    manifest.write_text("# two images\na.fits\n\n" + str(tmp_path / "sub" / "b.fits") + "  # absolute\n")
    assert pipeline.input_paths([str(manifest)]) == [str(tmp_path / "a.fits"), str(tmp_path / "sub" / "b.fits")]
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="names no image"):
        pipeline.input_paths([str(tmp_path / "empty.txt")])
