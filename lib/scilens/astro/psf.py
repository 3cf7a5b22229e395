"""Step 1b: measure an image's PSF from its own bright, isolated, unsaturated stars.

Rubin's image characterisation measures the PSF before anything else, and
everything sized by it (the detection matched filter, centroid windows,
apertures) follows. Here, on a background-subtracted image:

1. *Peaks.* Local maxima of the image smoothed by a 1-pixel Gaussian, with
   their S/N from the variance plane. Peaks above ``snr_min`` are
   candidates, brightest first; every peak above S/N 5 counts as a possible
   neighbour. Peaks sharper than any PSF of 1.5 pixels FWHM or more (a side
   neighbour of the brightest pixel below a quarter of it) are cosmic rays.
2. *A first size.* Around the brightest candidates clear of masked pixels,
   the area above half the peak gives a rough FWHM; the median sizes the
   fitting stamps (about 1.5 FWHM in radius) and the isolation radius.
3. *Selection.* A candidate is kept when its stamp lies on the image, its
   core (1 FWHM) has no masked or invalid pixel (a saturated core is
   masked), at most a fifth of its stamp is masked (those pixels are left
   out of the fit), and no other peak lies in the stamp or within half a
   FWHM of its edge. A quick weighted second moment leaves out whatever is
   far from the typical size before fitting.
4. *Fit.* Each kept star is fitted with a pixel-integrated circular Moffat
   profile (free centre, flux, FWHM, beta and a constant), weighted by its
   variance. A Moffat of large beta is a Gaussian, so both kinds of profile
   are measured without bias.
5. *Stellar locus.* Stars share the PSF; cosmic rays are sharper and
   galaxies broader. The FWHM is the median of the fits within 15 % of the
   densest cluster of fitted sizes (the mode), and ``n_stars`` counts them.

With fewer than ``min_stars`` stars in the locus the estimate falls back to
``fallback_fwhm_arcsec`` and says so (``measured`` is False).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from scilens.core.config import Config, field

__all__ = ["PsfConfig", "PsfEstimate", "combined_fwhm", "measure_psf", "moffat_model"]

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
NEIGHBOUR_SNR = 5.0
"""Peaks above this S/N count as neighbours that spoil a star's isolation."""
BETA_RANGE = (1.2, 60.0)
"""Moffat beta allowed in the fit; beta 60 is a Gaussian to better than 1 % in FWHM."""


@dataclass
class PsfConfig(Config):
    """How each input image's PSF is measured."""

    snr_min: float = field(20.0, "Smallest peak S/N (1-pixel-smoothed) of a star used to measure the PSF.", min=1.0)
    min_stars: int = field(5, "Fewest stars for a measurement; with fewer, fallback_fwhm_arcsec is used.", min=1)
    max_stars: int = field(20, "Most stars fitted per image (the brightest isolated ones).", min=1)
    fallback_fwhm_arcsec: float = field(1.0, "PSF FWHM assumed for an image with fewer than min_stars usable "
                                             "stars, arcsec (recorded as not measured).", min=0.0)


@dataclass
class PsfEstimate:
    """An image's PSF: FWHM, Moffat beta and how it was obtained."""

    fwhm_px: float
    """FWHM in the image's own pixels."""
    fwhm_arcsec: float
    beta: float
    """Median fitted Moffat beta of the stars (NaN when not measured; large means Gaussian)."""
    n_stars: int
    """Stars in the stellar locus the FWHM is the median of."""
    measured: bool
    """False when the fallback FWHM was used (too few stars)."""

    def as_dict(self) -> dict:
        """The estimate as a plain dict of its fields."""
        return asdict(self)


def moffat_model(shape: tuple[int, int], x0: float, y0: float, flux: float, fwhm: float, beta: float,
                 oversample: int = 3) -> np.ndarray:
    """A pixel-integrated circular Moffat of total ``flux`` (sub-sampled ``oversample`` x ``oversample``)."""
    ny, nx = shape
    offsets = (np.arange(oversample) + 0.5) / oversample - 0.5
    xs = (np.arange(nx)[:, None] + offsets[None, :]).ravel() - x0
    ys = (np.arange(ny)[:, None] + offsets[None, :]).ravel() - y0
    alpha2 = (fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))) ** 2
    r2 = ys[:, None] ** 2 + xs[None, :] ** 2
    density = (beta - 1) / (np.pi * alpha2) * (1 + r2 / alpha2) ** (-beta)
    return flux * density.reshape(ny, oversample, nx, oversample).mean(axis=(1, 3))


def _peaks(data: np.ndarray, variance: np.ndarray,
           bad: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Local maxima of the 1-pixel-smoothed image: (y, x, S/N, smoothed value), S/N >= NEIGHBOUR_SNR."""
    sigma = 1.0
    smoothed = ndimage.gaussian_filter(data, sigma, mode="constant")
    # The square of a unit Gaussian kernel of sigma is a unit Gaussian of sigma/sqrt(2) over 4 pi sigma².
    noise2 = ndimage.gaussian_filter(variance, sigma / np.sqrt(2), mode="constant") / (4 * np.pi * sigma**2)
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = np.where(bad | (noise2 <= 0), 0.0, smoothed / np.sqrt(noise2))
    peak = (snr == ndimage.maximum_filter(snr, size=3, mode="constant")) & (snr >= NEIGHBOUR_SNR)
    y, x = np.nonzero(peak)
    return y, x, snr[y, x], smoothed[y, x]


def _sharp(data: np.ndarray, y: int, x: int) -> bool:
    """Whether a peak is sharper than any PSF sampled at 1.5 pixels FWHM or more: a cosmic ray.

    At its brightest pixel a star's four side neighbours all keep more than a
    quarter of the peak (half of it at 2 pixels FWHM); a cosmic-ray hit or
    track, straight or diagonal, leaves at least one of them near zero (the
    L.A.Cosmic idea, without the Laplacian).
    """
    ny, nx = data.shape
    ya, yb, xa, xb = max(y - 1, 0), min(y + 2, ny), max(x - 1, 0), min(x + 2, nx)
    box = data[ya:yb, xa:xb]
    py, px = np.unravel_index(np.argmax(box), box.shape)
    py, px = py + ya, px + xa
    if not (0 < py < ny - 1 and 0 < px < nx - 1):
        return True
    peak = data[py, px]
    sides = min(data[py - 1, px], data[py + 1, px], data[py, px - 1], data[py, px + 1])
    return not (peak > 0 and sides > 0.25 * peak)


def _half_max_fwhm(data: np.ndarray, y: int, x: int, half: int) -> float:
    """Rough FWHM from the area of the pixels above half the peak (connected to it) in a stamp."""
    stamp = data[max(y - half, 0):y + half + 1, max(x - half, 0):x + half + 1]
    cy, cx = min(y, half), min(x, half)
    above = np.nan_to_num(stamp) >= 0.5 * stamp[cy, cx]
    labels, _ = ndimage.label(above)
    area = int((labels == labels[cy, cx]).sum())
    return 2.0 * np.sqrt(area / np.pi)


class _MoffatStamp:
    """A pixel-integrated Moffat over one stamp with its analytic Jacobian (one evaluation serves both).

    Parameters are (x0, y0, flux, alpha, beta, background); the profile is
    ``flux (beta-1)/(pi alpha²) (1 + r²/alpha²)^-beta`` averaged over
    ``oversample²`` points in each pixel.
    """

    def __init__(self, stamp: np.ndarray, var: np.ndarray, oversample: int):
        ny, nx = stamp.shape
        offsets = (np.arange(oversample) + 0.5) / oversample - 0.5
        self.xs = (np.arange(nx)[:, None] + offsets[None, :]).ravel()
        self.ys = (np.arange(ny)[:, None] + offsets[None, :]).ravel()
        self.shape = (ny, oversample, nx, oversample)
        self.data = stamp.ravel()
        var = var.ravel()
        # Masked pixels (variance 0 here) carry no weight: a star next to a bad column is still measured.
        self.weight = np.where(var > 0, 1.0 / np.sqrt(np.where(var > 0, var, 1.0)), 0.0)
        self._key: bytes | None = None

    def _evaluate(self, p: np.ndarray) -> None:
        key = p.tobytes()
        if key == self._key:
            return
        x0, y0, flux, alpha, beta, _ = p
        dx = (self.xs - x0)[None, :]
        dy = (self.ys - y0)[:, None]
        r2 = dy**2 + dx**2
        u = 1.0 + r2 / alpha**2
        m = (beta - 1) / (np.pi * alpha**2) * u ** (-beta)  # unit flux
        factor = 2 * beta / (u * alpha**2)

        def pix(a: np.ndarray) -> np.ndarray:
            return a.reshape(self.shape).mean(axis=(1, 3)).ravel()

        self.unit = pix(m)
        self.grads = [
            flux * pix(m * factor * dx), flux * pix(m * factor * dy), self.unit,
            flux * pix(m * (-2.0 / alpha + 2.0 * beta * r2 / (u * alpha**3))),
            flux * pix(m * (1.0 / (beta - 1.0) - np.log(u))),
        ]
        self._key = key

    def residual(self, p: np.ndarray) -> np.ndarray:
        self._evaluate(p)
        return (p[2] * self.unit + p[5] - self.data) * self.weight

    def jacobian(self, p: np.ndarray) -> np.ndarray:
        self._evaluate(p)
        return np.column_stack([*self.grads, np.ones_like(self.data)]) * self.weight[:, None]


def _alpha(fwhm: float, beta: float) -> float:
    return fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))


def _fit_star(stamp: np.ndarray, var: np.ndarray, fwhm0: float) -> tuple[float, float] | None:
    """(FWHM, beta) of a Moffat fitted to a stamp centred on a star, or None when the fit fails."""
    from scipy.optimize import least_squares

    ny, nx = stamp.shape
    model = _MoffatStamp(stamp, var, 5 if fwhm0 < 3 else 3)  # an undersampled profile needs finer integration
    total = max(float(stamp.sum()), float(stamp.max()))
    start = [(nx - 1) / 2, (ny - 1) / 2, total, _alpha(fwhm0, 3.0), 3.0, 0.0]
    lower = [start[0] - 2, start[1] - 2, 0.0, 0.05, BETA_RANGE[0], -np.inf]
    upper = [start[0] + 2, start[1] + 2, np.inf, 10 * fwhm0 + 5, BETA_RANGE[1], np.inf]
    try:
        fit = least_squares(model.residual, start, jac=model.jacobian, bounds=(lower, upper), x_scale="jac",
                            ftol=1e-5, xtol=1e-5, max_nfev=60)
    except (ValueError, np.linalg.LinAlgError):
        return None
    if not fit.success or not np.all(np.isfinite(fit.x)):
        return None
    alpha, beta = fit.x[3], fit.x[4]
    return float(2.0 * alpha * np.sqrt(2.0 ** (1.0 / beta) - 1.0)), float(beta)


def _locus(sizes: np.ndarray, tolerance: float = 0.15) -> np.ndarray:
    """Which sizes belong to the densest cluster (the stellar locus): within ``tolerance`` of the mode."""
    sizes = np.where(np.isfinite(sizes) & (sizes > 0), sizes, np.inf)
    counts = np.array([np.sum(np.abs(sizes / s - 1.0) <= 0.1) for s in sizes])
    mode = np.min(sizes[counts == counts.max()])
    centre = np.median(sizes[np.abs(sizes / mode - 1.0) <= 0.1])
    return np.abs(sizes / centre - 1.0) <= tolerance


def _moment_size(stamp: np.ndarray, fwhm0: float) -> float:
    """Gaussian-weighted RMS radius of a stamp around its centre pixel.

    A quick size that sets cosmic rays (a pixel or two) and galaxies apart
    from stars before any fit.
    """
    ny, nx = stamp.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    r2 = (yy - (ny - 1) / 2) ** 2 + (xx - (nx - 1) / 2) ** 2
    weighted = np.clip(stamp, 0.0, None) * np.exp(-r2 / (2 * (0.6 * fwhm0) ** 2))
    total = weighted.sum()
    return float(np.sqrt((weighted * r2).sum() / total)) if total > 0 else float("nan")


def measure_psf(flux: np.ndarray, variance: np.ndarray, mask: np.ndarray | None = None,
                pixel_scale_arcsec: float = 1.0, config: PsfConfig | None = None) -> PsfEstimate:
    """Measure the PSF of a background-subtracted image from its own stars.

    Parameters
    ----------
    flux, variance : ndarray (ny, nx)
        Background-subtracted image and its variance; NaN or non-positive
        variance marks a pixel without data.
    mask : ndarray (ny, nx), optional
        Non-zero where a pixel is unusable (saturated, bad column, ...).
    pixel_scale_arcsec : float
        The image's pixel scale, to give the FWHM in arcsec (and convert the fallback).
    config : PsfConfig, optional
        Selection thresholds and the fallback.

    Returns
    -------
    PsfEstimate
        ``measured`` is False (and the FWHM the fallback) when fewer than
        ``config.min_stars`` stars were usable.
    """
    config = config or PsfConfig()
    bad = ~np.isfinite(flux) | ~np.isfinite(variance) | (np.nan_to_num(variance) <= 0)
    if mask is not None:
        bad |= np.asarray(mask) != 0
    data = np.where(bad, 0.0, flux).astype(np.float64)
    var = np.where(bad, 0.0, variance).astype(np.float64)
    fallback = PsfEstimate(config.fallback_fwhm_arcsec / pixel_scale_arcsec, config.fallback_fwhm_arcsec,
                           float("nan"), 0, False)
    y, x, snr, peak = _peaks(data, var, bad)
    above = np.flatnonzero(snr >= config.snr_min)
    above = above[np.argsort(-peak[above])]  # the brightest first
    cand = [k for k in above[:50 * config.max_stars] if not _sharp(data, int(y[k]), int(x[k]))]
    if len(cand) < config.min_stars:
        return fallback
    # A first size from the brightest candidates clear of masked pixels (in a crowded field a faint star's
    # half-maximum region runs into its brighter neighbours): grow the stamp until it holds the typical one.
    near_bad = ndimage.maximum_filter(bad, size=7, mode="constant")
    bright = [k for k in cand if not near_bad[y[k], x[k]]][:50]
    if not bright:
        return fallback
    half = 6
    while True:
        rough = float(np.median([_half_max_fwhm(data, y[k], x[k], half) for k in bright]))
        if rough < half / 1.5 or half >= 48:
            break
        half *= 2
    rough = max(rough, 1.0)
    fit_half = int(np.ceil(1.5 * rough)) + 2
    isolation = fit_half + 0.5 * rough  # no other peak in the stamp or within half a FWHM of its edge
    core = int(np.ceil(rough))
    from scipy.spatial import cKDTree

    tree = cKDTree(np.column_stack([y, x]))
    ny, nx = data.shape
    usable: list[tuple[int, int, int, int]] = []  # stamp boxes (ya, yb, xa, xb)
    rough_sizes: list[float] = []
    for k in cand:
        if len(usable) >= 4 * config.max_stars:
            break
        yk, xk = int(y[k]), int(x[k])
        ya, yb, xa, xb = yk - fit_half, yk + fit_half + 1, xk - fit_half, xk + fit_half + 1
        # The core must be whole (a saturated star's is masked); masked pixels further out are left out of the fit.
        if ya < 0 or xa < 0 or yb > ny or xb > nx or bad[yk - core:yk + core + 1, xk - core:xk + core + 1].any() \
                or bad[ya:yb, xa:xb].mean() > 0.2:
            continue
        if len(tree.query_ball_point([yk, xk], isolation)) > 1:
            continue
        usable.append((ya, yb, xa, xb))
        rough_sizes.append(_moment_size(data[ya:yb, xa:xb], rough))
    # Leave out what is clearly no star before fitting: cosmic rays (sharper) and galaxies (broader).
    chosen = [box for box, star in zip(usable, _locus(np.array(rough_sizes), 0.25)) if star] if usable else []
    sizes, betas = [], []
    for ya, yb, xa, xb in chosen[:config.max_stars]:  # the brightest first
        fit = _fit_star(data[ya:yb, xa:xb], var[ya:yb, xa:xb], rough)
        if fit is not None:
            sizes.append(fit[0])
            betas.append(fit[1])
    if len(sizes) < config.min_stars:
        return fallback
    sizes_a, betas_a = np.array(sizes), np.array(betas)
    star = _locus(sizes_a)
    if star.sum() < config.min_stars:
        return fallback
    fwhm = float(np.median(sizes_a[star]))
    return PsfEstimate(fwhm, fwhm * pixel_scale_arcsec, float(np.median(betas_a[star])), int(star.sum()), True)


def combined_fwhm(fwhms: np.ndarray, weights: np.ndarray) -> float:
    """FWHM of a weighted sum of PSFs: second moments add with the weights, so FWHM² averages.

    Exact for Gaussians of different widths (the mixture's second moment);
    a co-add's PSF is this mixture (NaN when no input has a finite FWHM).
    """
    fwhms, weights = np.asarray(fwhms, float), np.asarray(weights, float)
    ok = np.isfinite(fwhms) & np.isfinite(weights) & (weights > 0)
    if not ok.any():
        return float("nan")
    return float(np.sqrt(np.sum(weights[ok] * fwhms[ok] ** 2) / np.sum(weights[ok])))
