"""Models of a network's latent space that say, for every item, its class or cluster and how typical it is.

Dissertation §4.3.2: cluster the latent vectors (last hidden layer) with a
model that gives ``P(A|x)`` for the class or cluster ``A`` an item belongs to,
and rank items by the likelihood ratio ``P(A|x) / P(not A|x)``: about 1 at a
decision boundary, large for exemplars. Three models, each a Model/Fit pair:

* :class:`PaperMaxMarginModel` (supervised; the ``paper`` setting, the
  driver's default): MaxMargin as the paper ran it -- a linear SVC at
  ``C = 1`` on the raw latent vectors with LIBSVM's probability estimates
  (Platt scaling of each one-vs-one SVM, fitted by internal cross-validation,
  then pairwise coupling by Wu, Lin & Weng 2004). It *is* scikit-learn's
  ``SVC(kernel="linear", probability=True)``, seeded. The paper states
  neither C nor standardisation; C = 1 is LIBSVM's default and its 1.5 s for
  2,118 x 64 points fits it.
* :class:`MaxMarginModel` (supervised; the ``spark-parity`` setting): a
  linear SVM per class, one vs rest (hinge loss; linear because nothing
  non-linear follows the last hidden layer) on the standardised latent
  vectors at ``C = 0.01``, turned into probabilities by Platt scaling of each
  margin, normalised over the classes; ``A`` is the SVMs' most probable
  class. Not the paper's configuration: it is chosen so that scikit-learn
  and MLlib (the Spark path) solve the same well-conditioned problem.
* :class:`GaussianMixtureModel` (unsupervised): a Gaussian mixture with as
  many components as classes, full or spherical covariances; ``A`` is the
  most probable component.

Both report the *log* likelihood ratio, computed from log-probabilities so
that exemplars whose ``P(not A|x)`` underflows still sort correctly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import expit, log_expit, logsumexp

__all__ = [
    "GaussianMixtureFit",
    "GaussianMixtureModel",
    "LatentFit",
    "MaxMarginFit",
    "MaxMarginModel",
    "PaperMaxMarginFit",
    "PaperMaxMarginModel",
    "gaussian_log_density",
    "log_likelihood_ratio",
    "platt_fit",
    "platt_log_probabilities",
    "platt_targets",
    "standardisation",
]


@dataclass
class LatentFit:
    """Per item: its stratum (class or cluster), log likelihood ratio and log-probabilities.

    Attributes
    ----------
    strata : ndarray of int64, shape (n,)
    log_likelihood_ratio : ndarray of float64, shape (n,)
        ``log P(A|x) - log P(not A|x)`` for the item's stratum ``A``.
    log_probabilities : ndarray of float64, shape (n, k)
    """

    strata: np.ndarray
    log_likelihood_ratio: np.ndarray
    log_probabilities: np.ndarray


def log_likelihood_ratio(log_probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Strata (argmax) and ``log P(A|x) - log sum_{B != A} P(B|x)`` from log-probabilities (n, k)."""
    lp = np.asarray(log_probabilities, dtype=np.float64)
    strata = lp.argmax(axis=1)
    rows = np.arange(len(lp))
    others = lp.copy()
    others[rows, strata] = -np.inf
    return strata.astype(np.int64), lp[rows, strata] - logsumexp(others, axis=1)


# --- Platt scaling -------------------------------------------------------------------------------------


def platt_targets(positive: np.ndarray) -> tuple[float, float]:
    """Platt's (1999) smoothed targets ``(N+ + 1)/(N+ + 2)`` and ``1/(N- + 2)``.

    They keep the fit finite when the margins separate the classes perfectly,
    which a trained network's latent space often does.
    """
    n_pos = int(np.sum(positive))
    n_neg = len(positive) - n_pos
    return (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2)


def platt_fit(margins: np.ndarray, positive: np.ndarray, max_iter: int = 100) -> tuple[float, float]:
    """Fit ``P(positive | m) = sigmoid(a m + b)`` to SVM margins by maximum likelihood on Platt's targets.

    Newton's method with a backtracking line search (Lin, Lin & Weng 2007)
    on the cross-entropy against :func:`platt_targets`.

    Returns
    -------
    (a, b) : tuple of float
    """
    m = np.asarray(margins, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    hi, lo = platt_targets(positive)
    t = np.where(positive, hi, lo)

    def loss(a: float, b: float) -> float:
        z = a * m + b
        return float(-np.sum(t * log_expit(z) + (1 - t) * log_expit(-z)))

    a, b = 0.0, float(np.log((positive.sum() + 1) / (len(m) - positive.sum() + 1)))
    current = loss(a, b)
    for _ in range(max_iter):
        p = expit(a * m + b)
        g = np.array([np.sum((p - t) * m), np.sum(p - t)])
        if np.max(np.abs(g)) < 1e-9 * max(1, len(m)):
            break
        w = p * (1 - p)
        h = np.array([[np.sum(w * m * m), np.sum(w * m)], [np.sum(w * m), np.sum(w)]]) + 1e-12 * np.eye(2)
        direction = -np.linalg.solve(h, g)
        slope = float(g @ direction)
        scale = 1.0
        while scale >= 1e-10:
            trial = loss(a + scale * direction[0], b + scale * direction[1])
            if trial <= current + 1e-4 * scale * slope:
                a, b, current = a + scale * direction[0], b + scale * direction[1], trial
                break
            scale /= 2
        else:
            break  # no decrease along Newton's direction: at the optimum to float precision
    return float(a), float(b)


def platt_log_probabilities(margins: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Log-probabilities over classes from one-vs-rest margins (n, k) and per-class Platt (a, b).

    Each class's calibrated ``sigmoid(a_k m_k + b_k)`` normalised to sum to one
    over the classes, as scikit-learn does for one-vs-rest calibration. With
    a single margin column (two classes) it is ``[1 - p, p]``.
    """
    m = np.atleast_2d(np.asarray(margins, dtype=np.float64))
    z = m * np.asarray(a)[None, :] + np.asarray(b)[None, :]
    if m.shape[1] == 1:
        return np.column_stack([log_expit(-z[:, 0]), log_expit(z[:, 0])])
    lp = log_expit(z)
    return lp - logsumexp(lp, axis=1, keepdims=True)


# --- MaxMargin ---------------------------------------------------------------------------------------------


@dataclass
class MaxMarginFit(LatentFit):
    """A fitted :class:`MaxMarginModel`: the :class:`LatentFit` plus the SVMs and their Platt parameters.

    ``coef`` is (k, d) and ``intercept`` (k,), one row per one-vs-rest SVM
    (a single row for two classes), on latent vectors standardised with
    ``center`` and ``scale``; ``platt_a``, ``platt_b`` are per SVM.
    """

    coef: np.ndarray | None = None
    intercept: np.ndarray | None = None
    platt_a: np.ndarray | None = None
    platt_b: np.ndarray | None = None
    center: np.ndarray | None = None
    scale: np.ndarray | None = None

    def margins(self, latent: np.ndarray) -> np.ndarray:
        """Each SVM's decision value ``w . z + b`` for standardised ``z``, shape (n, k)."""
        if self.coef is None or self.intercept is None or self.center is None or self.scale is None:
            raise ValueError("this fit has no SVM hyperplanes (coef, intercept, center, scale)")
        z = (np.asarray(latent, dtype=np.float64) - self.center) / self.scale
        return z @ self.coef.T + self.intercept


def standardisation(latent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and sample standard deviation (ddof 1, as Spark's StandardScaler); 1 where constant."""
    x = np.asarray(latent, dtype=np.float64)
    scale = x.std(axis=0, ddof=1) if len(x) > 1 else np.ones(x.shape[1])
    return x.mean(axis=0), np.where(scale > 0, scale, 1.0)


class MaxMarginModel:
    """Linear SVMs (one vs rest, hinge loss) on the standardised latent space, calibrated by Platt scaling.

    The SVM objective is ``sum_i hinge_i + |w|^2 / (2 C)`` per class on
    latent vectors centred and scaled to unit variance; the Spark path
    (MLlib ``LinearSVC`` with ``regParam = 1 / (C n)``) minimises the same.

    Parameters
    ----------
    c : float
        SVM regularisation ``C``. The default 0.01 keeps the problem well
        conditioned: a trained network separates its classes almost
        linearly, and near the hard-margin limit (C = 1 on 1,797 digits) the
        solvers of scikit-learn and MLlib stop at weights 40 % apart.
    max_iter : int
        Iterations of the SVM solver.
    tol : float
        Tolerance of the SVM solver.
    """

    def __init__(self, c: float = 0.01, max_iter: int = 20_000, tol: float = 1e-6):
        self.c, self.max_iter, self.tol = float(c), int(max_iter), float(tol)

    def fit(self, latent: np.ndarray, labels: np.ndarray, seed: int = 0) -> MaxMarginFit:
        """Fit on latent vectors (n, d) and true class labels (n,)."""
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.svm import LinearSVC

        x = np.asarray(latent, dtype=np.float64)
        y = np.asarray(labels)
        classes = np.unique(y)
        if len(classes) < 2:
            raise ValueError(f"MaxMargin needs at least two classes, found {classes.tolist()}")
        center, scale = standardisation(x)
        # liblinear penalises the intercept as a weight on a constant feature; a constant of 10 makes
        # that penalty 100x weaker, close to MLlib's unpenalised intercept.
        svm = LinearSVC(C=self.c, loss="hinge", dual=True, max_iter=self.max_iter, tol=self.tol,
                        intercept_scaling=10.0, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            svm.fit((x - center) / scale, y)
        return self.from_svm(x, y, svm.coef_, svm.intercept_, center, scale)

    @staticmethod
    def from_svm(latent: np.ndarray, labels: np.ndarray, coef: np.ndarray, intercept: np.ndarray,
                 center: np.ndarray, scale: np.ndarray) -> MaxMarginFit:
        """Platt-calibrate given SVM hyperplanes (on standardised vectors) and score ``latent``."""
        y = np.asarray(labels)
        classes = np.unique(y)
        hyperplanes = np.atleast_2d(coef).astype(np.float64)
        fit = MaxMarginFit(np.empty(0, np.int64), np.empty(0), np.empty((0, 0)),
                           hyperplanes, np.atleast_1d(intercept).astype(np.float64),
                           center=np.asarray(center, np.float64), scale=np.asarray(scale, np.float64))
        margins = fit.margins(latent)
        positives = [y == classes[1]] if len(hyperplanes) == 1 else [y == c for c in classes]
        ab = np.array([platt_fit(margins[:, k], positives[k]) for k in range(len(hyperplanes))])
        fit.platt_a, fit.platt_b = ab[:, 0], ab[:, 1]
        lp = platt_log_probabilities(margins, fit.platt_a, fit.platt_b)
        strata, fit.log_likelihood_ratio = log_likelihood_ratio(lp)
        fit.strata, fit.log_probabilities = classes[strata].astype(np.int64), lp
        return fit


@dataclass
class PaperMaxMarginFit(LatentFit):
    """A fitted :class:`PaperMaxMarginModel`: the :class:`LatentFit` plus the fitted estimator.

    ``svc`` is scikit-learn's ``SVC`` (``predict_proba`` scores new latent vectors); ``classes`` its classes.
    """

    svc: Any = None
    classes: np.ndarray | None = None

    def score(self, latent: np.ndarray) -> PaperMaxMarginFit:
        """Set strata, log likelihood ratios and log-probabilities to those of ``latent``; returns self.

        LIBSVM's coupled probabilities are floored at 1e-7 before renormalising, so their logs are finite.
        """
        if self.svc is None or self.classes is None:
            raise ValueError("this fit has no SVC")
        with np.errstate(divide="ignore"):
            lp = np.log(self.svc.predict_proba(np.asarray(latent, dtype=np.float64)))
        strata, self.log_likelihood_ratio = log_likelihood_ratio(lp)
        self.strata, self.log_probabilities = np.asarray(self.classes)[strata].astype(np.int64), lp
        return self


class PaperMaxMarginModel:
    """MaxMargin as the paper ran it: LIBSVM's linear SVC with pairwise-coupled Platt probabilities.

    One linear SVM per pair of classes (one vs one) on the raw latent
    vectors; each pair's decision values are Platt-scaled (sigmoid fitted on
    5-fold cross-validated decision values, LIBSVM's ``-b 1``) and the
    pairwise probabilities coupled into ``P(class | x)`` (Wu, Lin & Weng
    2004, method 2). The stratum ``A`` is the class of highest probability
    (it can differ from LIBSVM's vote, ``SVC.predict``, near a boundary),
    and the likelihood ratio ``P(A|x) / (1 - P(A|x))``.

    Parameters
    ----------
    c : float
        SVM regularisation ``C``; LIBSVM's default 1.
    tol : float
        Tolerance of LIBSVM's SMO solver (its default 1e-3).
    max_iter : int
        SMO iterations; -1: no limit (LIBSVM's default).

    Notes
    -----
    The cost of LIBSVM grows between quadratically and cubically with the
    items (0.1-0.4 s for ~2,000 latent vectors of 64-84 dimensions in
    ``bench/results/sampling-small-sweeps.md``); the Spark path has no such
    model and runs the ``spark-parity`` setting (:class:`MaxMarginModel`).
    scikit-learn 1.9 deprecates ``SVC(probability=True)`` and 1.11 removes
    it; the replacement it proposes calibrates one-vs-rest scores, so the
    paper's setting will then need LIBSVM's coupling reimplemented.
    """

    def __init__(self, c: float = 1.0, tol: float = 1e-3, max_iter: int = -1):
        self.c, self.tol, self.max_iter = float(c), float(tol), int(max_iter)

    def estimator(self, seed: int = 0) -> Any:
        """The scikit-learn estimator this model fits: ``SVC(kernel="linear", probability=True)``, seeded.

        Platt scaling's internal cross-validation shuffles the items: ``random_state`` makes it repeatable.

        Parameters
        ----------
        seed : int

        Returns
        -------
        sklearn.svm.SVC
        """
        from sklearn.svm import SVC

        return SVC(kernel="linear", C=self.c, probability=True, tol=self.tol, max_iter=self.max_iter,
                   random_state=seed)

    def fit(self, latent: np.ndarray, labels: np.ndarray, seed: int = 0) -> PaperMaxMarginFit:
        """Fit on raw latent vectors (n, d) and true class labels (n,).

        Parameters
        ----------
        latent : ndarray, shape (n, d)
        labels : ndarray, shape (n,)
        seed : int
            Seed of Platt scaling's cross-validation folds.

        Returns
        -------
        PaperMaxMarginFit
        """
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        x = np.asarray(latent, dtype=np.float64)
        y = np.asarray(labels)
        classes = np.unique(y)
        if len(classes) < 2:
            raise ValueError(f"MaxMargin needs at least two classes, found {classes.tolist()}")
        svc = self.estimator(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            # scikit-learn 1.9 deprecates probability=True for CalibratedClassifierCV, which calibrates
            # one-vs-rest scores instead of coupling LIBSVM's pairwise Platt estimates: not the paper's.
            warnings.filterwarnings("ignore", message="The `probability` parameter", category=FutureWarning)
            svc.fit(x, y)
        fit = PaperMaxMarginFit(np.empty(0, np.int64), np.empty(0), np.empty((0, 0)), svc, svc.classes_)
        return fit.score(x)


# --- Gaussian mixtures -----------------------------------------------------------------------------------


def gaussian_log_density(x: np.ndarray, mean: np.ndarray, covariance: np.ndarray) -> np.ndarray:
    """``log N(x; mean, covariance)`` for rows of ``x`` (n, d); a scalar covariance means spherical."""
    x = np.asarray(x, dtype=np.float64)
    d = x.shape[1]
    diff = x - mean
    cov = np.asarray(covariance, dtype=np.float64)
    if cov.ndim == 0:
        return -0.5 * (np.sum(diff**2, axis=1) / cov + d * np.log(2 * np.pi * cov))
    chol = np.linalg.cholesky(cov)
    from scipy.linalg import solve_triangular

    z = solve_triangular(chol, diff.T, lower=True)
    return -0.5 * (np.sum(z**2, axis=0) + d * np.log(2 * np.pi)) - np.sum(np.log(np.diag(chol)))


@dataclass
class GaussianMixtureFit(LatentFit):
    """A fitted :class:`GaussianMixtureModel`: the :class:`LatentFit` plus weights, means and covariances."""

    weights: np.ndarray | None = None
    means: np.ndarray | None = None
    covariances: np.ndarray | None = None

    def log_probabilities_of(self, latent: np.ndarray) -> np.ndarray:
        """Log responsibilities ``log P(component | x)`` of any latent vectors, shape (n, k)."""
        if self.weights is None or self.means is None or self.covariances is None:
            raise ValueError("this fit has no mixture parameters (weights, means, covariances)")
        joint = np.column_stack([np.log(w) + gaussian_log_density(latent, m, c)
                                 for w, m, c in zip(self.weights, self.means, self.covariances)])
        return joint - logsumexp(joint, axis=1, keepdims=True)


class GaussianMixtureModel:
    """A Gaussian mixture on the latent space (scikit-learn's EM, k-means initialised).

    Parameters
    ----------
    n_components : int
        The number of classes, per the study.
    covariance : {"full", "spherical"}
    max_iter : int
    reg_covar : float
        Added to covariance diagonals: dead ReLU units have zero variance.
    """

    def __init__(self, n_components: int, covariance: str = "full", max_iter: int = 200, reg_covar: float = 1e-4):
        if covariance not in ("full", "spherical"):
            raise ValueError(f"covariance must be 'full' or 'spherical', not {covariance!r}")
        self.n_components, self.covariance = int(n_components), covariance
        self.max_iter, self.reg_covar = int(max_iter), float(reg_covar)

    def fit(self, latent: np.ndarray, seed: int = 0) -> GaussianMixtureFit:
        """Fit on latent vectors (n, d)."""
        from sklearn.mixture import GaussianMixture

        x = np.asarray(latent, dtype=np.float64)
        gmm = GaussianMixture(self.n_components, covariance_type=self.covariance, max_iter=self.max_iter,
                              reg_covar=self.reg_covar, random_state=seed).fit(x)
        return self.from_parameters(x, gmm.weights_, gmm.means_, gmm.covariances_)

    @staticmethod
    def from_parameters(latent: np.ndarray, weights: np.ndarray, means: np.ndarray,
                        covariances: np.ndarray) -> GaussianMixtureFit:
        """The fit of given mixture parameters (e.g. from Spark MLlib) evaluated on ``latent``."""
        fit = GaussianMixtureFit(np.empty(0, np.int64), np.empty(0), np.empty((0, 0)), np.asarray(weights),
                                 np.asarray(means), np.asarray(covariances))
        lp = fit.log_probabilities_of(latent)
        fit.strata, fit.log_likelihood_ratio = log_likelihood_ratio(lp)
        fit.log_probabilities = lp
        return fit
