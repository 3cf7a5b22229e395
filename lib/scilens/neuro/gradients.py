"""Gradient tables from per-volume b-values and b-vectors, with errors that say what is wrong."""

from __future__ import annotations

import numpy as np
from dipy.core.gradients import GradientTable, gradient_table

__all__ = ["b0_volumes", "make_gradient_table"]


def b0_volumes(bvals: np.ndarray, b0_threshold: float) -> np.ndarray:
    """Which volumes are b0 volumes: dipy's ``b0s_mask`` rule, ``bval <= b0_threshold``.

    NaN b-values (volumes without a gradient entry) are not b0.
    """
    bvals = np.asarray(bvals, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return bvals <= b0_threshold


def make_gradient_table(bvals: np.ndarray, bvecs: np.ndarray, b0_threshold: float) -> GradientTable:
    """dipy's ``gradient_table(bvals, bvecs=bvecs, b0_threshold=b0_threshold)``, checked first.

    Parameters
    ----------
    bvals : ndarray, shape (n,)
        b-values in s/mm², in volume order.
    bvecs : ndarray, shape (n, 3)
        Unit gradient directions (NaN allowed for b0 volumes, as FSL writes them).
    b0_threshold : float
        b-value at or below which a volume is a b0 volume.

    Raises
    ------
    ValueError
        No b0 volume, fewer than six diffusion-weighted volumes, missing
        b-values, or a table dipy refuses (its reason is kept).
    """
    bvals = np.asarray(bvals, dtype=np.float64)
    bvecs = np.asarray(bvecs, dtype=np.float64)
    missing = np.flatnonzero(np.isnan(bvals))
    if missing.size:
        raise ValueError(f"no b-value for volume(s) {_listing(missing)}")
    is_b0 = b0_volumes(bvals, b0_threshold)
    if not is_b0.any():
        raise ValueError(f"no b0 volume: no b-value is <= b0_threshold={b0_threshold:g} "
                         f"(the smallest is {bvals.min():g}); the mask needs at least one")
    if (~is_b0).sum() < 6:
        raise ValueError(f"{(~is_b0).sum()} diffusion-weighted volume(s): a diffusion tensor has six "
                         "unknowns and needs at least six")
    try:
        return gradient_table(bvals, bvecs=bvecs, b0_threshold=b0_threshold)
    except ValueError as exc:
        raise ValueError(f"invalid gradient table: {exc}") from None


def _listing(indices: np.ndarray, limit: int = 10) -> str:
    shown = ", ".join(str(int(i)) for i in indices[:limit])
    return shown + (f" and {indices.size - limit} more" if indices.size > limit else "")
