"""Gradient tables from per-volume b-values and b-vectors, with errors that say what is wrong."""

from __future__ import annotations

import numpy as np
from dipy.core.gradients import GradientTable, gradient_table

__all__ = ["BVEC_NORM_TOLERANCE", "b0_volumes", "check_gradients", "make_gradient_table"]

BVEC_NORM_TOLERANCE = 0.01
"""How far from 1 the length of a diffusion-weighted volume's b-vector may be: dipy's own
``gradient_table`` tolerance (``atol=1e-2``), so nothing the reference accepts is refused here."""


def b0_volumes(bvals: np.ndarray, b0_threshold: float) -> np.ndarray:
    """Which volumes are b0 volumes: dipy's ``b0s_mask`` rule, ``bval <= b0_threshold``.

    NaN b-values (volumes without a gradient entry) are not b0.
    """
    bvals = np.asarray(bvals, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return bvals <= b0_threshold


def check_gradients(bvals: np.ndarray, bvecs: np.ndarray, b0_threshold: float, bval_file: str | None = None,
                    bvec_file: str | None = None) -> None:
    """Refuse gradients that are not physical, naming the file, the volumes and the rule.

    dipy takes any number: a negative b-value is ``<= b0_threshold``, so such a
    volume silently becomes a b0 volume and the whole tensor fit is wrong (the
    subject still "succeeds"). Rules: every b-value is present, finite and
    >= 0; every b-vector holds no infinity; the b-vector of a diffusion-weighted
    volume (``b > b0_threshold``) is finite and of unit length within
    :data:`BVEC_NORM_TOLERANCE`. A NaN b-vector is allowed for a b0 volume
    (FSL writes ``nan`` there).

    Parameters
    ----------
    bvals : ndarray, shape (n,)
    bvecs : ndarray, shape (n, 3)
    b0_threshold : float
    bval_file, bvec_file : str, optional
        Where the values came from, for the message.

    Raises
    ------
    ValueError
        The first rule broken, with the volumes (and values) breaking it.
    """
    bvals = np.asarray(bvals, dtype=np.float64)
    bvecs = np.asarray(bvecs, dtype=np.float64).reshape(-1, 3)
    in_vals = f" in {bval_file}" if bval_file else ""
    in_vecs = f" in {bvec_file}" if bvec_file else ""
    if len(bvals) != len(bvecs):
        raise ValueError(f"{len(bvals)} b-values{in_vals} but {len(bvecs)} b-vectors{in_vecs}")
    missing = np.flatnonzero(np.isnan(bvals))
    if missing.size:
        raise ValueError(f"no b-value for volume(s) {_listing(missing)}{in_vals}")
    infinite = np.flatnonzero(np.isinf(bvals))
    if infinite.size:
        raise ValueError(f"infinite b-value for volume(s) {_listing(infinite)}{in_vals}")
    negative = np.flatnonzero(bvals < 0)
    if negative.size:
        raise ValueError(f"negative b-value for volume(s) {_listing(negative, bvals)}{in_vals}; b-values are "
                         ">= 0 s/mm² (a negative one would be taken for a b0 volume)")
    infinite = np.flatnonzero(np.isinf(bvecs).any(axis=1))
    if infinite.size:
        raise ValueError(f"infinite b-vector for volume(s) {_listing(infinite)}{in_vecs}")
    weighted = ~b0_volumes(bvals, b0_threshold)
    nan = np.flatnonzero(weighted & np.isnan(bvecs).any(axis=1))
    if nan.size:
        raise ValueError(f"no b-vector (NaN) for diffusion-weighted volume(s) {_listing(nan)}{in_vecs}")
    norms = np.linalg.norm(bvecs, axis=1)
    off = np.flatnonzero(weighted & (np.abs(norms - 1) > BVEC_NORM_TOLERANCE))
    if off.size:
        raise ValueError(f"b-vector of diffusion-weighted volume(s) {_listing(off, norms)}{in_vecs} is not of unit "
                         f"length (|g| shown; allowed 1 ± {BVEC_NORM_TOLERANCE:g})")


def make_gradient_table(bvals: np.ndarray, bvecs: np.ndarray, b0_threshold: float, bval_file: str | None = None,
                        bvec_file: str | None = None) -> GradientTable:
    """The dipy ``gradient_table(bvals, bvecs=bvecs, b0_threshold=b0_threshold)``, checked first.

    Parameters
    ----------
    bvals : ndarray, shape (n,)
        b-values in s/mm², in volume order.
    bvecs : ndarray, shape (n, 3)
        Unit gradient directions (NaN allowed for b0 volumes, as FSL writes them).
    b0_threshold : float
        b-value at or below which a volume is a b0 volume.
    bval_file, bvec_file : str, optional
        The gradient files, named in messages.

    Raises
    ------
    ValueError
        Gradients that are not physical (:func:`check_gradients`), no b0
        volume, fewer than six diffusion-weighted volumes, or a table dipy
        refuses (its reason is kept).
    """
    bvals = np.asarray(bvals, dtype=np.float64)
    bvecs = np.asarray(bvecs, dtype=np.float64)
    check_gradients(bvals, bvecs, b0_threshold, bval_file, bvec_file)
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


def _listing(indices: np.ndarray, values: np.ndarray | None = None, limit: int = 10) -> str:
    """``"3, 7 and 2 more"``, or with ``values`` ``"3 (-1000), 7 (-5)"``."""
    shown = ", ".join(str(int(i)) if values is None else f"{int(i)} ({values[i]:g})" for i in indices[:limit])
    return shown + (f" and {indices.size - limit} more" if indices.size > limit else "")
