"""Step 3: co-add the warps of one patch -- weighted mean with iterative 3-sigma clipping.

Per pixel, across the warps that cover it (the visit axis, kept whole):

1. *Clip.* For ``clip_iterations`` rounds, a warp's value is rejected when it
   lies more than ``clip_sigma`` standard deviations from the centre, where
   the centre is the median of the surviving values in the first round (as
   Rubin's ``afw`` MEANCLIP starts from the median: a mean would be dragged
   along by the very cosmic ray it should reject) and their weighted mean
   afterwards. The standard deviation is the pixel's own noise from the
   warp's variance plane, widened by ``clip_amplitude_fraction`` of the
   centre (SWarp's CLIP_AMPFRAC; Gruen et al. 2014, PASP 126, 158) so the
   cores of stars, which differ between visits because the seeing does,
   are not clipped. The spread *across* visits cannot serve: among N values
   none lies more than (N-1)/sqrt(N) sample standard deviations from their
   mean, which is below 3 for N <= 10 -- it could never reject anything in
   a survey of a few visits. Rejections grow by ``clip_grow_px`` pixels
   within their warp, because an artifact's faint wings sit below the
   threshold next to its clipped core.
2. *Combine.* A weighted mean of the survivors with Rubin's per-warp weights
   (1 / mean variance), the variance of that mean, and the number of inputs.

Masked and NaN pixels never take part. The patch is processed in strips of
rows (with a halo for the growing), so memory stays bounded whatever the
patch size and number of visits; the result does not depend on the strip
size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field

import numpy as np
from scipy import ndimage

from scilens.astro.psf import combined_fwhm
from scilens.astro.warp import Warp
from scilens.core.chunking import block_grid
from scilens.core.config import Config, field

__all__ = ["CLIPPED", "FEW_INPUTS", "INPUT_BITS_SHIFT", "NO_DATA", "Coadd", "CoaddConfig", "clipped_mean", "run"]

NO_DATA = 1
"""Co-add mask bit: no input covers the pixel (or every input was rejected)."""
CLIPPED = 2
"""Co-add mask bit: at least one input was clipped here."""
FEW_INPUTS = 4
"""Co-add mask bit: fewer than 3 inputs cover the pixel, too few for clipping to single out an
artifact (with one input nothing can be clipped; with two, an outlier takes its partner with it)."""
MIN_CLIP_INPUTS = 3
INPUT_BITS_SHIFT = 8
"""The mask bits of the inputs (bad column, saturated, ...) are OR-ed into the co-add mask shifted left by
this much: ``coadd.mask >> INPUT_BITS_SHIFT`` are the bits of the inputs masked at a pixel."""


@dataclass
class CoaddConfig(Config):
    """Clipping and combination of a patch's warps."""

    clip_sigma: float = field(3.0, "Reject a value farther than this many standard deviations from the centre.",
                              min=0.5)
    clip_iterations: int = field(2, "Rounds of clipping.", min=0)
    clip_amplitude_fraction: float = field(0.3, "Fraction of the centre's value added in quadrature to a pixel's "
                                                "noise when clipping (spares seeing differences on stars).", min=0.0)
    clip_grow_px: int = field(1, "Grow each clipped region by this many pixels within its warp.", min=0)
    strip_rows: int = field(256, "Rows co-added at a time (bounds memory; does not change the result).", min=8)


@dataclass
class Coadd:
    """A co-added patch: NaN flux and variance where there is no data."""

    flux: np.ndarray
    variance: np.ndarray
    mask: np.ndarray
    count: np.ndarray
    """Number of inputs that went into each pixel."""
    psf_fwhm_arcsec: float = float("nan")
    """FWHM of the co-add's effective PSF: the inputs' FWHMs combined with their weights and areas
    (:func:`scilens.astro.psf.combined_fwhm`), over the inputs whose PSF was measured (all of them when
    none was); NaN when no input carries a PSF."""
    inputs: list[dict] = dataclass_field(default_factory=list)
    """One record per input image: image_id, weight, pixels it covers and its PSF (fwhm_arcsec, fwhm_px,
    beta, n_stars, measured)."""


def _median_of_finite(values: np.ndarray) -> np.ndarray:
    """Median along axis 0 ignoring NaN (NaN where none is finite); a sort, faster than ``nanmedian`` here."""
    ordered = np.sort(values, axis=0)  # NaNs sort last
    n = np.isfinite(values).sum(axis=0)
    lo = np.take_along_axis(ordered, np.maximum((n - 1) // 2, 0)[None], axis=0)[0]
    hi = np.take_along_axis(ordered, np.maximum(n // 2, 0)[None], axis=0)[0]
    return np.where(n > 0, 0.5 * (lo + hi), np.nan)


def clipped_mean(flux: np.ndarray, variance: np.ndarray, weights: np.ndarray,
                 config: CoaddConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Clip and combine a stack.

    Parameters
    ----------
    flux, variance : ndarray, shape (n_inputs, ny, nx)
        Values and their variances; NaN where an input has no data.
    weights : ndarray, shape (n_inputs,)
        Weight of each input.

    Returns
    -------
    mean, mean_variance : ndarray (ny, nx), NaN where nothing survived
    count : ndarray (ny, nx) of int
        Surviving inputs per pixel.
    kept : ndarray (n_inputs, ny, nx) of bool
        Which values went into the mean.
    """
    kept = np.isfinite(flux) & np.isfinite(variance)
    w = weights.astype(np.float64)[:, None, None]
    f = np.where(kept, flux, 0.0).astype(np.float64)
    var = np.where(kept, variance, 0.0).astype(np.float64)
    grow = np.ones((1, 2 * config.clip_grow_px + 1, 2 * config.clip_grow_px + 1), bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        for iteration in range(config.clip_iterations):
            if iteration == 0:
                centre = _median_of_finite(np.where(kept, flux, np.nan))
            else:
                centre = (w * f * kept).sum(axis=0) / (w * kept).sum(axis=0)
            limit = config.clip_sigma**2 * (var + (config.clip_amplitude_fraction * centre) ** 2)
            rejected = kept & ((f - centre) ** 2 > limit)
            if config.clip_grow_px and rejected.any():
                rejected = ndimage.binary_dilation(rejected, structure=grow) & kept
            kept &= ~rejected
        wk = w * kept
        total = wk.sum(axis=0)
        mean = (wk * f).sum(axis=0) / total
        mean_var = (wk**2 * var).sum(axis=0) / total**2
    mean[total == 0] = np.nan
    mean_var[total == 0] = np.nan
    return mean, mean_var, kept.sum(axis=0), kept


def run(warps: Sequence[Warp], shape: tuple[int, int], config: CoaddConfig) -> Coadd:
    """Co-add the warps of one patch of ``shape`` (ny, nx).

    The warps are taken in order of (image_id, box) whatever order they
    arrive in, so every orchestration gives bit-identical pixels.
    """
    warps = sorted(warps, key=lambda w: (w.image_id, w.box.y0, w.box.x0))
    nx = shape[1]
    flux = np.full(shape, np.nan, np.float32)
    variance = np.full(shape, np.nan, np.float32)
    mask = np.zeros(shape, np.int32)
    count = np.zeros(shape, np.int16)
    halo = config.clip_grow_px * config.clip_iterations
    weights_all = np.array([w.weight for w in warps])
    for strip in block_grid(shape, (config.strip_rows, nx), halo=(halo, 0)):
        ya, yb = strip.halo_start[0], strip.halo_stop[0]
        inside = [k for k, w in enumerate(warps) if w.box.y0 < yb and w.box.y0 + w.box.ny > ya]
        core = strip.core_slices[0]
        out = slice(strip.start[0], strip.stop[0])
        if not inside:
            mask[out] |= NO_DATA | FEW_INPUTS
            continue
        stack_f = np.full((len(inside), yb - ya, nx), np.nan, np.float32)
        stack_v = np.full_like(stack_f, np.nan)
        masked = np.zeros((yb - ya, nx), np.int32)
        for s, k in enumerate(inside):
            w = warps[k]
            ra, rb = max(ya, w.box.y0), min(yb, w.box.y0 + w.box.ny)
            cols = slice(w.box.x0, w.box.x0 + w.box.nx)
            stack_f[s, ra - ya:rb - ya, cols] = w.flux[ra - w.box.y0:rb - w.box.y0]
            stack_v[s, ra - ya:rb - ya, cols] = w.variance[ra - w.box.y0:rb - w.box.y0]
            masked[ra - ya:rb - ya, cols] |= w.mask[ra - w.box.y0:rb - w.box.y0]
        mean, mean_var, n, kept = clipped_mean(stack_f, stack_v, weights_all[inside], config)
        valid = np.isfinite(stack_f) & np.isfinite(stack_v)
        clipped = (valid & ~kept).any(axis=0)
        few = valid.sum(axis=0) < MIN_CLIP_INPUTS
        flux[out], variance[out], count[out] = mean[core], mean_var[core], n[core]
        bits = (np.where(n == 0, NO_DATA, 0) | np.where(clipped, CLIPPED, 0) | np.where(few, FEW_INPUTS, 0)
                | (masked << INPUT_BITS_SHIFT))
        mask[out] = bits[core]
    inputs = _input_records(warps)
    # Inputs whose PSF fell back to the configured value (too few stars) count only when none was measured.
    measured = [r for r in inputs if r["psf_measured"]] or inputs
    psf = combined_fwhm(np.array([r["psf_fwhm_arcsec"] for r in measured]),
                        np.array([r["weight"] * r["pixels"] for r in measured]))
    return Coadd(flux, variance, mask, count, psf, inputs)


def _input_records(warps: Sequence[Warp]) -> list[dict]:
    """Per input image of a patch: its weight, pixels with data (its share of the patch) and its PSF."""
    records: dict[str, dict] = {}
    for w in warps:
        psf = w.psf
        rec = records.setdefault(w.image_id, {
            "image_id": w.image_id, "weight": float(w.weight), "pixels": 0,
            "psf_fwhm_arcsec": psf.fwhm_arcsec if psf else float("nan"),
            "psf_fwhm_px": psf.fwhm_px if psf else float("nan"), "psf_beta": psf.beta if psf else float("nan"),
            "psf_stars": psf.n_stars if psf else 0, "psf_measured": bool(psf.measured) if psf else False})
        rec["pixels"] += int(np.isfinite(w.flux).sum())
    return [records[k] for k in sorted(records)]
