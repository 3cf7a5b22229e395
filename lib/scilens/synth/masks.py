"""Saliency-like masks with known structure: a few Gaussian blobs at known centres over weak noise.

Each mask is the sum of ``1..max_blobs`` isotropic Gaussian blobs (heights in
``[0.3, 1]``, widths in ``[size/32, size/8]``) plus uniform noise below
``noise``, as float32. Blob centres are returned, so a test knows where the
salient pixels are.
"""

from __future__ import annotations

import numpy as np

__all__ = ["saliency_masks"]


def saliency_masks(n: int, size: int | tuple[int, int] = 64, *, seed: int = 0, max_blobs: int = 3,
                   noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``n`` saliency-like masks.

    Parameters
    ----------
    n : int
        Number of masks.
    size : int or (int, int), default 64
        Mask side (square) or ``(H, W)``; 64 and 224 are the usual ones.
    seed : int, default 0
        Seed; the same seed gives the same masks.
    max_blobs : int, default 3
        Most blobs per mask (at least 1).
    noise : float, default 0.05
        Amplitude of the uniform background noise.

    Returns
    -------
    tuple of numpy.ndarray
        (n, H, W) float32 masks and (n, max_blobs, 2) float64 blob centres (y, x), NaN where unused.
    """
    h, w = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    masks = (rng.random((n, h, w), dtype=np.float32) * np.float32(noise))
    centres = np.full((n, max_blobs, 2), np.nan)
    counts = rng.integers(1, max_blobs + 1, size=n)
    scale = min(h, w)
    for i in range(n):
        for b in range(int(counts[i])):
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            width = rng.uniform(scale / 32, scale / 8)
            height = rng.uniform(0.3, 1.0)
            centres[i, b] = cy, cx
            gy = np.exp(-((yy - cy) ** 2) / (2 * width**2))
            gx = np.exp(-((xx - cx) ** 2) / (2 * width**2))
            masks[i] += np.float32(height) * (gy * gx)
    return masks, centres
