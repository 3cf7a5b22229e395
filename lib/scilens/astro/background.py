"""Smooth sky-background maps, shared by pre-processing (per image) and detection (per co-add).

Sigma-clipped SExtractor-style estimates in boxes (photutils ``Background2D``)
are approximated by a 2-D Chebyshev polynomial fitted by iteratively clipped
least squares, as Rubin's background task does (``useApprox``,
``approxOrderX``). A spline through the box estimates, photutils' own map,
goes flat over the outer half box: on a sky with a gradient that leaves an
offset of half a box times the slope along every edge of every CCD, which
later piles up along the co-add's CCD boundaries; the polynomial does not.
"""

from __future__ import annotations

import numpy as np
from numpy.polynomial import chebyshev

from scilens.core import compat

__all__ = ["estimate"]


def _box_centres(n: int, box: int) -> np.ndarray:
    starts = np.arange(0, n, box)
    return (starts + np.minimum(starts + box, n) - 1) / 2.0


def _fit_chebyshev(xc: np.ndarray, yc: np.ndarray, values: np.ndarray, weights: np.ndarray, order: tuple[int, int],
                   shape: tuple[int, int]) -> np.ndarray:
    """Weighted, 3-sigma-clipped least-squares fit of a 2-D Chebyshev series; evaluated on every pixel."""
    ny, nx = shape

    def scaled(v: np.ndarray, n: int) -> np.ndarray:
        return 2.0 * v / max(n - 1, 1) - 1.0

    yy, xx = np.meshgrid(yc, xc, indexing="ij")
    keep = np.isfinite(values) & (weights > 0)
    coef = np.zeros((order[1] + 1, order[0] + 1))
    for _ in range(3):
        if keep.sum() < (order[0] + 1) * (order[1] + 1):
            break
        design = chebyshev.chebvander2d(scaled(yy[keep], ny), scaled(xx[keep], nx), (order[1], order[0]))
        sw = np.sqrt(weights[keep])
        solution = np.linalg.lstsq(design * sw[:, None], values[keep] * sw, rcond=None)[0]
        coef = solution.reshape(order[1] + 1, order[0] + 1)
        model = chebyshev.chebval2d(scaled(yy, ny), scaled(xx, nx), coef)
        resid = np.where(keep, values - model, 0.0)
        scatter = 1.4826 * np.median(np.abs(resid[keep])) if keep.any() else 0.0
        clipped = keep & (np.abs(resid) > 3 * scatter) if scatter > 0 else keep & False
        if not clipped.any():
            break
        keep &= ~clipped
    ys = scaled(np.arange(ny, dtype=np.float64), ny)
    xs = scaled(np.arange(nx, dtype=np.float64), nx)
    # Separable evaluation: sum_ij c_ij T_i(y) T_j(x) = T(y) @ c @ T(x)^T.
    return chebyshev.chebvander(ys, order[1]) @ coef @ chebyshev.chebvander(xs, order[0]).T


def estimate(data: np.ndarray, bad: np.ndarray, box_px: int, order: int | None, filter_px: int = 3) -> np.ndarray:
    """A background map of ``data`` ignoring ``bad`` pixels.

    Parameters
    ----------
    data : ndarray (ny, nx)
    bad : ndarray of bool
        Pixels to leave out (masked, no data).
    box_px : int
        Side of the boxes the sky is estimated in.
    order : int or None
        Order of the Chebyshev approximation along each axis (capped at the
        number of boxes minus one); None: photutils' median-filtered
        (``filter_px`` boxes) spline map instead.

    Raises
    ------
    ValueError
        When too few boxes have enough good pixels.
    """
    from photutils.background import Background2D

    box = min(box_px, *data.shape)
    clean = np.where(bad, 0.0, data).astype(np.float64)
    try:
        bkg = Background2D(clean, box, mask=bad, filter_size=1 if order is not None else filter_px,
                           exclude_percentile=50.0)
    except ValueError as exc:
        raise ValueError(f"too few unmasked pixels to estimate the sky background ({exc})") from None
    if order is None:
        return np.asarray(bkg.background, dtype=np.float64)
    mesh = np.asarray(bkg.background_mesh, dtype=np.float64)
    npix = np.asarray(compat.n_pixels_mesh(bkg), dtype=np.float64)
    # Boxes Background2D left out (over half masked) hold interpolated values: give them no weight.
    weights = np.where(np.isfinite(mesh) & (npix >= 0.5 * box * box), npix, 0.0)
    yc, xc = _box_centres(data.shape[0], box), _box_centres(data.shape[1], box)
    fit_order = (min(order, len(xc) - 1), min(order, len(yc) - 1))
    return _fit_chebyshev(xc, yc, mesh, weights, fit_order, data.shape)
