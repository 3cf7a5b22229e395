"""Step 1: pre-process one image -- mask bad pixels, subtract the sky background, weigh the image, measure its PSF.

The background is :func:`scilens.astro.background.estimate`: sigma-clipped
estimates in boxes, masked pixels left out, approximated by a smooth
polynomial. The image's co-add weight is Rubin's: the
inverse of the sigma-clipped mean of its variance plane. The PSF is measured
on the background-subtracted image from its own stars
(:func:`scilens.astro.psf.measure_psf`); it sizes the detection kernels of
the co-adds the image goes into.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.stats import sigma_clipped_stats
from astropy.wcs import WCS

from scilens.astro.background import estimate as estimate_background
from scilens.astro.psf import PsfConfig, PsfEstimate, measure_psf
from scilens.core.config import Config, field

__all__ = ["CalibratedImage", "PreprocessConfig", "bad_pixels", "run"]


@dataclass
class PreprocessConfig(Config):
    """How an image is cleaned before warping."""

    background_box_px: int = field(64, "Side of the boxes the sky background is estimated in, pixels.", min=4)
    background_order: int | None = field(2, "Order of the Chebyshev approximation of the background (Rubin's "
                                            "approxOrderX); null: photutils' spline map instead.", min=0)
    background_filter_px: int = field(3, "Median filter over the box estimates, in boxes (odd); only without "
                                         "background_order.", min=1, check=lambda v: v % 2 == 1, check_doc="odd")
    bad_mask_bits: int | None = field(None, "Mask bits that make a pixel unusable; null: any non-zero bit.", min=1)


@dataclass
class CalibratedImage:
    """A background-subtracted image: bad pixels are NaN in flux and variance."""

    image_id: str
    path: str
    flux: np.ndarray
    variance: np.ndarray
    mask: np.ndarray
    wcs: WCS
    weight: float
    """Co-add weight: 1 / clipped mean variance per pixel of this image."""
    background: float
    """Mean subtracted background, image units (for the record)."""
    psf: PsfEstimate | None = None
    """The image's PSF measured from its stars (or the fallback, saying so)."""


def bad_pixels(flux: np.ndarray, variance: np.ndarray, mask: np.ndarray | None, bad_bits: int | None) -> np.ndarray:
    """Pixels that carry no usable value: masked, or with a non-finite flux or a non-positive variance."""
    bad = ~np.isfinite(flux) | ~np.isfinite(variance) | (variance <= 0)
    if mask is not None:
        bad |= (mask != 0) if bad_bits is None else (mask & bad_bits) != 0
    return bad


def pixel_scale_arcsec(wcs: WCS) -> float:
    """Mean pixel scale of a celestial WCS at its reference point, arcsec per pixel."""
    from astropy.wcs.utils import proj_plane_pixel_scales

    return float(np.mean(proj_plane_pixel_scales(wcs.celestial))) * 3600.0


def run(image_id: str, path: str, flux: np.ndarray, variance: np.ndarray, mask: np.ndarray | None, wcs: WCS,
        config: PreprocessConfig, psf_config: PsfConfig | None = None) -> CalibratedImage:
    """Pre-process one image and measure its PSF.

    Raises
    ------
    ValueError
        When no pixel is usable (all masked) or the background cannot be estimated.
    """
    bad = bad_pixels(flux, variance, mask, config.bad_mask_bits)
    if bad.all():
        raise ValueError(f"{path}: every pixel is masked or invalid; nothing to co-add")
    background = estimate_background(flux, bad, config.background_box_px, config.background_order,
                                     config.background_filter_px)
    sub = (flux - background).astype(np.float32)
    sub[bad] = np.nan
    var = np.where(bad, np.nan, variance).astype(np.float32)
    mean_var = sigma_clipped_stats(var[~bad], sigma=3.0, maxiters=5)[0]
    out_mask = np.zeros(flux.shape, np.int32) if mask is None else np.asarray(mask, dtype=np.int32)
    psf = measure_psf(sub, var, bad, pixel_scale_arcsec(wcs), psf_config)
    return CalibratedImage(image_id, path, sub, var, out_mask, wcs, float(1.0 / mean_var),
                           float(np.mean(background[~bad])), psf)
