"""Step (2)_N: non-local means denoising of one 3-D volume with its own noise estimate.

Why one volume at a time gives the reference's 4-D result exactly (dipy 1.12):

* ``estimate_sigma`` on 4-D data loops over volumes and computes each sigma
  from that volume alone (with the default ``disable_background_masking=False``
  every voxel counts), so ``estimate_sigma(volume)[0] == estimate_sigma(data)[v]``;
* ``nlmeans`` on 4-D data calls the same 3-D kernel on each volume with that
  volume's sigma and the subject's mask, and casts back to the input dtype,
  exactly as the 3-D call does.

Tasks run dipy with one thread, as Spark already runs one task per core.
That also makes the result reproducible: dipy 1.12's default ``blockwise``
method gives different values from run to run when it uses more than one
thread (the classic method does not), so the reference is compared at one
thread too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scilens.core.config import Config, field

__all__ = ["DenoiseConfig", "DenoisedVolume", "denoise_volume", "estimate_volume_sigma"]


@dataclass
class DenoiseConfig(Config):
    """``dipy.denoise.nlmeans`` parameters; the defaults are the reference call's (dipy's defaults)."""

    method: str = field("blockwise", "Non-local means algorithm: dipy 1.12's default 'blockwise', or "
                        "'classic' (the algorithm dipy used when the dissertation ran).",
                        choices=("blockwise", "classic"))
    # Bounds: a task's cost grows as (2 patch + 1)^3 (2 block + 1)^3 per voxel; past these it runs for days.
    patch_radius: int = field(1, "Radius of the similarity patch, voxels.", min=0, max=5)
    block_radius: int | None = field(None, "Radius of the search block, voxels (null: dipy's default for "
                                     "the method, 2 for blockwise and 5 for classic).", min=1, max=15)
    rician: bool = field(True, "Correct for Rician noise (magnitude MR images).")


@dataclass
class DenoisedVolume:
    """A denoised volume and the noise sigma it was denoised with."""

    data: np.ndarray
    sigma: float


def estimate_volume_sigma(volume: np.ndarray) -> float:
    """Noise standard deviation of one 3-D volume, as ``estimate_sigma`` of the 4-D data gives it."""
    from dipy.denoise.noise_estimate import estimate_sigma

    if volume.ndim != 3:
        raise ValueError(f"expected a 3-D volume, got shape {volume.shape}")
    return float(estimate_sigma(volume)[0])


def _writeable(array: np.ndarray) -> np.ndarray:
    """``array`` itself if it may be written, else a copy (values, dtype and shape unchanged)."""
    return array if array.flags.writeable else array.copy()


def denoise_volume(volume: np.ndarray, mask: np.ndarray, config: DenoiseConfig | None = None,
                   num_threads: int | None = 1) -> DenoisedVolume:
    """Estimate a volume's noise sigma and denoise it where ``mask`` is true (zero elsewhere).

    Parameters
    ----------
    volume : ndarray
        One 3-D volume; the result has its dtype.
    mask : ndarray
        Boolean brain mask of the same shape.
    config : DenoiseConfig, optional
        ``nlmeans`` parameters (default: the reference's).
    num_threads : int or None
        dipy's threads (None: every core). Spark tasks use one (see the module notes).

    Returns
    -------
    DenoisedVolume

    Notes
    -----
    ``volume`` and ``mask`` may be read-only (decoded tensors are read-only
    views): dipy's Cython kernels take typed memoryviews, which refuse a
    read-only buffer, and dipy hands them the array itself whenever it needs
    no conversion (a float64 volume; a C-contiguous one), so such inputs are
    copied here first. Other inputs dipy converts to new arrays anyway.
    """
    from dipy.denoise.nlmeans import nlmeans

    if volume.shape != mask.shape:
        raise ValueError(f"volume of shape {volume.shape} and mask of shape {mask.shape} differ")
    volume, mask = _writeable(volume), _writeable(mask)
    c = config or DenoiseConfig()
    sigma = estimate_volume_sigma(volume)
    data = nlmeans(volume, sigma=sigma, mask=mask, patch_radius=c.patch_radius,
                   block_radius=c.block_radius, rician=c.rician, num_threads=num_threads, method=c.method)
    return DenoisedVolume(data=data, sigma=sigma)
