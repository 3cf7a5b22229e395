"""Galaxy cutouts with known orientation: the face-on vs edge-on task of Galaxy Zoo 2 (question T02).

Each cutout is 69x69 pixels in three bands (SDSS g, r, i), shown the way
Galaxy Zoo volunteers saw SDSS galaxies: a colour image made with Lupton et
al.'s asinh scheme (``astropy.visualization.make_lupton_rgb``, i/r/g to
red/green/blue), stored as uint8. A galaxy is an exponential disk (Sérsic
n = 1) plus a de Vaucouleurs bulge (n = 4), rendered with
:mod:`scilens.synth.profiles`, convolved with a Moffat PSF and given sky noise.

The truth is physical: inclinations are isotropic (cos i uniform), the disk's
apparent axis ratio follows Hubble's thick-disk relation, and the label is
what volunteers would vote: each of ``n_votes`` volunteers calls the galaxy
edge-on with a probability that falls off smoothly with the measured axis
ratio of the light (second moments of the noise-free r band), and the label
is the majority vote. Galaxies near the threshold therefore get noisy labels,
like the real catalogue's, which is where a classifier errs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from scilens.synth import profiles

__all__ = ["BANDS", "CLASS_NAMES", "GalaxySet", "make_galaxies", "moment_axis_ratio", "render_galaxy"]

BANDS = ("g", "r", "i")
CLASS_NAMES = ("face-on", "edge-on")

# Flux share of each band (g, r, i) for a disk and a bulge: bulges are redder.
DISK_COLOUR = np.array([0.30, 0.34, 0.36])
BULGE_COLOUR = np.array([0.18, 0.34, 0.48])


@dataclass
class GalaxySet:
    """Cutouts and their truth.

    Attributes
    ----------
    images : ndarray, uint8, shape (n, size, size, 3)
        Lupton RGB cutouts (red = i, green = r, blue = g).
    labels : ndarray, int64, shape (n,)
        Majority vote: 0 face-on, 1 edge-on.
    truth : DataFrame
        One row per galaxy: inclination_deg, disk_axis_ratio, bulge_fraction,
        disk_r_eff_px, psf_fwhm_px, flux, axis_ratio (measured), edge_on_votes
        (share of volunteers), label.
    """

    images: np.ndarray
    labels: np.ndarray
    truth: pd.DataFrame


def moment_axis_ratio(image: np.ndarray) -> float:
    """Minor/major axis ratio of an image's light from its second moments."""
    total = image.sum()
    yy, xx = np.mgrid[0:image.shape[0], 0:image.shape[1]]
    x0, y0 = (image * xx).sum() / total, (image * yy).sum() / total
    cxx = (image * (xx - x0) ** 2).sum() / total
    cyy = (image * (yy - y0) ** 2).sum() / total
    cxy = (image * (xx - x0) * (yy - y0)).sum() / total
    eig = np.linalg.eigvalsh(np.array([[cxx, cxy], [cxy, cyy]]))
    return float(np.sqrt(max(eig[0], 0.0) / eig[1]))


def render_galaxy(size: int, inclination_deg: float, angle_deg: float, bulge_fraction: float,
                  disk_r_eff: float, flux: float, psf_fwhm: float, thickness: float = 0.12,
                  offset: tuple[float, float] = (0.0, 0.0), oversample: int = 3) -> tuple[np.ndarray, float]:
    """Noise-free g, r, i images (3, size, size) of one galaxy, and its measured r-band axis ratio.

    The bulge has a third of the disk's half-light radius and an axis ratio
    between round and 0.6 depending on inclination (bulges are oblate, not flat).
    """
    c = (size - 1) / 2
    x0, y0 = c + offset[0], c + offset[1]
    q_disk = profiles.disk_axis_ratio(inclination_deg, thickness)
    q_bulge = 1.0 - 0.4 * np.sin(np.deg2rad(inclination_deg)) ** 2
    shape = (size, size)
    disk = profiles.sersic(shape, x0, y0, 1.0, disk_r_eff, n=1.0, axis_ratio=q_disk, angle_deg=angle_deg,
                           oversample=oversample)
    bulge = profiles.sersic(shape, x0, y0, 1.0, max(disk_r_eff / 3, 0.8), n=4.0, axis_ratio=q_bulge,
                            angle_deg=angle_deg, oversample=oversample)
    psf = profiles.moffat_psf((15, 15), psf_fwhm, beta=3.5)
    disk, bulge = profiles.convolve(disk, psf), profiles.convolve(bulge, psf)
    bands = flux * ((1 - bulge_fraction) * DISK_COLOUR[:, None, None] * disk[None]
                    + bulge_fraction * BULGE_COLOUR[:, None, None] * bulge[None])
    return bands, moment_axis_ratio(np.clip(bands[1], 0, None))


def make_galaxies(n: int, seed: int = 0, size: int = 69, n_votes: int = 40, threshold: float = 0.45,
                  softness: float = 0.05, sky_sigma: float = 1.0) -> GalaxySet:
    """Render ``n`` cutouts with isotropic inclinations and volunteer-vote labels.

    Parameters
    ----------
    n : int
    seed : int
        Galaxy ``k`` is drawn from ``numpy.random.default_rng((seed, k))``:
        the first m galaxies are the same for any ``n``.
    size : int
        Cutout side, pixels (69 as in Galaxy Zoo 2 CNN work).
    n_votes : int
        Volunteers per galaxy.
    threshold, softness : float
        A volunteer calls a galaxy edge-on with probability
        ``1 / (1 + exp((q - threshold) / softness))`` for measured axis ratio ``q``.
    sky_sigma : float
        Sky noise per pixel and band, in the flux units of the images.
    """
    from astropy.visualization import make_lupton_rgb

    columns = ("inclination", "angle", "bulge_fraction", "r_eff", "flux", "psf_fwhm", "thickness", "dx", "dy")
    params = {c: np.empty(n) for c in columns}
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    measured = np.empty(n)
    votes = np.empty(n)
    for k in range(n):
        # Galaxy k has its own random stream, so the first m galaxies of any n are the same.
        rng = np.random.default_rng((seed, k))
        g = {"inclination": np.rad2deg(np.arccos(rng.uniform(0.0, 1.0))), "angle": rng.uniform(0.0, 180.0),
             "bulge_fraction": rng.beta(1.5, 4.0), "r_eff": np.exp(rng.normal(np.log(7.0), 0.25)),
             "flux": np.exp(rng.normal(np.log(4000.0), 0.5)), "psf_fwhm": rng.uniform(1.3, 2.6),
             "thickness": rng.uniform(0.08, 0.2), "dx": rng.normal(0.0, 0.8), "dy": rng.normal(0.0, 0.8)}
        for c in columns:
            params[c][k] = g[c]
        bands, measured[k] = render_galaxy(size, g["inclination"], g["angle"], g["bulge_fraction"], g["r_eff"],
                                           g["flux"], g["psf_fwhm"], g["thickness"], (g["dx"], g["dy"]))
        noisy = bands + rng.normal(0.0, sky_sigma, bands.shape)
        images[k] = make_lupton_rgb(noisy[2], noisy[1], noisy[0], stretch=8 * sky_sigma, Q=8)
        p_edge = 1.0 / (1.0 + np.exp((measured[k] - threshold) / softness))
        votes[k] = rng.binomial(n_votes, p_edge) / n_votes
    inclination, thickness = params["inclination"], params["thickness"]
    bulge_fraction, r_eff, psf_fwhm, flux = (params[c] for c in ("bulge_fraction", "r_eff", "psf_fwhm", "flux"))
    labels = (votes > 0.5).astype(np.int64)
    truth = pd.DataFrame({
        "inclination_deg": inclination, "disk_axis_ratio": [profiles.disk_axis_ratio(i, t)
                                                            for i, t in zip(inclination, thickness)],
        "bulge_fraction": bulge_fraction, "disk_r_eff_px": r_eff, "psf_fwhm_px": psf_fwhm, "flux": flux,
        "axis_ratio": measured, "edge_on_votes": votes, "label": labels,
    })
    return GalaxySet(images, labels, truth)
