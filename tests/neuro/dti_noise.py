"""How much noise moves a single voxel's DTI estimates: first-order error propagation (delta method).

For a tensor fitted by weighted least squares to log signals, ``log S_i = X_i beta``
with ``beta = (Dxx, Dxy, Dyy, Dxz, Dyz, Dzz, log S0)`` and
``X_i = (-b gx², -2b gx gy, -b gy², -2b gx gz, -2b gy gz, -b gz², 1)``.
Noise of standard deviation ``sigma`` on a signal ``S_i`` gives ``log S_i`` a
standard deviation ``sigma / S_i`` (first order; for Rician noise the
second-order bias of ``log M`` cancels: ``E[log M] = log S + sigma²/(2S²) - sigma²/(2S²)``).
With the true weights ``W = diag(S_i² / sigma²)`` the estimate's covariance
is ``(X^T W X)^-1``, and FA, MD are functions of ``beta`` whose standard
errors follow from their gradients. This is the spread of one voxel's
estimate from raw data; non-local means only averages similar voxels, which
shrinks it.
"""

from __future__ import annotations

import numpy as np
from dipy.reconst.dti import decompose_tensor, fractional_anisotropy, from_lower_triangular


def fa_md_standard_errors(signal: np.ndarray, bvals: np.ndarray, bvecs: np.ndarray, sigma: float
                          ) -> tuple[float, float]:
    """Standard errors of FA and MD of one voxel with noise-free ``signal`` and noise ``sigma``."""
    g, b = np.asarray(bvecs, dtype=float), np.asarray(bvals, dtype=float)
    design = np.column_stack([-b * g[:, 0] ** 2, -2 * b * g[:, 0] * g[:, 1], -b * g[:, 1] ** 2,
                              -2 * b * g[:, 0] * g[:, 2], -2 * b * g[:, 1] * g[:, 2], -b * g[:, 2] ** 2,
                              np.ones_like(b)])
    beta = np.linalg.lstsq(design, np.log(signal), rcond=None)[0]
    cov = np.linalg.inv(design.T @ np.diag(signal**2 / sigma**2) @ design)

    def fa(p: np.ndarray) -> float:
        return float(fractional_anisotropy(decompose_tensor(from_lower_triangular(p[:6]))[0]))

    def md(p: np.ndarray) -> float:
        return float((p[0] + p[2] + p[5]) / 3)

    eps = 1e-8
    errors = []
    for fn in (fa, md):
        grad = np.array([(fn(beta + eps * e) - fn(beta - eps * e)) / (2 * eps) for e in np.eye(7)])
        errors.append(float(np.sqrt(grad @ cov @ grad)))
    return errors[0], errors[1]
