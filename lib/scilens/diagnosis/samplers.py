"""The samplers of the diagnosis study, each a pure function on the latent matrix and item metadata.

Every sampler returns a :class:`Sample`: positions of the chosen items plus,
for each, its stratum, log likelihood ratio, rank and which end of its
stratum it came from. Sizes follow one rule: a stratum of ``n_c`` items gives
``round(fraction * n_c)`` (halves up), so a sample is within one item per
stratum of ``fraction * n``; exceptions are said per sampler.

Baselines (§4.3.1, §4.4.3)

* :func:`uniform` -- without replacement.
* :func:`stratified_by_confusion` -- strata are the cells of the confusion
  matrix (label, prediction); at least one item from each non-empty cell,
  which is why the paper's 5 % sample holds 10 % of the misclassified.
* :func:`stratified_weighted` -- per class, up to ``incorrect_share`` of the
  class's draw from its misclassified items, the rest from the correct ones.
* :func:`simple_latent` -- PCA to 5 dimensions, each cut into 2 equal-width
  bins; the same number of items from each non-empty cell (fewer where a
  cell is smaller: the paper's "knee" at 80 %).
* :func:`visualization_aware` -- VAS, Park et al.'s interchange algorithm
  minimising the sum of proximities ``exp(-|x-y|^2/eps^2)`` over the sample.
* :func:`boundary_tree` -- the explicable-boundary-tree sample: the nodes of
  Mathy et al.'s boundary tree of the latent vectors labelled by the model's
  predictions (Wu et al. build EB trees on it); its size is not chosen.

The study's technique (Algorithm 1)

* :func:`boundary_exemplar` -- per stratum (class or cluster of a
  :mod:`~scilens.diagnosis.latent` fit), items sorted by likelihood ratio;
  ``round(j k_c)`` from the low (boundary) end, the rest of the stratum's
  ``k_c`` from the high (exemplar) end.
* :func:`likelihood_weighted` -- the weighted variant: per stratum, draws
  with probability proportional to ``1 / likelihood ratio``, capped.
* :func:`label_aware_boundary_exemplar` -- not the paper's: stratified
  weighted's (label, correct) quotas filled in Algorithm 1's order, so that
  it reads the same information as :func:`stratified_weighted` (a fair rival).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "BOUNDARY",
    "EXEMPLAR",
    "Sample",
    "boundary_exemplar",
    "boundary_tree",
    "label_aware_boundary_exemplar",
    "likelihood_weighted",
    "simple_latent",
    "stratified",
    "stratified_by_confusion",
    "stratified_weighted",
    "stratum_size",
    "uniform",
    "visualization_aware",
]

BOUNDARY, EXEMPLAR = "boundary", "exemplar"


@dataclass
class Sample:
    """Items chosen by a sampler.

    Attributes
    ----------
    index : ndarray of int64
        Positions of the chosen items in the latent matrix, in the order chosen.
    stratum : ndarray of int64
        Class, cluster or cell the item was drawn from (-1: none).
    log_likelihood_ratio : ndarray of float64
        ``log P(A|x)/P(not A|x)`` where the sampler has one, else NaN.
    rank : ndarray of int64
        Position in the stratum's ordering (ascending likelihood ratio: 0 is
        nearest the boundary), or draw order for random samplers.
    end : ndarray of str
        ``boundary``, ``exemplar``, ``random``, ``weighted``, ``misclassified``,
        ``correct``, ``interchange`` or ``tree``.
    """

    index: np.ndarray
    stratum: np.ndarray
    log_likelihood_ratio: np.ndarray
    rank: np.ndarray
    end: np.ndarray

    def __len__(self) -> int:
        return len(self.index)

    @classmethod
    def of(cls, index: Any, stratum: Any = None, log_likelihood_ratio: Any = None, rank: Any = None,
           end: str | Any = "random") -> Sample:
        """A sample of the items at ``index``, the other columns given or filled in.

        Parameters
        ----------
        index : array_like of int
            Positions of the chosen items, in the order chosen.
        stratum : array_like of int, optional
            -1 for every item when not given.
        log_likelihood_ratio : array_like of float, optional
            NaN for every item when not given.
        rank : array_like of int, optional
            The draw order when not given.
        end : str or array_like of str
            One end for every item, or one per item.

        Returns
        -------
        Sample
        """
        index = np.asarray(index, dtype=np.int64)
        n = len(index)
        return cls(
            index,
            np.full(n, -1, np.int64) if stratum is None else np.asarray(stratum, dtype=np.int64),
            np.full(n, np.nan) if log_likelihood_ratio is None else np.asarray(log_likelihood_ratio, np.float64),
            np.arange(n, dtype=np.int64) if rank is None else np.asarray(rank, dtype=np.int64),
            np.full(n, end, dtype=object) if isinstance(end, str) else np.asarray(end, dtype=object),
        )

    @classmethod
    def concat(cls, parts: list[Sample]) -> Sample:
        """The items of several samples, one after another (an empty sample for no parts).

        Parameters
        ----------
        parts : list of Sample

        Returns
        -------
        Sample
        """
        if not parts:
            return cls.of([])
        return cls(*(np.concatenate([getattr(p, f) for p in parts])
                     for f in ("index", "stratum", "log_likelihood_ratio", "rank", "end")))

    def to_frame(self, ids: np.ndarray, labels: np.ndarray, predictions: np.ndarray) -> pd.DataFrame:
        """The sample as rows: id, label, prediction, correct, stratum, likelihood ratio (and its log), rank, end."""
        labels, predictions = np.asarray(labels)[self.index], np.asarray(predictions)[self.index]
        with np.errstate(over="ignore"):
            ratio = np.exp(self.log_likelihood_ratio)
        return pd.DataFrame({
            "id": np.asarray(ids)[self.index].astype(np.int64), "label": labels.astype(np.int32),
            "prediction": predictions.astype(np.int32), "correct": labels == predictions,
            "stratum": self.stratum.astype(np.int32), "likelihood_ratio": ratio,
            "log_likelihood_ratio": self.log_likelihood_ratio, "rank": self.rank.astype(np.int32),
            "end": self.end.astype(str),
        })


def _check_fraction(fraction: float) -> float:
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return float(fraction)


def stratum_size(n: int, fraction: float) -> int:
    """Items drawn from a stratum of ``n``: ``fraction * n`` rounded half up."""
    return int(np.floor(fraction * n + 0.5))


def uniform(n: int, fraction: float, seed: int = 0) -> Sample:
    """``round(fraction * n)`` positions out of ``n``, uniformly without replacement."""
    fraction = _check_fraction(fraction)
    rng = np.random.default_rng(seed)
    return Sample.of(rng.choice(n, stratum_size(n, fraction), replace=False))


def stratified(strata: np.ndarray, fraction: float, seed: int = 0, at_least_one: bool = False) -> Sample:
    """Uniform draws within each stratum, ``round(fraction * n_c)`` (or at least one) from each."""
    fraction = _check_fraction(fraction)
    strata = np.asarray(strata)
    rng = np.random.default_rng(seed)
    parts = []
    for value in np.unique(strata):
        members = np.flatnonzero(strata == value)
        k = stratum_size(len(members), fraction)
        k = max(k, 1) if at_least_one else k
        parts.append(Sample.of(rng.choice(members, k, replace=False), stratum=np.full(k, value)))
    return Sample.concat(parts)


def stratified_by_confusion(labels: np.ndarray, predictions: np.ndarray, fraction: float, seed: int = 0) -> Sample:
    """Stratified by confusion-matrix cell (label, prediction); at least one item per non-empty cell.

    The stratum recorded is ``label * n_classes + prediction``.
    """
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    n_classes = int(max(labels.max(), predictions.max())) + 1
    return stratified(labels * n_classes + predictions, fraction, seed, at_least_one=True)


def stratified_weighted(labels: np.ndarray, predictions: np.ndarray, fraction: float, seed: int = 0,
                        incorrect_share: float = 0.5) -> Sample:
    """Per class, up to ``incorrect_share`` of its ``round(fraction * n_c)`` drawn from its misclassified items.

    The rest of the class's draw comes from its correctly classified items
    (all of the misclassified are taken when they are fewer than their share).
    """
    fraction = _check_fraction(fraction)
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    rng = np.random.default_rng(seed)
    parts = []
    for value in np.unique(labels):
        members = np.flatnonzero(labels == value)
        wrong = members[predictions[members] != value]
        right = members[predictions[members] == value]
        k = stratum_size(len(members), fraction)
        k_wrong = min(len(wrong), int(np.ceil(incorrect_share * k)))
        k_right = min(len(right), k - k_wrong)
        chosen = [rng.choice(wrong, k_wrong, replace=False), rng.choice(right, k_right, replace=False)]
        parts.append(Sample.of(np.concatenate(chosen), stratum=np.full(k_wrong + k_right, value),
                               end=np.array(["misclassified"] * k_wrong + ["correct"] * k_right, dtype=object)))
    return Sample.concat(parts)


def simple_latent(latent: np.ndarray, fraction: float, seed: int = 0, components: int = 5, bins: int = 2) -> Sample:
    """Equal draws from the cells of a grid on the latent space's first principal components.

    The latent vectors are projected on their first ``components`` principal
    axes, each cut into ``bins`` equal-width bins over its range; every
    non-empty cell gives ``round(fraction * n / cells)`` items, or all it has.
    The stratum is the cell number.
    """
    fraction = _check_fraction(fraction)
    x = np.asarray(latent, dtype=np.float64)
    x = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    projected = x @ vt[:components].T
    lo, hi = projected.min(axis=0), projected.max(axis=0)
    width = np.where(hi > lo, (hi - lo) / bins, 1.0)
    cell_of_axis = np.clip(((projected - lo) / width).astype(np.int64), 0, bins - 1)
    cells = cell_of_axis @ (bins ** np.arange(projected.shape[1]))
    occupied = np.unique(cells)
    share = stratum_size(len(x), fraction / len(occupied))
    rng = np.random.default_rng(seed)
    parts = []
    for cell in occupied:
        members = np.flatnonzero(cells == cell)
        k = min(share, len(members))
        parts.append(Sample.of(rng.choice(members, k, replace=False), stratum=np.full(k, cell)))
    return Sample.concat(parts)


def _sorted_strata(strata: np.ndarray, log_lr: np.ndarray):
    """Per stratum: its value and its members sorted by ascending log likelihood ratio (ties by position)."""
    strata, log_lr = np.asarray(strata), np.asarray(log_lr, dtype=np.float64)
    order = np.lexsort((np.arange(len(strata)), log_lr, strata))
    values, starts = np.unique(strata[order], return_index=True)
    return list(zip(values, np.split(order, starts[1:])))


def boundary_exemplar(strata: np.ndarray, log_lr: np.ndarray, fraction: float, tuning_factor: float = 0.7) -> Sample:
    """Algorithm 1: per stratum, ``j k_c`` items of lowest likelihood ratio and ``(1 - j) k_c`` of highest.

    Parameters
    ----------
    strata : ndarray (n,)
        Class or cluster of each item.
    log_lr : ndarray (n,)
        Log likelihood ratio of each item for its stratum.
    fraction : float
        ``f`` in (0, 1]; stratum ``c`` of ``n_c`` items gives ``k_c = round(f n_c)``.
    tuning_factor : float
        ``j`` in [0, 1]: the share of each stratum's draw taken from the
        boundary end (``round(j k_c)`` items).
    """
    fraction = _check_fraction(fraction)
    if not 0 <= tuning_factor <= 1:
        raise ValueError(f"tuning factor j must be in [0, 1], got {tuning_factor}")
    log_lr = np.asarray(log_lr, dtype=np.float64)
    parts = []
    for value, members in _sorted_strata(strata, log_lr):
        n_c = len(members)
        k = stratum_size(n_c, fraction)
        b = stratum_size(k, tuning_factor) if k else 0
        ranks = np.concatenate([np.arange(b), np.arange(n_c - (k - b), n_c)]).astype(np.int64)
        chosen = members[ranks]
        parts.append(Sample.of(chosen, np.full(k, value), log_lr[chosen], ranks,
                               np.array([BOUNDARY] * b + [EXEMPLAR] * (k - b), dtype=object)))
    return Sample.concat(parts)


def label_aware_boundary_exemplar(labels: np.ndarray, predictions: np.ndarray, log_lr: np.ndarray, fraction: float,
                                  tuning_factor: float = 0.7, incorrect_share: float = 0.5) -> Sample:
    """Stratified weighted's (label, correct) quotas, each filled by Algorithm 1's likelihood-ratio order.

    Per class, ``k_c = round(f n_c)``: up to ``ceil(incorrect_share k_c)``
    from its misclassified items, the rest from its correct ones (all of a
    group when it has fewer), exactly as :func:`stratified_weighted`; within
    each group of ``k_g``, ``round(j k_g)`` of lowest likelihood ratio and the
    rest of highest, as :func:`boundary_exemplar`. It thus reads what
    stratified weighted reads, and differs only in the order it takes items
    from a group. The stratum recorded is the label.

    Parameters
    ----------
    labels, predictions : ndarray (n,)
        True and predicted classes.
    log_lr : ndarray (n,)
        Log likelihood ratio of each item (a MaxMargin fit's).
    fraction : float
        ``f`` in (0, 1].
    tuning_factor : float
        ``j`` in [0, 1].
    incorrect_share : float
        Share of each class's draw taken from its misclassified items.

    Returns
    -------
    Sample
    """
    fraction = _check_fraction(fraction)
    if not 0 <= tuning_factor <= 1:
        raise ValueError(f"tuning factor j must be in [0, 1], got {tuning_factor}")
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    log_lr = np.asarray(log_lr, dtype=np.float64)
    correct = (predictions == labels).astype(np.int64)
    parts = []
    for value in np.unique(labels):
        members = np.flatnonzero(labels == value)
        wrong = members[predictions[members] != value]
        k = stratum_size(len(members), fraction)
        k_wrong = min(len(wrong), int(np.ceil(incorrect_share * k)))
        k_right = min(len(members) - len(wrong), k - k_wrong)
        for group_value, quota in ((0, k_wrong), (1, k_right)):
            group = members[correct[members] == group_value]
            ordered = group[np.lexsort((group, log_lr[group]))]
            b = stratum_size(quota, tuning_factor)
            ranks = np.concatenate([np.arange(b), np.arange(len(group) - (quota - b), len(group))]).astype(np.int64)
            chosen = ordered[ranks]
            parts.append(Sample.of(chosen, np.full(quota, value), log_lr[chosen], ranks,
                                   np.array([BOUNDARY] * b + [EXEMPLAR] * (quota - b), dtype=object)))
    return Sample.concat(parts)


def likelihood_weighted(strata: np.ndarray, log_lr: np.ndarray, fraction: float, seed: int = 0,
                        cap: float = 1000.0) -> Sample:
    """Per stratum, ``round(f n_c)`` draws without replacement, probability proportional to 1 / likelihood ratio.

    The likelihood ratio is clipped to ``[1/cap, cap]`` first: it is unbounded
    for exemplars (weight 0) and near 0 for items deep in another class
    (weight unbounded); the clip keeps every weight finite and positive.
    """
    fraction = _check_fraction(fraction)
    log_lr = np.asarray(log_lr, dtype=np.float64)
    rng = np.random.default_rng(seed)
    bound = np.log(cap)
    parts = []
    for value, members in _sorted_strata(strata, log_lr):
        k = stratum_size(len(members), fraction)
        weights = np.exp(-np.clip(log_lr[members], -bound, bound))
        picks = rng.choice(len(members), k, replace=False, p=weights / weights.sum())
        chosen = members[picks]
        parts.append(Sample.of(chosen, np.full(k, value), log_lr[chosen], picks, "weighted"))
    return Sample.concat(parts)


def median_distance(latent: np.ndarray, seed: int = 0, subsample: int = 1000) -> float:
    """Median pairwise Euclidean distance of (a random subsample of) the latent vectors."""
    x = np.asarray(latent, dtype=np.float64)
    rng = np.random.default_rng(seed)
    if len(x) > subsample:
        x = x[rng.choice(len(x), subsample, replace=False)]
    sq = np.sum(x**2, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0)
    return float(np.sqrt(np.median(d2[np.triu_indices(len(x), 1)])))


def visualization_aware(latent: np.ndarray, fraction: float, seed: int = 0, bandwidth: float | None = None) -> Sample:
    """VAS: Park et al.'s (2016) interchange algorithm in the latent space.

    The items stream by in a random order; each joins the sample and the
    member whose removal most lowers the loss ``sum_{i<j} exp(-|s_i - s_j|^2 / eps^2)``
    (the largest total proximity to the others) leaves. Proximities to the
    sample are kept up to date, so a pass costs O(n k d) for a sample of k.

    Parameters
    ----------
    bandwidth : float, optional
        ``eps``; by default the median pairwise distance of the latent vectors.
    """
    fraction = _check_fraction(fraction)
    x = np.asarray(latent, dtype=np.float64)
    n = len(x)
    k = stratum_size(n, fraction)
    if k == 0:
        return Sample.of([], end="interchange")
    eps2 = (bandwidth if bandwidth is not None else median_distance(x, seed)) ** 2
    order = np.random.default_rng(seed).permutation(n)
    members = order[:k].copy()
    s = x[members]
    sq = np.sum(s**2, axis=1)
    kernel = np.exp(-np.maximum(sq[:, None] + sq[None, :] - 2 * s @ s.T, 0) / eps2)
    np.fill_diagonal(kernel, 0.0)
    responsibility = kernel.sum(axis=1)
    for item in order[k:]:
        v = x[item]
        to_new = np.exp(-np.maximum(sq + v @ v - 2 * s @ v, 0) / eps2)
        with_new = responsibility + to_new
        worst = int(np.argmax(with_new))
        if with_new[worst] < to_new.sum():
            continue  # the newcomer itself is the most crowded: it leaves again
        responsibility = with_new - kernel[worst]
        responsibility[worst] = to_new.sum() - to_new[worst]
        to_new[worst] = 0.0
        kernel[worst, :], kernel[:, worst] = to_new, to_new
        members[worst], s[worst], sq[worst] = item, v, v @ v
    return Sample.of(members, end="interchange")


def boundary_tree(latent: np.ndarray, predictions: np.ndarray, seed: int = 0,
                  max_children: int | None = None) -> Sample:
    """The nodes of a boundary tree (Mathy et al. 2015) of the latent vectors, labelled by the model.

    Items stream by in a random order; each walks greedily from the root to
    the nearest of the current node and its children (a node with
    ``max_children`` children no longer counts itself) and, where the walk
    stops, joins the tree as a child if its predicted class differs from
    that node's. Nodes thus sit along the model's decision boundaries, and
    their number is the data's, not the caller's, choice. The stratum is the
    predicted class, the rank the insertion order.
    """
    x = np.asarray(latent, dtype=np.float64)
    predictions = np.asarray(predictions)
    order = np.random.default_rng(seed).permutation(len(x))
    nodes = [int(order[0])]
    children: list[list[int]] = [[]]
    for item in order[1:]:
        v, at = x[item], 0
        while True:
            kids = children[at]
            candidates = kids if max_children is not None and len(kids) >= max_children else [*kids, at]
            pos = [nodes[c] for c in candidates]
            nearest = candidates[int(np.argmin(np.sum((x[pos] - v) ** 2, axis=1)))]
            if nearest == at:
                break
            at = nearest
        if predictions[nodes[at]] != predictions[item]:
            children[at].append(len(nodes))
            nodes.append(int(item))
            children.append([])
    index = np.asarray(nodes, dtype=np.int64)
    return Sample.of(index, stratum=predictions[index], end="tree")
