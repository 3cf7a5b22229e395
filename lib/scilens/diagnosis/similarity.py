"""SVCCA: how similar two representations of the same items are (Raghu et al. 2017).

Queries Q4, Q6 and Q7 of Table 4.2 compare representations -- a layer and the
logits, a layer at two checkpoints, two models -- by singular vector
canonical correlation analysis: keep each representation's top principal
directions explaining ``keep`` (99 %) of its variance, then take the
canonical correlations between the two reduced representations; the
similarity is their mean (1 for a representation and itself, or any
invertible linear map of it).

Two ways to the same numbers, for two regimes:

* :func:`svcca` -- from the items' representations in memory, by SVD of the
  centred data (Raghu et al.'s own way): the canonical correlations are the
  singular values of ``U_a' U_b`` for the kept left singular vectors; cost
  O(n (p + q) min(n, p + q)), the choice for fewer items than neurons;
* :func:`svcca_from_moments` -- from the joint moments of the two
  representations (:class:`Moments`: count, sums, cross-products), which add
  up over partitions, so Spark computes them in parallel
  (:func:`scilens.diagnosis.queries.representation_moments`) and the driver
  only solves problems of size neurons x neurons: the choice for many items.

Both keep, per representation, the leading directions whose variance
reaches ``keep`` of the total (and none of relative size below 1e-10).
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


def _kept(variances: np.ndarray, keep: float) -> int:
    """How many leading directions (variances in descending order) reach ``keep`` of the total variance."""
    total = variances.sum()
    if total <= 0:
        raise ValueError("a representation is constant over the items: nothing to correlate")
    r = int(np.searchsorted(np.cumsum(variances) / total, keep) + 1)
    return min(r, int(np.sum(variances > variances[0] * 1e-10)))


def _top_directions(cov: np.ndarray, keep: float) -> tuple[np.ndarray, np.ndarray]:
    values, vectors = np.linalg.eigh((cov + cov.T) / 2)
    values, vectors = np.clip(values[::-1], 0, None), vectors[:, ::-1]
    r = _kept(values, keep)
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


def _left_basis(x: np.ndarray, keep: float) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    u, s, _ = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    return u[:, :_kept(s**2, keep)]


def svcca(a: np.ndarray, b: np.ndarray, keep: float = 0.99) -> SVCCAResult:
    """SVCCA of in-memory representations ``a`` (n, p) and ``b`` (n, q) of the same n items, by SVD."""
    if len(a) != len(b):
        raise ValueError(f"representations of {len(a)} and {len(b)} items")
    if len(a) < 2:
        raise ValueError(f"SVCCA needs at least two items, got {len(a)}")
    ua, ub = _left_basis(a, keep), _left_basis(b, keep)
    rho = np.clip(np.linalg.svd(ua.T @ ub, compute_uv=False), 0.0, 1.0)
    return SVCCAResult(float(rho.mean()), rho, (ua.shape[1], ub.shape[1]))
