"""Single-process references of the diagnosis benchmark: the paper's VAS loop and the queries in plain numpy.

``naive_vas`` is the interchange algorithm as the dissertation describes its
cost (§4.4.5, O(K^2 N)): every arriving item joins the sample, the loss of
every possible eviction is recomputed from the full proximity matrix, and the
best eviction is made. ``scilens.diagnosis.samplers.visualization_aware``
keeps the proximities up to date instead (O(K N)) and must choose the same items.

The query functions answer Q1-Q5 from an activation store read with pyarrow
into numpy, in one process: what the Spark queries are checked against.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow.parquet as pq


def naive_vas(latent: np.ndarray, k: int, order: np.ndarray, bandwidth: float) -> np.ndarray:
    """Positions of the VAS sample of size ``k`` for items streamed in ``order``."""
    x = np.asarray(latent, dtype=np.float64)
    eps2 = bandwidth**2
    members = list(order[:k])
    for item in order[k:]:
        candidates = [*members, item]
        pts = x[candidates]
        sq = np.sum(pts**2, axis=1)
        kernel = np.exp(-np.maximum(sq[:, None] + sq[None, :] - 2 * pts @ pts.T, 0) / eps2)
        np.fill_diagonal(kernel, 0.0)
        total = kernel.sum() / 2
        losses = total - kernel.sum(axis=1)  # the loss left after evicting each candidate
        worst = int(np.argmin(losses))
        if worst != len(members):
            members[worst] = item
    return np.array(members)


def read_columns(table_path: str, columns: Sequence[str], sizes: dict[str, int]) -> dict[str, np.ndarray]:
    """Columns of a store's Parquet table as numpy: layers (n, neurons) float32, the rest 1-d."""
    table = pq.read_table(table_path, columns=list(columns))
    out = {}
    for name in columns:
        column = table.column(name).combine_chunks()
        out[name] = (column.flatten().to_numpy().reshape(len(column), sizes[name]) if name in sizes
                     else column.to_numpy(zero_copy_only=False))
    return out


def group_mask(data: dict[str, np.ndarray], label=None, prediction=None, correct=None) -> np.ndarray:
    mask = np.ones(len(data["label"]), dtype=bool)
    for name, value in (("label", label), ("prediction", prediction), ("correct", correct)):
        if value is not None:
            mask &= data[name] == value
    return mask


def mean_activation(data: dict[str, np.ndarray], layer: str, **group) -> np.ndarray:
    return data[layer][group_mask(data, **group)].astype(np.float64).mean(axis=0)


def top_k(mean: np.ndarray, k: int) -> np.ndarray:
    return np.lexsort((np.arange(len(mean)), -mean))[:k]


def argmax_histogram(data: dict[str, np.ndarray], layer: str, **group) -> np.ndarray:
    acts = data[layer][group_mask(data, **group)]
    return np.bincount(acts.argmax(axis=1), minlength=acts.shape[1])


def svcca(a: np.ndarray, b: np.ndarray, keep: float = 0.99) -> float:
    """Mean canonical correlation after keeping the top singular directions (99 % variance) of each."""
    def reduce(x):
        x = np.asarray(x, dtype=np.float64)
        x = x - x.mean(axis=0)
        u, s, _ = np.linalg.svd(x, full_matrices=False)
        r = int(np.searchsorted(np.cumsum(s**2) / np.sum(s**2), keep) + 1)
        return np.linalg.qr(u[:, :r] * s[:r])[0]

    return float(np.clip(np.linalg.svd(reduce(a).T @ reduce(b), compute_uv=False), 0, 1).mean())
