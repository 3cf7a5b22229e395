"""SVCCA: how similar two representations of the same items are (Raghu et al. 2017).

Queries Q4, Q6 and Q7 of Table 4.2 compare representations -- a layer and the
logits, a layer at two checkpoints, two models -- by singular vector
canonical correlation analysis: keep each representation's top principal
directions explaining ``keep`` (99 %) of its variance, then take the
canonical correlations between the two reduced representations; the
similarity is their mean (1 for a representation and itself, or any
invertible linear map of it).

Everything is computed from the joint moments of the two representations
(:class:`Moments`: count, sums, cross-products), which add up over
partitions, so Spark computes them in parallel
(:func:`scilens.diagnosis.queries.representation_moments`) and the driver
only solves problems of size neurons x neurons.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Moments", "SVCCAResult", "moments_of", "svcca", "svcca_from_moments"]


@dataclass
class Moments:
    """Sufficient statistics of paired representations ``a`` (n, p) and ``b`` (n, q)."""

    n: int
    sum_a: np.ndarray
    sum_b: np.ndarray
    aa: np.ndarray
    bb: np.ndarray
    ab: np.ndarray

    def __add__(self, other: Moments) -> Moments:
        return Moments(self.n + other.n, self.sum_a + other.sum_a, self.sum_b + other.sum_b, self.aa + other.aa,
                       self.bb + other.bb, self.ab + other.ab)

    def covariances(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sample covariances (aa, bb, ab)."""
        if self.n < 2:
            raise ValueError(f"SVCCA needs at least two items, got {self.n}")
        ma, mb = self.sum_a / self.n, self.sum_b / self.n
        scale = 1.0 / (self.n - 1)
        return ((self.aa - self.n * np.outer(ma, ma)) * scale, (self.bb - self.n * np.outer(mb, mb)) * scale,
                (self.ab - self.n * np.outer(ma, mb)) * scale)


def moments_of(a: np.ndarray, b: np.ndarray) -> Moments:
    """:class:`Moments` of in-memory representations (rows are items)."""
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    if len(a) != len(b):
        raise ValueError(f"representations of {len(a)} and {len(b)} items")
    return Moments(len(a), a.sum(0), b.sum(0), a.T @ a, b.T @ b, a.T @ b)


@dataclass
class SVCCAResult:
    """Mean canonical correlation, the correlations, and the dimensions kept of each representation."""

    similarity: float
    correlations: np.ndarray
    kept: tuple[int, int]


def _top_directions(cov: np.ndarray, keep: float) -> tuple[np.ndarray, np.ndarray]:
    values, vectors = np.linalg.eigh((cov + cov.T) / 2)
    values, vectors = values[::-1], vectors[:, ::-1]
    values = np.clip(values, 0, None)
    total = values.sum()
    if total <= 0:
        raise ValueError("a representation is constant over the items: nothing to correlate")
    r = int(np.searchsorted(np.cumsum(values) / total, keep) + 1)
    r = min(r, int(np.sum(values > values[0] * 1e-10)))
    return values[:r], vectors[:, :r]


def svcca_from_moments(m: Moments, keep: float = 0.99) -> SVCCAResult:
    """SVCCA of two representations given their :class:`Moments`."""
    caa, cbb, cab = m.covariances()
    la, ua = _top_directions(caa, keep)
    lb, ub = _top_directions(cbb, keep)
    # In the principal bases the reduced covariances are diagonal (la, lb): whitening is a division.
    cross = (ua.T @ cab @ ub) / np.sqrt(la)[:, None] / np.sqrt(lb)[None, :]
    rho = np.clip(np.linalg.svd(cross, compute_uv=False), 0.0, 1.0)
    return SVCCAResult(float(rho.mean()), rho, (len(la), len(lb)))


def svcca(a: np.ndarray, b: np.ndarray, keep: float = 0.99) -> SVCCAResult:
    """SVCCA of in-memory representations ``a`` (n, p) and ``b`` (n, q) of the same n items."""
    return svcca_from_moments(moments_of(a, b), keep)
