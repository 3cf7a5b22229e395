"""Synthetic sky images with known sources, written as FITS with a TAN WCS.

:func:`make_image` renders one CCD image: Gaussian point sources on a sky
background with a gradient, Poisson and read noise, the matching variance
plane and a mask plane with a bad column. The survey generator of the
astronomy pipeline builds on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.wcs import WCS

__all__ = ["SkyImage", "make_image", "tan_wcs"]

BAD_COLUMN = 1
"""Mask bit of a bad detector column."""


@dataclass
class SkyImage:
    """One observed CCD image and its truth."""

    flux: np.ndarray
    variance: np.ndarray
    mask: np.ndarray
    wcs: WCS
    truth: pd.DataFrame

    @property
    def wcs_header(self) -> fits.Header:
        return self.wcs.to_header()


def tan_wcs(shape: tuple[int, int], ra: float, dec: float, pixel_scale_arcsec: float = 0.263,
            rotation_deg: float = 0.0) -> WCS:
    """A TAN WCS centred on (ra, dec) degrees for an image of ``shape`` (ny, nx)."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = [(shape[1] + 1) / 2, (shape[0] + 1) / 2]
    scale = pixel_scale_arcsec / 3600.0
    theta = np.deg2rad(rotation_deg)
    wcs.wcs.cd = scale * np.array([[-np.cos(theta), np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return wcs


def make_image(shape: tuple[int, int] = (256, 256), n_sources: int = 40, seed: int = 0,
               ra: float = 150.0, dec: float = 2.2, sky: float = 100.0, gain: float = 1.0,
               read_noise: float = 5.0, fwhm_px: float = 3.0) -> SkyImage:
    """Render one image with ``n_sources`` Gaussian stars of known position and flux.

    Pixel values are in electrons above bias: star flux plus sky (with a 10 %
    gradient across the image), Poisson noise, and Gaussian read noise. The
    variance plane is the expected variance ``model / gain + read_noise**2``.
    """
    rng = np.random.default_rng(seed)
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    background = sky * (1.0 + 0.1 * (xx / max(nx - 1, 1) - 0.5))
    sigma = fwhm_px / 2.3548
    margin = 4 * sigma
    x = rng.uniform(margin, nx - 1 - margin, n_sources)
    y = rng.uniform(margin, ny - 1 - margin, n_sources)
    flux = 10 ** rng.uniform(3.0, 5.0, n_sources)
    model = background.copy()
    for xi, yi, fi in zip(x, y, flux):
        model += fi / (2 * np.pi * sigma**2) * np.exp(-((xx - xi) ** 2 + (yy - yi) ** 2) / (2 * sigma**2))
    image = rng.poisson(model * gain) / gain + rng.normal(0.0, read_noise, shape)
    variance = model / gain + read_noise**2
    mask = np.zeros(shape, dtype=np.int32)
    bad = int(rng.integers(0, nx))
    mask[:, bad] |= BAD_COLUMN
    wcs = tan_wcs(shape, ra, dec)
    world = wcs.pixel_to_world_values(x, y)
    truth = pd.DataFrame({"id": np.arange(n_sources), "x": x, "y": y, "ra": world[0], "dec": world[1],
                          "flux": flux, "type": "star"})
    return SkyImage(image.astype(np.float32), variance.astype(np.float32), mask, wcs, truth)
