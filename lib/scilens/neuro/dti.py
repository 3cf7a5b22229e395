"""Step (3)_N: the diffusion tensor model fitted to a set of voxels that carry all volumes.

dipy's ``TensorModel.fit`` fits every voxel on its own (WLS, OLS, NLLS and
RESTORE all work voxel by voxel; ``min_signal`` defaults to a constant), so
fitting the masked voxels of each block separately gives the same FA, MD and
eigenvalues as one fit of the whole masked subject.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from dipy.core.gradients import GradientTable

from scilens.core.config import Config, field

__all__ = ["TensorFitConfig", "VoxelTensors", "fit_tensors"]


@dataclass
class TensorFitConfig(Config):
    """``dipy.reconst.dti.TensorModel`` parameters; the default is the reference's ``TensorModel(gtab)``."""

    fit_method: str = field("WLS", "Tensor fit: weighted (WLS) or ordinary (OLS) least squares, non-linear "
                            "least squares (NLLS) or RESTORE (RT).", choices=("WLS", "OLS", "NLLS", "RT"))


@dataclass
class VoxelTensors:
    """Per-voxel tensor summaries, in the order of the voxels fitted."""

    fa: np.ndarray
    """Fractional anisotropy, shape (n,)."""
    md: np.ndarray
    """Mean diffusivity (mm²/s), shape (n,)."""
    evals: np.ndarray
    """Tensor eigenvalues, largest first, shape (n, 3)."""


def fit_tensors(signals: np.ndarray, gtab: GradientTable, config: TensorFitConfig | None = None) -> VoxelTensors:
    """Fit the diffusion tensor to voxel signals.

    Parameters
    ----------
    signals : ndarray, shape (n_voxels, n_volumes)
        Volumes in gradient-table order.
    gtab : GradientTable
    config : TensorFitConfig, optional
        The fit method (default: the reference's WLS).

    Returns
    -------
    VoxelTensors
        FA, MD and eigenvalues of each voxel, in the order given.
    """
    from dipy.reconst.dti import TensorModel

    if signals.ndim != 2 or signals.shape[1] != len(gtab.bvals):
        raise ValueError(f"signals of shape {signals.shape} do not match a gradient table of "
                         f"{len(gtab.bvals)} volumes")
    if signals.shape[0] == 0:
        empty = np.zeros(0)
        return VoxelTensors(empty, empty, np.zeros((0, 3)))
    fit = TensorModel(gtab, fit_method=(config or TensorFitConfig()).fit_method).fit(signals)
    return VoxelTensors(fa=np.asarray(fit.fa), md=np.asarray(fit.md), evals=np.asarray(fit.evals))
