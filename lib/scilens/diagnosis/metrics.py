"""Query sets S1-S3 (Table 4.3) and how accurately a sample answers them (§4.4.1).

A query set is evaluated per *group*: every (layer, class, correct or not)
combination. All three need only two statistics of a group's activations,
:class:`GroupStats`: the mean activation of each neuron (S2 directly; S1's
top-k neurons are the k largest means, as Q2 and Q5 rank them) and the
histogram of each item's maximally activated neuron (S3). Those statistics
come from numpy here (:func:`group_statistics`) or from Spark
(:func:`scilens.diagnosis.queries.group_statistics`); the metrics are the same.

Metrics, sample against full data, averaged over the groups of the full data:

* S1: precision of the sample's top-k neurons, ``|top_k(sample) & top_k(full)| / k``;
* S2: cosine distance ``1 - a.b / (|a| |b|)`` of the mean-activation vectors;
* S3: Jensen-Shannon distance (base 2, so in [0, 1]) of the argmax distributions.

A group the sample misses entirely scores the worst value (precision 0,
distances 1): a diagnosis question the sample cannot answer. S1 skips layers
with no more than k neurons, where every sample scores 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DEFAULT_K",
    "GroupStats",
    "argmax_neurons",
    "cosine_distance",
    "group_statistics",
    "js_distance",
    "precision_at_k",
    "query_set_accuracy",
    "top_k",
]

DEFAULT_K = 10
"""k of S1 in the study's main figures (Fig. 4.4, 4.7)."""


@dataclass
class GroupStats:
    """Statistics of one group's activations in one layer.

    Attributes
    ----------
    count : int
        Items in the group.
    mean : ndarray of float64 (neurons,)
        Mean activation of each neuron.
    argmax_counts : ndarray of int64 (neurons,)
        How many items have their largest activation at each neuron.
    """

    count: int
    mean: np.ndarray
    argmax_counts: np.ndarray


def argmax_neurons(activations: np.ndarray) -> np.ndarray:
    """Index of each item's maximally activated neuron (the first, on ties), shape (n,)."""
    return np.asarray(activations).argmax(axis=1)


def group_statistics(activations: np.ndarray, keys: Sequence[Sequence] | np.ndarray,
                     index: np.ndarray | None = None, argmax: np.ndarray | None = None) -> dict[tuple, GroupStats]:
    """:class:`GroupStats` of each group of rows of ``activations`` (n, neurons).

    Parameters
    ----------
    activations : ndarray (n, neurons)
    keys : sequence of arrays
        Group key columns, each (n,), e.g. ``(labels, correct)``; a group is
        a distinct tuple of their values.
    index : ndarray, optional
        Only these rows (a sample's positions).
    argmax : ndarray (n,), optional
        :func:`argmax_neurons` of ``activations``, if already computed.
    """
    activations = np.asarray(activations)
    rows = np.arange(len(activations)) if index is None else np.asarray(index)
    neurons = activations.shape[1]
    argmax = argmax_neurons(activations[rows]) if argmax is None else np.asarray(argmax)[rows]
    columns = [np.asarray(k)[rows] for k in keys]
    if not len(rows):
        return {}
    codes = np.unique(np.column_stack(columns), axis=0, return_inverse=True)
    groups, inverse = codes[0], codes[1].ravel()
    counts = np.bincount(inverse, minlength=len(groups))
    # Group sums as one (groups x n) @ (n x neurons) product: BLAS instead of a scatter-add.
    onehot = np.zeros((len(groups), len(rows)))
    onehot[inverse, np.arange(len(rows))] = 1.0
    sums = onehot @ activations[rows].astype(np.float64)
    hist = np.bincount(inverse * neurons + argmax, minlength=len(groups) * neurons).reshape(len(groups), neurons)
    out = {}
    for g, key in enumerate(groups):
        out[tuple(_plain(v) for v in key)] = GroupStats(int(counts[g]), sums[g] / counts[g], hist[g].astype(np.int64))
    return out


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def top_k(mean: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` neurons of largest mean activation, largest first (ties: lower index first)."""
    mean = np.asarray(mean, dtype=np.float64)
    order = np.lexsort((np.arange(len(mean)), -mean))
    return order[:k]


def precision_at_k(sample_mean: np.ndarray, full_mean: np.ndarray, k: int) -> float:
    """Share of the sample's top-k neurons that are among the full data's top-k."""
    return len(np.intersect1d(top_k(sample_mean, k), top_k(full_mean, k))) / k


def cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    """``1 - a.b / (|a| |b|)``; 0 for two zero vectors, 1 when only one is zero."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 0.0 if na == nb else 1.0
    return float(1.0 - a @ b / (na * nb))


def js_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) of two histograms, normalised here."""
    from scipy.spatial.distance import jensenshannon

    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if p.sum() == 0 or q.sum() == 0:
        return 0.0 if p.sum() == q.sum() else 1.0
    return float(np.clip(jensenshannon(p, q, base=2), 0.0, 1.0))


def query_set_accuracy(full: Mapping[str, Mapping[tuple, GroupStats]], sample: Mapping[str, Mapping[tuple, GroupStats]],
                       ks: Iterable[int] = (DEFAULT_K,), where: Mapping[int, object] | None = None) -> dict[str, float]:
    """S1 (per k), S2 and S3 of a sample, averaged over the full data's (layer, group) combinations.

    Parameters
    ----------
    full, sample : mapping
        Layer -> group key -> :class:`GroupStats`, for the full data and the sample.
    ks : iterable of int
        The k's of S1.
    where : mapping, optional
        Only groups whose key has these values at these positions, e.g.
        ``{1: False}`` for the misclassified when keys are (label, correct).

    Returns
    -------
    dict
        ``{"S1@k": ..., "S2": ..., "S3": ..., "groups": ...}``.
    """
    ks = list(ks)
    s1: dict[int, list[float]] = {k: [] for k in ks}
    s2: list[float] = []
    s3: list[float] = []
    for layer, groups in full.items():
        for key, stats in groups.items():
            if where and any(key[i] != v for i, v in where.items()):
                continue
            got = sample.get(layer, {}).get(key)
            neurons = len(stats.mean)
            for k in ks:
                if k < neurons:
                    s1[k].append(0.0 if got is None else precision_at_k(got.mean, stats.mean, k))
            s2.append(1.0 if got is None else cosine_distance(got.mean, stats.mean))
            s3.append(1.0 if got is None else js_distance(got.argmax_counts, stats.argmax_counts))
    out = {f"S1@{k}": float(np.mean(v)) if v else float("nan") for k, v in s1.items()}
    out.update({"S2": float(np.mean(s2)) if s2 else float("nan"), "S3": float(np.mean(s3)) if s3 else float("nan"),
                "groups": len(s2)})
    return out
