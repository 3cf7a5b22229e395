"""Light profiles of stars and galaxies, rendered onto pixel grids with known total flux.

Plain numpy functions shared by the sky-survey generator and the galaxy-cutout
dataset. Every renderer integrates over pixels by sub-sampling (``oversample``
points per pixel side) and returns an image whose sum is the flux that falls
on the grid; for a profile well inside the grid that is the requested
``flux`` to well under a percent.

Coordinates follow numpy/astropy pixel conventions: ``x`` is the column, ``y``
the row, and pixel ``(0, 0)`` is centred on ``x = y = 0``.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import fftconvolve
from scipy.special import gamma, gammaincinv

__all__ = [
    "convolve",
    "disk_axis_ratio",
    "gaussian_psf",
    "moffat_psf",
    "sersic",
    "sersic_b",
]

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


def _grid(shape: tuple[int, int], x0: float, y0: float, oversample: int) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel sample coordinates relative to (x0, y0), shaped (ny, nx, oversample**2)."""
    ny, nx = shape
    offsets = (np.arange(oversample) + 0.5) / oversample - 0.5
    dy, dx = np.meshgrid(offsets, offsets, indexing="ij")
    yy = np.arange(ny)[:, None, None] + dy.ravel()[None, None, :] - y0
    xx = np.arange(nx)[None, :, None] + dx.ravel()[None, None, :] - x0
    return np.broadcast_to(xx, (ny, nx, oversample**2)), np.broadcast_to(yy, (ny, nx, oversample**2))


def gaussian_psf(shape: tuple[int, int], fwhm: float, x0: float | None = None, y0: float | None = None,
                 flux: float = 1.0, oversample: int = 5) -> np.ndarray:
    """A circular Gaussian of full width at half maximum ``fwhm`` pixels, centred on (x0, y0)."""
    x0 = (shape[1] - 1) / 2 if x0 is None else x0
    y0 = (shape[0] - 1) / 2 if y0 is None else y0
    xx, yy = _grid(shape, x0, y0, oversample)
    sigma = fwhm * FWHM_TO_SIGMA
    density = np.exp(-(xx**2 + yy**2) / (2 * sigma**2)) / (2 * np.pi * sigma**2)
    return flux * density.mean(axis=-1)


def moffat_psf(shape: tuple[int, int], fwhm: float, beta: float = 3.5, x0: float | None = None,
               y0: float | None = None, flux: float = 1.0, oversample: int = 5) -> np.ndarray:
    """A circular Moffat profile ``(1 + r²/α²)^-β`` with the given ``fwhm`` (pixels) and ``beta``."""
    if beta <= 1:
        raise ValueError(f"Moffat beta must exceed 1 for a finite flux, got {beta}")
    x0 = (shape[1] - 1) / 2 if x0 is None else x0
    y0 = (shape[0] - 1) / 2 if y0 is None else y0
    xx, yy = _grid(shape, x0, y0, oversample)
    alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    density = (beta - 1) / (np.pi * alpha**2) * (1 + (xx**2 + yy**2) / alpha**2) ** (-beta)
    return flux * density.mean(axis=-1)


def sersic_b(n: float) -> float:
    """The Sérsic ``b_n`` for which ``r_eff`` encloses half the light."""
    return float(gammaincinv(2 * n, 0.5))


def sersic(shape: tuple[int, int], x0: float, y0: float, flux: float, r_eff: float, n: float = 1.0,
           axis_ratio: float = 1.0, angle_deg: float = 0.0, oversample: int = 5) -> np.ndarray:
    """An elliptical Sérsic profile with total ``flux``.

    Parameters
    ----------
    shape : (ny, nx)
    x0, y0 : float
        Centre, pixels.
    flux : float
        Total flux of the (untruncated) profile.
    r_eff : float
        Half-light radius along the major axis, pixels.
    n : float
        Sérsic index: 1 exponential disk, 4 de Vaucouleurs bulge.
    axis_ratio : float
        Minor/major axis ratio ``q`` in (0, 1].
    angle_deg : float
        Position angle of the major axis, counter-clockwise from +x.
    """
    if not 0 < axis_ratio <= 1:
        raise ValueError(f"axis_ratio must be in (0, 1], got {axis_ratio}")
    xx, yy = _grid(shape, x0, y0, oversample)
    theta = np.deg2rad(angle_deg)
    u = xx * np.cos(theta) + yy * np.sin(theta)
    v = -xx * np.sin(theta) + yy * np.cos(theta)
    r = np.sqrt(u**2 + (v / axis_ratio) ** 2)
    b = sersic_b(n)
    # Total flux of I_e exp(-b((r/r_e)^(1/n) - 1)) over an ellipse of axis ratio q.
    i_e = flux / (2 * np.pi * n * r_eff**2 * axis_ratio * np.exp(b) * b ** (-2 * n) * gamma(2 * n))
    density = i_e * np.exp(-b * ((r / r_eff) ** (1.0 / n) - 1.0))
    return density.mean(axis=-1)


def disk_axis_ratio(inclination_deg: float, thickness: float = 0.12) -> float:
    """Apparent axis ratio of a thick disk seen at ``inclination_deg`` (0 face-on, 90 edge-on).

    Hubble's oblate-spheroid relation ``q² = cos² i + q0² sin² i`` with intrinsic
    thickness ``q0``.
    """
    i = np.deg2rad(inclination_deg)
    return float(np.sqrt(np.cos(i) ** 2 + thickness**2 * np.sin(i) ** 2))


def convolve(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve with a PSF stamp (normalised to unit sum), keeping the image's shape and flux."""
    kernel = kernel / kernel.sum()
    return fftconvolve(image, kernel, mode="same")
