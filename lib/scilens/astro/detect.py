"""Step 4: detect sources on a co-add -- background, matched filter, 5-sigma threshold, connected components.

1. The residual sky is estimated (:func:`scilens.astro.background.estimate`,
   pixels without data left out) and subtracted.
2. The image is smoothed with a Gaussian of the co-add's PSF width (the
   matched filter for a point source; the PSF is measured on the input
   images and combined with their weights, :mod:`scilens.astro.psf`, unless
   ``kernel_fwhm_arcsec`` overrides it) and divided by its noise,
   ``sqrt(variance ⊛ kernel²)``. Warping correlates neighbouring pixels, so
   that propagated noise is off by a constant factor; the S/N image is
   divided by its own sigma-clipped standard deviation to make blank sky
   unit-variance.
3. Pixels above ``threshold_sigma`` form connected components (8-connected)
   of at least ``min_pixels`` pixels (photutils ``detect_sources``), and
   blends are split (photutils ``deblend_sources``: multi-thresholding as in
   SExtractor and Rubin's deblender), unless ``deblend`` is off.
4. Each component gets a windowed centroid (SExtractor's XWIN, with a
   PSF-sized window), a Kron flux with its error from the variance plane,
   its area and the OR of the co-add mask bits it covers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from astropy.stats import sigma_clipped_stats
from astropy.wcs import WCS

from scilens.astro.background import estimate as estimate_background
from scilens.astro.coadd import NO_DATA, Coadd
from scilens.core import compat
from scilens.core.config import Config, field
from scilens.synth import profiles

__all__ = ["DETECTION_COLUMNS", "DetectConfig", "detection_kernel", "kernel_fwhm_arcsec", "run", "smooth",
           "windowed_centroids"]

DETECTION_COLUMNS = ["label", "x", "y", "ra", "dec", "flux", "flux_err", "snr", "npix", "flags"]
"""What :func:`run` returns per source (x, y in patch pixels; flags: co-add mask bits in the footprint)."""


@dataclass
class DetectConfig(Config):
    """Source detection on a co-add."""

    threshold_sigma: float = field(5.0, "Detection threshold on the matched-filter S/N image.", min=0.0)
    min_pixels: int = field(5, "Smallest connected component kept, pixels.", min=1)
    kernel_fwhm_arcsec: float | None = field(None, "FWHM of the Gaussian smoothing kernel, arcsec; null: the "
                                                   "co-add's PSF as measured on its input images.", min=0.0)
    background_box_px: int = field(64, "Side of the boxes of the co-add background estimate, pixels.", min=4)
    background_order: int | None = field(2, "Order of the Chebyshev approximation of the co-add background; "
                                            "null: photutils' spline map.", min=0)
    deblend: bool = field(True, "Split blended components (photutils deblend_sources), as SExtractor and Rubin do.")
    deblend_levels: int = field(32, "Deblending: multi-threshold levels between the threshold and the peak "
                                    "(SExtractor DEBLEND_NTHRESH).", min=1)
    deblend_contrast: float = field(0.005, "Deblending: smallest flux fraction of a component kept as a source "
                                           "(SExtractor DEBLEND_MINCONT).", min=0.0, max=1.0)
    kron_params: list[float] = field([2.5, 1.4], "Kron aperture: [scale of the Kron radius, minimum radius in "
                                                 "pixels] (SExtractor's 2.5 and 3.5 px ~ 1.4 Kron units).", min=0.0,
                                     check=lambda v: len(v) == 2, check_doc="two entries")
    visit_sources: bool = field(False, "Also detect each input image's sources on its own (native pixels, the "
                                       "same settings) and match them to the co-add sources it covers, into "
                                       "visit_sources.parquet, so co-add sources can be checked against single "
                                       "visits (scilens assert --set assertions=astro); costs a second read and "
                                       "pre-process of every image.")
    visit_match_arcsec: float = field(1.0, "Radius within which a single-visit detection supports a co-add source, "
                                           "arcsec.", min=0.0)
    visit_key: str = field("EXPNUM", "Primary-header card holding an image's visit number in visit_sources.parquet "
                                     "(DECam EXPNUM; the image id when the card is absent).")


def detection_kernel(fwhm_px: float) -> np.ndarray:
    """A unit-sum, pixel-integrated Gaussian of ``fwhm_px`` as its 1-D factor (a delta for fwhm 0).

    A pixel-integrated circular Gaussian is separable: the 2-D kernel is the
    outer product of this with itself.
    """
    if fwhm_px <= 0:
        return np.ones(1)
    half = max(1, int(np.ceil(2 * fwhm_px)))
    kernel = profiles.gaussian_psf((1, 2 * half + 1), fwhm_px, y0=0.0).ravel()
    return kernel / kernel.sum()


def smooth(image: np.ndarray, kernel_1d: np.ndarray) -> np.ndarray:
    """Convolve with the separable kernel ``outer(kernel_1d, kernel_1d)``, zero outside the image."""
    from scipy import ndimage

    out = ndimage.convolve1d(image, kernel_1d, axis=0, mode="constant")
    return ndimage.convolve1d(out, kernel_1d, axis=1, mode="constant")


def _background(data: np.ndarray, nodata: np.ndarray, config: DetectConfig) -> np.ndarray:
    """Residual sky of a co-add; a constant where too little of the patch has data for a map."""
    try:
        return estimate_background(data, nodata, config.background_box_px, config.background_order)
    except ValueError:
        good = data[~nodata]
        return np.full(data.shape, sigma_clipped_stats(good, sigma=3.0)[1] if good.size else 0.0)


def windowed_centroids(data: np.ndarray, x0: np.ndarray, y0: np.ndarray, sigma: float,
                       max_iter: int = 16, tol: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """SExtractor's windowed centroids (XWIN_IMAGE): iterate ``x += 2 Σ w I (x_i - x) / Σ w I``.

    ``w`` is a Gaussian window of ``sigma`` pixels around the current
    position; for a symmetric source in white noise this converges to the
    centre with nearly the precision of a PSF fit. A source whose iteration
    fails (no positive flux in the window, or a walk of more than ``2 sigma``)
    keeps its starting position.
    """
    half = int(np.ceil(4 * sigma))
    ny, nx = data.shape
    xs, ys = x0.copy(), y0.copy()
    for k in range(len(x0)):
        if not (np.isfinite(x0[k]) and np.isfinite(y0[k])):
            continue
        cx, cy = round(x0[k]), round(y0[k])
        ya, yb, xa, xb = max(cy - half, 0), min(cy + half + 1, ny), max(cx - half, 0), min(cx + half + 1, nx)
        stamp = data[ya:yb, xa:xb]
        gy, gx = np.mgrid[ya:yb, xa:xb]
        x, y = x0[k], y0[k]
        for _ in range(max_iter):
            dx, dy = gx - x, gy - y
            wi = np.exp(-(dx**2 + dy**2) / (2 * sigma**2)) * stamp
            total = wi.sum()
            if not total > 0:
                x, y = x0[k], y0[k]
                break
            step_x, step_y = 2 * (wi * dx).sum() / total, 2 * (wi * dy).sum() / total
            x, y = x + step_x, y + step_y
            if np.hypot(x - x0[k], y - y0[k]) > 2 * sigma:
                x, y = x0[k], y0[k]
                break
            if abs(step_x) < tol and abs(step_y) < tol:
                break
        xs[k], ys[k] = x, y
    return xs, ys


def kernel_fwhm_arcsec(coadd: Coadd, config: DetectConfig) -> float:
    """FWHM of the detection kernel: the config's override, else the co-add's measured PSF."""
    if config.kernel_fwhm_arcsec is not None:
        return float(config.kernel_fwhm_arcsec)
    if not np.isfinite(coadd.psf_fwhm_arcsec):
        raise ValueError("the co-add carries no PSF measurement; set detect.kernel_fwhm_arcsec")
    return float(coadd.psf_fwhm_arcsec)


def run(coadd: Coadd, wcs: WCS, pixel_scale_arcsec: float, config: DetectConfig) -> pd.DataFrame:
    """Detect and measure the sources of a co-add; one row per source with :data:`DETECTION_COLUMNS`.

    The matched filter and the centroid window take the width of
    :func:`kernel_fwhm_arcsec` (in co-add pixels of ``pixel_scale_arcsec``).
    """
    from photutils.segmentation import SourceCatalog, deblend_sources, detect_sources

    nodata = ((coadd.mask & NO_DATA) != 0) | ~np.isfinite(coadd.flux) | ~np.isfinite(coadd.variance)
    empty = pd.DataFrame({c: pd.Series(dtype="float64") for c in DETECTION_COLUMNS}).astype(
        {"label": "int64", "npix": "int64", "flags": "int64"})
    if nodata.all():
        return empty
    data = np.where(nodata, 0.0, coadd.flux).astype(np.float64)
    variance = np.where(nodata, 0.0, coadd.variance).astype(np.float64)
    data = np.where(nodata, 0.0, data - _background(data, nodata, config))
    fwhm_px = kernel_fwhm_arcsec(coadd, config) / pixel_scale_arcsec
    kernel = detection_kernel(fwhm_px)
    smoothed = smooth(data, kernel)
    smoothed_var = smooth(variance, kernel**2)
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = np.where(nodata | (smoothed_var <= 0), 0.0, smoothed / np.sqrt(smoothed_var))
    # Every third pixel along each axis is plenty (and independent enough) for one scale factor.
    sample = snr[::3, ::3][~nodata[::3, ::3]]
    scale = sigma_clipped_stats(sample, sigma=3.0, maxiters=10)[2]
    snr = snr / scale if scale > 0 else snr
    segments = detect_sources(snr, config.threshold_sigma, config.min_pixels, connectivity=8, mask=nodata)
    if segments is None:
        return empty
    if config.deblend:
        segments = deblend_sources(snr, segments, config.min_pixels, **compat.deblend_levels(config.deblend_levels),
                                   contrast=config.deblend_contrast, progress_bar=False)
    error = np.sqrt(variance)
    cat = SourceCatalog(data, segments, convolved_data=smoothed, error=error, mask=nodata, wcs=wcs,
                        kron_params=(config.kron_params[0], config.kron_params[1], 0.0))
    sigma_px = max(fwhm_px, 1.0) * profiles.FWHM_TO_SIGMA
    # Start each window at the smoothed peak: a blend's isophotal centroid lies between its members.
    peaks = np.array([np.unravel_index(np.argmax(np.where(s.data == s.label, smoothed[s.slices], -np.inf)),
                                       s.data.shape) for s in segments.segments]).reshape(-1, 2)
    starts_y = peaks[:, 0] + np.array([s.slices[0].start for s in segments.segments])
    starts_x = peaks[:, 1] + np.array([s.slices[1].start for s in segments.segments])
    x, y = windowed_centroids(data, starts_x.astype(float), starts_y.astype(float), sigma_px)
    ra, dec = wcs.all_pix2world(x, y, 0)
    flux = np.asarray(cat.kron_flux, float)
    flux_err = np.asarray(compat.kron_flux_err(cat), float)
    flags = np.array([np.bitwise_or.reduce(coadd.mask[sl][seg]) if seg.any() else 0
                      for sl, seg in ((s.slices, s.data == s.label) for s in segments.segments)], np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        snr_flux = flux / flux_err
    # Pieces of one footprint whose centroids converge on one position are one source (the ring around a
    # saturated core, masked in every visit, falls apart into such pieces): the brightest piece stays.
    keep = _distinct(x, y, flux, max(0.5 * fwhm_px, 1.0))
    return pd.DataFrame({
        "label": np.asarray(cat.label, np.int64), "x": x, "y": y, "ra": np.asarray(ra), "dec": np.asarray(dec),
        "flux": flux, "flux_err": flux_err, "snr": snr_flux, "npix": np.asarray(cat.area.value, np.int64),
        "flags": flags,
    })[keep].reset_index(drop=True)


def _distinct(x: np.ndarray, y: np.ndarray, flux: np.ndarray, radius: float) -> np.ndarray:
    """Which sources to keep so that none lies within ``radius`` pixels of a brighter one kept."""
    from scipy.spatial import cKDTree

    keep = np.ones(len(x), bool)
    if len(x) < 2:
        return keep
    tree = cKDTree(np.column_stack([x, y]))
    pairs = tree.query_pairs(radius, output_type="ndarray")
    if not len(pairs):
        return keep
    order = np.argsort(-np.nan_to_num(flux, nan=-np.inf), kind="stable")
    rank = np.empty(len(x), int)
    rank[order] = np.arange(len(x))
    neighbours: dict[int, list[int]] = {}
    for a, b in pairs:
        neighbours.setdefault(int(a), []).append(int(b))
        neighbours.setdefault(int(b), []).append(int(a))
    for k in order:
        if keep[k]:
            for j in neighbours.get(int(k), []):
                if rank[j] > rank[k]:
                    keep[j] = False
    return keep
