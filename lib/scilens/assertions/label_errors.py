"""Finding errors in human labels with a learned assertion (the seed's §4.2).

Items are ranked by how unlikely their *given* label is, under the class-conditional densities of the
items whose label the model confirms.

The model's outputs must be out of sample (:func:`cross_fitted`): a model that trained on an item has
learned its label, right or wrong, and would confirm it. Per item with given label ``c`` the features are

* ``log p_c``, the (log) probability the model gives the given label;
* the log margin ``log p_c - max_{k != c} log p_k`` (negative when the model prefers another class);
* with ``latents``, the distance to the centroid of the trusted items of class ``c`` in the latent space.

Trusted items are those whose given label is the model's prediction. One KDE per class over the trusted
items' features (:mod:`scilens.assertions.density`, the learned assertion's kernel, bandwidth by Scott's
rule) scores every item: the severity is how much less likely the item's features are than the most
typical trusted item's. Only items less confident in their label than the median trusted item of their
class can be label errors (an unusually *confident* item is not), so the others get severity 0.

This is the same estimate the ``learned`` assertion of ``scilens assert`` makes on Spark, here on numpy
arrays for the label-error use; confident learning (cleanlab's ``find_label_issues``) takes the same
out-of-sample probabilities, which is how ``bench/assertions.py`` compares the two.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from scilens.assertions.density import fit_density

__all__ = ["cross_fitted", "label_error_features", "label_error_severity"]

_FLOOR = 1e-12  # probabilities below this are 0 to float32 models; log of 0 would be -inf

FitPredict = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""``fit_predict(train_x, train_y, test_x) -> probabilities (n_test, n_classes)``."""


def cross_fitted(x: np.ndarray, y: np.ndarray, fit_predict: FitPredict, folds: int = 3,
                 seed: int = 0) -> np.ndarray:
    """Out-of-sample class probabilities of every item: each fold predicted by a model fit on the others.

    Parameters
    ----------
    x : numpy.ndarray
        Items, first axis the item.
    y : numpy.ndarray
        Their given labels, integers ``0..n_classes-1``.
    fit_predict : callable
        ``fit_predict(train_x, train_y, test_x)`` returning the probabilities of ``test_x``.
    folds : int
        Number of folds (at least 2).
    seed : int
        Seed of the random split into folds.

    Returns
    -------
    numpy.ndarray
        Probabilities, shape (n, n_classes), no item predicted by a model that saw it.
    """
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    n = len(y)
    fold = np.random.default_rng(seed).permutation(n) % folds
    out: np.ndarray | None = None
    for k in range(folds):
        test = fold == k
        p = np.asarray(fit_predict(x[~test], y[~test], x[test]), dtype=np.float64)
        if out is None:
            out = np.zeros((n, p.shape[1]))
        out[test] = p
    assert out is not None
    return out


def label_error_features(probabilities: np.ndarray, labels: np.ndarray,
                         latents: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per item, the features of its given label (see the module) and whether it is trusted.

    Parameters
    ----------
    probabilities : numpy.ndarray
        Out-of-sample probabilities, shape (n, n_classes).
    labels : numpy.ndarray
        Given labels, shape (n,).
    latents : numpy.ndarray, optional
        Out-of-sample latent embeddings, shape (n, d).

    Returns
    -------
    features : numpy.ndarray
        Shape (n, 2), or (n, 3) with ``latents``.
    trusted : numpy.ndarray
        Boolean (n,): the given label is the model's prediction.
    """
    p = np.log(np.clip(np.asarray(probabilities, dtype=np.float64), _FLOOR, 1.0))
    labels = np.asarray(labels, dtype=np.int64)
    rows = np.arange(len(labels))
    given = p[rows, labels]
    others = p.copy()
    others[rows, labels] = -np.inf
    trusted = p.argmax(axis=1) == labels
    columns = [given, given - others.max(axis=1)]
    if latents is not None:
        z = np.asarray(latents, dtype=np.float64)
        distance = np.zeros(len(labels))
        for c in np.unique(labels):
            members = labels == c
            anchor = trusted & members
            centroid = z[anchor].mean(axis=0) if anchor.any() else z[members].mean(axis=0)
            distance[members] = np.linalg.norm(z[members] - centroid, axis=1)
        columns.append(distance)
    return np.stack(columns, axis=1), trusted


def label_error_severity(probabilities: np.ndarray, labels: np.ndarray, latents: np.ndarray | None = None,
                         max_trusted: int = 2000, seed: int = 0) -> np.ndarray:
    """Severity of each item's given label under the trusted items' densities (higher: more likely wrong).

    Parameters
    ----------
    probabilities : numpy.ndarray
        Out-of-sample probabilities (:func:`cross_fitted`), shape (n, n_classes).
    labels : numpy.ndarray
        Given labels, shape (n,).
    latents : numpy.ndarray, optional
        Out-of-sample latent embeddings, shape (n, d).
    max_trusted : int
        Most trusted items per class a density is fit on (a seeded sample, as the learned assertion's
        ``max_sample``).
    seed : int
        Seed of that sample.

    Returns
    -------
    numpy.ndarray
        Severity per item, float64 (n,); rank by it, descending, to review labels.

    Raises
    ------
    ValueError
        A class with fewer than two trusted items (no density to compare against), named.
    """
    features, trusted = label_error_features(probabilities, labels, latents)
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    severity = np.zeros(len(labels))
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        anchor = members[trusted[members]]
        if len(anchor) < 2:
            raise ValueError(f"class {c}: {len(anchor)} trusted item(s), at least 2 are needed for a density")
        if len(anchor) > max_trusted:
            anchor = rng.choice(anchor, max_trusted, replace=False)
        density = fit_density(features[anchor])
        score, _, _ = density.severity(features[members])
        # One-sided: an item more confident in its label than the class's median trusted item is no suspect.
        confident = features[members, 0] >= np.median(features[anchor, 0])
        severity[members] = np.where(confident, 0.0, score)
    return severity
