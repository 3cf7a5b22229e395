"""Step (1)_N: mean b0 image and ``median_otsu`` brain mask.

The mean of the b0 volumes is a sum, so it is accumulated volume by volume
(:class:`B0Sum`, mergeable across tasks) and divided once: no task needs the
subject's 4-D array. Sums are kept in float64, where integer voxel values add
exactly in any order; the mean is then cast to the dtype ``numpy.mean`` gives
for the data (float64 for integer data, the float type itself for float data),
so on integer data (dipy's samples, most scanner output) it equals the
reference's ``np.mean(data[..., b0s_mask], -1)`` bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scilens.core.config import Config, field

__all__ = ["B0Sum", "SegmentConfig", "brain_mask", "mean_dtype"]


@dataclass
class SegmentConfig(Config):
    """``median_otsu`` parameters (reference: radius 4, two passes, dilation 1, no autocrop)."""

    # Bounds: a median filter wider than a head (64 voxels across) or more passes and dilations than
    # change a mask are mistakes, and the filter's cost grows with the cube of its radius.
    median_radius: int = field(4, "Radius of the median filter, voxels.", min=1, max=32)
    numpass: int = field(2, "Number of passes of the median filter.", min=1, max=20)
    dilate: int | None = field(1, "Binary dilation iterations applied to the mask (null: none).", min=1, max=50)


def mean_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype of ``numpy.mean`` over an array of ``dtype``."""
    return np.mean(np.zeros(1, dtype=dtype)).dtype


class B0Sum:
    """Running float64 sum of b0 volumes; ``merge`` partial sums from several tasks."""

    def __init__(self, total: np.ndarray | None = None, count: int = 0, dtype: np.dtype | None = None):
        self.total = total
        self.count = count
        self.dtype = None if dtype is None else np.dtype(dtype)

    def add(self, volume: np.ndarray) -> None:
        """Add one 3-D b0 volume."""
        if self.total is None:
            self.total = np.zeros(volume.shape, dtype=np.float64)
            self.dtype = volume.dtype
        elif volume.shape != self.total.shape:
            raise ValueError(f"b0 volume of shape {volume.shape} does not match {self.total.shape}")
        np.add(self.total, volume, out=self.total, casting="unsafe")
        self.count += 1

    def merge(self, other: B0Sum) -> None:
        """Add another partial sum."""
        if other.total is None:
            return
        if self.total is None:
            self.total, self.dtype = other.total.copy(), other.dtype
        else:
            self.total += other.total
        self.count += other.count

    def mean(self) -> np.ndarray:
        """The mean b0 image, in the dtype ``numpy.mean`` gives for the volumes' dtype."""
        if self.total is None or self.dtype is None or self.count == 0:
            raise ValueError("no b0 volume to average")
        return (self.total / self.count).astype(mean_dtype(self.dtype), copy=False)


def brain_mask(mean_b0: np.ndarray, config: SegmentConfig | None = None) -> np.ndarray:
    """Boolean brain mask of the 3-D ``mean_b0`` by ``dipy.segment.mask.median_otsu``.

    Parameters
    ----------
    mean_b0 : ndarray
        The mean b0 image (3-D).
    config : SegmentConfig, optional
        ``median_otsu`` parameters (default: the reference's).

    Returns
    -------
    ndarray
        Boolean mask on the image's grid.

    Notes
    -----
    ``autocrop`` stays off (its default) so the mask keeps the image grid;
    it is not passed, because dipy 1.12 warns on the argument and 1.13
    removes it.
    """
    from dipy.segment.mask import median_otsu

    if mean_b0.ndim != 3:
        raise ValueError(f"mean b0 image must be 3-D, got shape {mean_b0.shape}")
    c = config or SegmentConfig()
    _, mask = median_otsu(mean_b0, median_radius=c.median_radius, numpass=c.numpass, dilate=c.dilate)
    return np.asarray(mask, dtype=bool)
