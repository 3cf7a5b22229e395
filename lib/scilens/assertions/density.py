"""Kernel density estimates of trusted rows' features, one per class: the learned assertions' kernel.

A product-Gaussian KDE over ``d`` features of ``m`` trusted rows ``t_i``:
``f(x) = 1/m sum_i prod_j N((x_j - t_ij) / h_j) / h_j``, with one bandwidth per feature from the sample's
standard deviation ``s_j`` (ddof 1) by the normal-reference rules for ``d`` dimensions:

* Scott's rule: ``h_j = s_j m^(-1/(d+4))``;
* Silverman's rule: ``h_j = s_j (4 / ((d + 2) m))^(1/(d+4))``.

A feature constant over the sample (``s_j = 0``) gets ``h_j = 1e-6 max(1, |mean_j|)``. Pure numpy, no Spark.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ClassDensity", "bandwidths", "fit_density", "log_density"]

_CHUNK = 1 << 20  # rows x samples evaluated at once: bounds memory at ~8 MB per feature


def bandwidths(sample: np.ndarray, rule: str = "scott") -> np.ndarray:
    """One bandwidth per feature (column) of ``sample`` by Scott's or Silverman's rule.

    Parameters
    ----------
    sample : numpy.ndarray
        Trusted rows, shape (m, d), m >= 2.
    rule : {"scott", "silverman"}
        The rule (see the module).

    Returns
    -------
    numpy.ndarray
        Bandwidths, shape (d,).
    """
    m, d = sample.shape
    sd = sample.std(axis=0, ddof=1)
    if rule == "scott":
        factor = m ** (-1.0 / (d + 4))
    elif rule == "silverman":
        factor = (4.0 / ((d + 2) * m)) ** (1.0 / (d + 4))
    else:
        raise ValueError(f"unknown bandwidth rule {rule!r}; rules are scott, silverman")
    floor = 1e-6 * np.maximum(1.0, np.abs(sample.mean(axis=0)))
    return np.where(sd > 0, sd * factor, floor)


def log_density(x: np.ndarray, sample: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Log of the product-Gaussian KDE of ``sample`` (bandwidths ``h``) at each row of ``x``.

    Parameters
    ----------
    x : numpy.ndarray
        Points, shape (n, d).
    sample : numpy.ndarray
        The KDE's rows, shape (m, d).
    h : numpy.ndarray
        Bandwidths, shape (d,).

    Returns
    -------
    numpy.ndarray
        ``log f(x)``, shape (n,).
    """
    m, d = sample.shape
    const = -np.log(m) - np.sum(np.log(h)) - 0.5 * d * np.log(2 * np.pi)
    out = np.empty(len(x))
    step = max(1, _CHUNK // max(m, 1))
    scaled = sample / h
    for start in range(0, len(x), step):
        z = x[start:start + step] / h
        exponent = -0.5 * ((z[:, None, :] - scaled[None, :, :]) ** 2).sum(axis=2)
        top = exponent.max(axis=1)
        out[start:start + step] = top + np.log(np.exp(exponent - top[:, None]).sum(axis=1)) + const
    return out


@dataclass
class ClassDensity:
    """One class's fitted density and its calibration on the trusted sample."""

    sample: np.ndarray
    """The trusted rows the KDE sums over, shape (m, d)."""
    h: np.ndarray
    """Bandwidths, shape (d,)."""
    reference: float
    """The largest log density over the sample: the most typical trusted row (severity 0)."""
    sample_log_density: np.ndarray
    """The sample's own log densities, sorted: the tail probability's reference."""

    def severity(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Severity, log density and tail probability of each row of ``x``.

        Parameters
        ----------
        x : numpy.ndarray
            Points, shape (n, d).

        Returns
        -------
        severity : numpy.ndarray
            ``max(0, reference - log f(x))``: 0 for a row as likely as the most typical trusted row, growing
            as the row becomes less likely.
        log_f : numpy.ndarray
            ``log f(x)``.
        tail : numpy.ndarray
            The share of trusted rows no more likely than ``x`` (a calibrated tail probability).
        """
        log_f = log_density(x, self.sample, self.h)
        tail = np.searchsorted(self.sample_log_density, log_f, side="right") / len(self.sample_log_density)
        return np.maximum(0.0, self.reference - log_f), log_f, tail


def fit_density(sample: np.ndarray, rule: str = "scott") -> ClassDensity:
    """Fit one class's KDE and calibrate it on its own sample.

    Parameters
    ----------
    sample : numpy.ndarray
        Trusted rows of the class, shape (m, d), m >= 2.
    rule : {"scott", "silverman"}
        Bandwidth rule.

    Returns
    -------
    ClassDensity
        The fitted density.
    """
    sample = np.asarray(sample, dtype="float64")
    h = bandwidths(sample, rule)
    own = log_density(sample, sample, h)
    return ClassDensity(sample=sample, h=h, reference=float(own.max()), sample_log_density=np.sort(own))
