"""The PSF kernel measures the generated FWHM from an image's own stars, at ground and space pixel scales."""

from __future__ import annotations

import numpy as np
import pytest

from scilens.astro.psf import PsfConfig, combined_fwhm, measure_psf
from scilens.synth import profiles


def star_field(fwhm_px: float, kind: str, beta: float = 3.5, seed: int = 0, shape: tuple[int, int] = (400, 400),
               n_stars: int = 80) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A background-subtracted image of stars on a jittered grid, with what must not fool the measurement:
    cosmic rays (sharper than the PSF), galaxies (broader), a saturated (masked) star and close pairs.

    Returns (flux, variance, mask).
    """
    rng = np.random.default_rng(seed)
    ny, nx = shape
    sky, read_noise = 100.0, 5.0
    model = np.full(shape, sky)
    half = int(np.ceil(4 * fwhm_px))
    side = int(np.ceil(np.sqrt(n_stars)))
    margin = 2 * half + 4  # room for a star, its jitter and its companion's stamp
    step = (min(ny, nx) - 2 * margin) / (side - 1)

    def add(stamp: np.ndarray, cx: int, cy: int) -> None:
        h = stamp.shape[0] // 2
        model[cy - h:cy + h + 1, cx - h:cx + h + 1] += stamp

    for k in range(n_stars):
        xi = margin + step * (k % side) + rng.uniform(-0.1, 0.1) * step
        yi = margin + step * (k // side) + rng.uniform(-0.1, 0.1) * step
        cx, cy = round(xi), round(yi)
        flux = 10 ** rng.uniform(3.5, 5.0)
        if kind == "moffat":
            stamp = profiles.moffat_psf((2 * half + 1,) * 2, fwhm_px, beta, x0=half + xi - cx, y0=half + yi - cy,
                                        flux=flux)
        else:
            stamp = profiles.gaussian_psf((2 * half + 1,) * 2, fwhm_px, x0=half + xi - cx, y0=half + yi - cy,
                                          flux=flux)
        if k % 10 == 3:  # a galaxy instead: three times the PSF's width
            stamp = profiles.gaussian_psf((2 * half + 1,) * 2, 3 * fwhm_px, flux=flux)
        add(stamp, cx, cy)
        if k % 10 == 7:  # a close companion: a blend to leave out
            add(profiles.gaussian_psf((2 * half + 1,) * 2, fwhm_px, flux=flux / 2), cx + round(fwhm_px) + 1, cy)
    image = rng.poisson(model).astype(float) + rng.normal(0.0, read_noise, shape)
    for _ in range(40):  # cosmic rays: one or two pixels of high charge
        y, x = rng.integers(5, ny - 5), rng.integers(5, nx - 5)
        image[y, x:x + int(rng.integers(1, 3))] += rng.uniform(2000, 20000)
    mask = np.zeros(shape, np.int32)
    saturated = image > 0.7 * image.max()  # the brightest cores, clipped and masked
    image[saturated] = 0.7 * image.max()
    mask[saturated] = 2
    variance = model + read_noise**2
    return (image - sky).astype(np.float32), variance.astype(np.float32), mask


@pytest.mark.parametrize(("fwhm_arcsec", "scale", "kind", "beta"), [
    (1.0, 0.263, "gaussian", None),   # ground: DECam-like seeing
    (1.2, 0.263, "moffat", 3.5),
    (0.08, 0.04, "moffat", 2.5),      # space: a diffraction-limited 2-pixel PSF with broad wings
    (0.08, 0.04, "gaussian", None),
    (0.06, 0.025, "moffat", 2.5),     # ACS/HRC-like
])
def test_measured_fwhm_matches_the_generated_psf(fwhm_arcsec, scale, kind, beta):
    fwhm_px = fwhm_arcsec / scale
    flux, variance, mask = star_field(fwhm_px, kind, beta or 3.5)
    psf = measure_psf(flux, variance, mask, scale)
    assert psf.measured and psf.n_stars >= 12  # of at most max_stars (20) fitted: the rest were no stars
    assert psf.fwhm_px == pytest.approx(fwhm_px, rel=0.03)
    assert psf.fwhm_arcsec == pytest.approx(fwhm_arcsec, rel=0.03)
    if kind == "moffat":  # the wings are measured too: a Gaussian fits with a large beta
        assert psf.beta == pytest.approx(beta, rel=0.3)
    else:
        assert psf.beta > 8


def test_too_few_stars_fall_back_to_the_config_value_and_say_so():
    rng = np.random.default_rng(1)
    flux = rng.normal(0.0, 10.0, (200, 200)).astype(np.float32)
    variance = np.full(flux.shape, 100.0, np.float32)
    flux[100, 100] += 5000.0  # one cosmic ray is not a PSF
    psf = measure_psf(flux, variance, None, 0.04, PsfConfig(fallback_fwhm_arcsec=0.1))
    assert not psf.measured and psf.n_stars == 0
    assert psf.fwhm_arcsec == 0.1 and psf.fwhm_px == pytest.approx(2.5)


def test_masked_and_invalid_pixels_are_never_used():
    flux, variance, mask = star_field(2.0, "moffat", 2.5)
    clean = measure_psf(flux, variance, mask, 0.04)
    # Hot pixels and garbage on a third of the stars, masked: they must neither count as stars nor enter fits.
    spoiled = flux.copy()
    bad = np.zeros(flux.shape, bool)
    rng = np.random.default_rng(5)
    ys, xs = np.nonzero(flux > 0.2 * flux.max())
    pick = rng.choice(len(ys), size=len(ys) // 3, replace=False)
    bad[ys[pick], xs[pick]] = True
    bad[rng.integers(0, flux.shape[0], 200), rng.integers(0, flux.shape[1], 200)] = True
    spoiled[bad] = 1e6
    masked = mask.copy()
    masked[bad] = 1
    again = measure_psf(spoiled, variance, masked, 0.04)
    assert again.measured and again.fwhm_px == pytest.approx(clean.fwhm_px, rel=0.03)
    nan_variance = np.where(bad, np.nan, variance)
    third = measure_psf(spoiled, nan_variance, mask, 0.04)
    assert third.fwhm_px == pytest.approx(clean.fwhm_px, rel=0.03)


def test_the_combined_fwhm_is_the_second_moment_of_the_weighted_mixture():
    fwhms, weights = np.array([3.0, 5.0, 4.0]), np.array([1.0, 0.5, 2.0])
    xx = np.mgrid[-60:61, -60:61][1].astype(float)
    mixture = sum(w * profiles.gaussian_psf(xx.shape, f) for f, w in zip(fwhms, weights)) / weights.sum()
    sigma2 = (mixture * xx**2).sum() / mixture.sum()  # per axis, pixel integration (1/12) removed below
    expected = np.sqrt(sigma2 - 1 / 12) * 2 * np.sqrt(2 * np.log(2))
    assert combined_fwhm(fwhms, weights) == pytest.approx(expected, rel=1e-3)
    assert combined_fwhm(np.array([np.nan, 2.0]), np.array([1.0, 1.0])) == 2.0
    assert np.isnan(combined_fwhm(np.array([np.nan]), np.array([1.0])))
