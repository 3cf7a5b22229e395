"""Step 2: warp a pre-processed image onto a box of a patch, conserving flux.

Flux and variance are resampled together by ``reproject`` (the DeForest
adaptive, anti-aliased resampler by default, with ``conserve_flux=True``).
The variance plane is warped like flux -- as an extensive quantity -- so that
its sum over any aperture larger than the resampling kernel stays the
variance of the flux summed in that aperture. NaN (bad) input pixels make
every output pixel that samples them NaN, as do pixels off the image. Mask
bits travel as one resampled plane per bit: an output pixel gets a bit when
any input pixel carrying it contributes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_area

from scilens.astro.preprocess import CalibratedImage
from scilens.astro.psf import PsfEstimate
from scilens.astro.skymap import PatchBox
from scilens.core.config import Config, field

__all__ = ["Warp", "WarpConfig", "run"]


@dataclass
class WarpConfig(Config):
    """How images are resampled onto patches."""

    method: str = field("adaptive", "reproject algorithm: adaptive (DeForest, flux-conserving), exact "
                                    "(spherical-polygon overlap, slow) or interp (bilinear).",
                        choices=("adaptive", "exact", "interp"))


@dataclass
class Warp:
    """One image resampled onto ``box`` of ``patch``; NaN where it has no data."""

    image_id: str
    patch: str
    box: PatchBox
    flux: np.ndarray
    variance: np.ndarray
    mask: np.ndarray
    weight: float
    """Co-add weight: 1 / mean variance of a warped pixel."""
    psf: PsfEstimate | None = None
    """The PSF of the image this warp comes from (sizes the co-add's detection kernels)."""


def _box_wcs(patch_wcs: WCS, box: PatchBox) -> WCS:
    wcs = patch_wcs.deepcopy()
    wcs.wcs.crpix = [wcs.wcs.crpix[0] - box.x0, wcs.wcs.crpix[1] - box.y0]
    return wcs


def _reproject(planes: np.ndarray, wcs_in: WCS, wcs_out: WCS, shape: tuple[int, int], method: str,
               area_ratio: float) -> np.ndarray:
    """Resample a (k, ny, nx) stack of extensive planes (flux-like: totals are conserved)."""
    from reproject import reproject_adaptive, reproject_exact, reproject_interp

    if method == "adaptive":
        # roundtrip_coords guards all-sky projections against failed inverse transforms; patches are small
        # and their transforms invertible, and skipping the check saves a quarter of the time.
        out, _ = reproject_adaptive((planes, wcs_in), wcs_out, shape_out=shape, conserve_flux=True,
                                    boundary_mode="strict", bad_value_mode="strict", roundtrip_coords=False)
        return out
    fn = reproject_exact if method == "exact" else reproject_interp
    out, _ = fn((planes, wcs_in), wcs_out, shape_out=shape)
    # These conserve surface brightness; a pixel of the output holds area_ratio input pixels' worth.
    return out * area_ratio


def run(image: CalibratedImage, patch: str, patch_wcs: WCS, box: PatchBox, config: WarpConfig) -> Warp:
    """Warp ``image`` onto ``box`` (patch pixels) of ``patch``."""
    wcs_out = _box_wcs(patch_wcs, box)
    area_ratio = float(proj_plane_pixel_area(wcs_out) / proj_plane_pixel_area(image.wcs))
    # Bits as uint32: under numpy 2, 1 << 31 does not fit the int32 mask and raises (NEP 50).
    flags = np.asarray(image.mask).astype(np.int32, copy=False).view(np.uint32)
    bits = [np.uint32(1 << b) for b in range(32) if np.any(flags & np.uint32(1 << b))]
    planes = [image.flux, image.variance] + [(flags & bit != 0).astype(np.float32) for bit in bits]
    out = _reproject(np.stack(planes).astype(np.float64), image.wcs, wcs_out, (box.ny, box.nx), config.method,
                     area_ratio)
    flux, variance = out[0].astype(np.float32), out[1].astype(np.float32)
    nodata = ~np.isfinite(flux) | ~np.isfinite(variance)
    flux[nodata], variance[nodata] = np.nan, np.nan
    mask = np.zeros((box.ny, box.nx), np.uint32)
    for plane, bit in zip(out[2:], bits):
        mask[np.nan_to_num(plane) > 1e-3 * area_ratio] |= bit
    return Warp(image.image_id, patch, box, flux, variance, mask.view(np.int32), image.weight / area_ratio,
                image.psf)
