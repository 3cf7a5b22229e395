"""The sampling techniques of the study in one table, and the two paths that read it.

Every technique is a :class:`Technique` in :data:`TECHNIQUES`: the latent
model it ranks items by (a :class:`LatentModel`: MaxMargin or a Gaussian
mixture, fitted once for all fractions), its draw on the driver (on the
latent matrix in memory, with :mod:`~scilens.diagnosis.samplers`) and its
draw on Spark (with :mod:`~scilens.diagnosis.stages`), or none.

* The driver path: :func:`sample_latent` takes the latent matrix (last
  hidden layer), the true labels and the model's predictions, fits the
  technique's latent model once (:func:`fit_latent`) and draws one sample
  per fraction (:func:`draw_sample`).
* The Spark path: :class:`SparkSampler` does the same on an embeddings
  table when it is too large to collect.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType

import numpy as np
from pyspark import StorageLevel
from pyspark.sql import DataFrame

from scilens.core.config import Config, ConfigError, field
from scilens.diagnosis import samplers, stages
from scilens.diagnosis.latent import GaussianMixtureModel, LatentFit, MaxMarginModel

__all__ = [
    "DRIVER_ONLY",
    "TECHNIQUES",
    "LatentItems",
    "LatentModel",
    "SamplingConfig",
    "SparkSampler",
    "Technique",
    "draw_sample",
    "fit_latent",
    "get_technique",
    "sample_latent",
]


@dataclass
class SamplingConfig(Config):
    """Parameters of the samplers (the paper's defaults)."""

    tuning_factor: float = field(0.7, "j of Algorithm 1: share of each stratum's draw taken from the boundary "
                                 "(low likelihood ratio) end; 1 - j comes from the exemplar end.", min=0.0, max=1.0)
    seed: int = field(0, "Seed of every random choice (random samplers, GMM initialisation, stream orders).")
    svm_c: float = field(0.01, "Linear SVM regularisation C of MaxMargin (on standardised latent vectors; "
                         "see scilens.diagnosis.latent.MaxMarginModel).", check=lambda v: v > 0,
                         check_doc="must be > 0")
    svm_max_iter: int = field(20_000, "Iterations of the SVM solver on the driver (liblinear).", min=1)
    spark_svm_max_iter: int = field(100, "Iterations of MLlib's LinearSVC on the Spark path (each one a pass "
                                    "over the data).", min=1)
    gmm_max_iter: int = field(200, "EM iterations of the Gaussian mixtures.", min=1)
    weight_cap: float = field(1000.0, "Weighted variants: likelihood ratios are clipped to [1/cap, cap] before "
                              "weighting by their inverse.", min=1.0)
    incorrect_share: float = field(0.5, "stratified_weighted: share of each class's draw taken from its "
                                   "misclassified items.", min=0.0, max=1.0)
    latent_components: int = field(5, "simple_latent: principal components of the grid.", min=1, max=16)
    latent_bins: int = field(2, "simple_latent: equal-width bins per component.", min=1)
    vas_bandwidth: float | None = field(None, "VAS proximity kernel width eps; null: the median pairwise "
                                        "distance of the latent vectors.")
    tree_max_children: int | None = field(None, "eb_tree: most children per node (null: unlimited, as in "
                                          "Mathy et al.).")


@dataclass(frozen=True)
class LatentItems:
    """What a driver draw reads: the items and, for a technique with a latent model, its fit.

    Attributes
    ----------
    latent : ndarray, shape (n, d)
    labels : ndarray, shape (n,)
        True classes.
    predictions : ndarray, shape (n,)
        The model's classes.
    fit : LatentFit or None
        The fit of the technique's latent model (None for a technique without one).
    """

    latent: np.ndarray
    labels: np.ndarray
    predictions: np.ndarray
    fit: LatentFit | None = None

    def ranked(self) -> LatentFit:
        """The latent fit a likelihood draw ranks by."""
        if self.fit is None:
            raise ValueError("this draw ranks by a latent model's fit; none was given")
        return self.fit


DriverFit = Callable[[np.ndarray, np.ndarray, np.ndarray, SamplingConfig], LatentFit]
"""``fit(latent, labels, predictions, config)``: a latent model fitted on the driver."""
SparkScore = Callable[[DataFrame, str, SamplingConfig], tuple[DataFrame, dict[str, np.ndarray]]]
"""``score(embeddings, latent_column, config) -> (scored items, parameters)``: a latent model on Spark."""
DriverDraw = Callable[[LatentItems, float, int, SamplingConfig], samplers.Sample]
"""``draw(items, fraction, seed, config)``: one sample on the driver."""
SparkDraw = Callable[[DataFrame, Sequence[float], SamplingConfig, str], dict[float, DataFrame]]
"""``draw(items, fractions, config, latent_column) -> {fraction: rows}``: samples on Spark, from the scored
items for a technique with a latent model, else from the embeddings table."""


@dataclass(frozen=True)
class LatentModel:
    """A model of the latent space that gives every item a stratum and a log likelihood ratio.

    Attributes
    ----------
    name : str
    fit : callable
        Its fit on the driver (:data:`DriverFit`).
    spark_score : callable or None
        Its fit and scoring on Spark (:data:`SparkScore`); None where MLlib has no such model.
    """

    name: str
    fit: DriverFit
    spark_score: SparkScore | None


@dataclass(frozen=True)
class Technique:
    """One sampling technique, as both paths run it.

    Attributes
    ----------
    name : str
        As configs and outputs (``technique=<name>``) name it.
    model : LatentModel or None
        The latent model whose strata and likelihood ratios the draws rank by;
        None: the draw stratifies by itself (labels, predictions, a grid, a stream).
    draw : callable
        The draw on the driver (:data:`DriverDraw`).
    spark_draw : callable or None
        The draw on Spark (:data:`SparkDraw`); None: the technique runs on the driver only.
    one_sample : bool
        The technique chooses its sample's size: one sample whatever the fractions.
    """

    name: str
    model: LatentModel | None
    draw: DriverDraw
    spark_draw: SparkDraw | None
    one_sample: bool = False

    def __post_init__(self) -> None:
        if self.spark_draw is not None and self.model is not None and self.model.spark_score is None:
            raise ValueError(f"{self.name}: a Spark draw needs its latent model ({self.model.name}) on Spark too")


# --- the latent models ---------------------------------------------------------------------------------------


def _fit_maxmargin(latent: np.ndarray, labels: np.ndarray, predictions: np.ndarray,
                   config: SamplingConfig) -> LatentFit:
    return MaxMarginModel(config.svm_c, config.svm_max_iter).fit(latent, labels, seed=config.seed)


def _fit_gmm(covariance: str, latent: np.ndarray, labels: np.ndarray, predictions: np.ndarray,
             config: SamplingConfig) -> LatentFit:
    # One component per class, the predicted ones included.
    n_classes = len(np.unique(np.concatenate([np.asarray(labels), np.asarray(predictions)])))
    return GaussianMixtureModel(n_classes, covariance, config.gmm_max_iter).fit(latent, seed=config.seed)


MAXMARGIN = LatentModel("maxmargin", _fit_maxmargin, stages.score_maxmargin)
GMM_FULL = LatentModel("gmm_full", partial(_fit_gmm, "full"), stages.score_gmm)
GMM_SPHERICAL = LatentModel("gmm_spherical", partial(_fit_gmm, "spherical"), None)  # MLlib: full covariances only


# --- the driver draws ----------------------------------------------------------------------------------------


def _boundary_exemplar(items: LatentItems, fraction: float, seed: int, config: SamplingConfig) -> samplers.Sample:
    fit = items.ranked()
    return samplers.boundary_exemplar(fit.strata, fit.log_likelihood_ratio, fraction, config.tuning_factor)


def _likelihood_weighted(items: LatentItems, fraction: float, seed: int, config: SamplingConfig) -> samplers.Sample:
    fit = items.ranked()
    return samplers.likelihood_weighted(fit.strata, fit.log_likelihood_ratio, fraction, seed, config.weight_cap)


def _uniform(items: LatentItems, fraction: float, seed: int, config: SamplingConfig) -> samplers.Sample:
    return samplers.uniform(len(items.latent), fraction, seed)


def _stratified_cm(items: LatentItems, fraction: float, seed: int, config: SamplingConfig) -> samplers.Sample:
    return samplers.stratified_by_confusion(items.labels, items.predictions, fraction, seed)


def _stratified_weighted(items: LatentItems, fraction: float, seed: int, config: SamplingConfig) -> samplers.Sample:
    return samplers.stratified_weighted(items.labels, items.predictions, fraction, seed, config.incorrect_share)


def _simple_latent(items: LatentItems, fraction: float, seed: int, config: SamplingConfig) -> samplers.Sample:
    return samplers.simple_latent(items.latent, fraction, seed, config.latent_components, config.latent_bins)


def _vas(items: LatentItems, fraction: float, seed: int, config: SamplingConfig) -> samplers.Sample:
    return samplers.visualization_aware(items.latent, fraction, seed, config.vas_bandwidth)


def _boundary_tree(items: LatentItems, fraction: float, seed: int, config: SamplingConfig) -> samplers.Sample:
    return samplers.boundary_tree(items.latent, items.predictions, seed, config.tree_max_children)


# --- the table -----------------------------------------------------------------------------------------------

TECHNIQUES: Mapping[str, Technique] = MappingProxyType({t.name: t for t in (
    Technique("uniform", None, _uniform, stages.uniform),
    Technique("stratified_cm", None, _stratified_cm, stages.stratified_cm),
    Technique("stratified_weighted", None, _stratified_weighted, stages.stratified_weighted),
    Technique("simple_latent", None, _simple_latent, stages.simple_latent),
    Technique("gmm_full", GMM_FULL, _boundary_exemplar, stages.boundary_exemplar),
    Technique("gmm_spherical", GMM_SPHERICAL, _boundary_exemplar, None),
    Technique("gmm_full_weighted", GMM_FULL, _likelihood_weighted, stages.likelihood_weighted),
    Technique("gmm_spherical_weighted", GMM_SPHERICAL, _likelihood_weighted, None),
    Technique("maxmargin", MAXMARGIN, _boundary_exemplar, stages.boundary_exemplar),
    Technique("maxmargin_weighted", MAXMARGIN, _likelihood_weighted, stages.likelihood_weighted),
    # VAS and the boundary tree stream over all items at once: no Spark draw.
    Technique("vas", None, _vas, None),
    Technique("eb_tree", None, _boundary_tree, None, one_sample=True),
)})
"""Technique name -> :class:`Technique`: the paper's samplers plus the likelihood-weighted variant of each
clustering sampler. Iterating gives the names."""

DRIVER_ONLY = tuple(name for name, t in TECHNIQUES.items() if t.spark_draw is None)
"""The techniques without a Spark draw."""


def get_technique(name: str) -> Technique:
    """The technique called ``name``.

    Parameters
    ----------
    name : str
        One of :data:`TECHNIQUES`.

    Returns
    -------
    Technique

    Raises
    ------
    ValueError
        For an unknown name, listing the known ones.
    """
    if name not in TECHNIQUES:
        raise ValueError(f"unknown sampling technique {name!r}; choose one of {', '.join(TECHNIQUES)}")
    return TECHNIQUES[name]


# --- the driver path -----------------------------------------------------------------------------------------


def fit_latent(technique: str, latent: np.ndarray, labels: np.ndarray, predictions: np.ndarray,
               config: SamplingConfig | None = None) -> LatentFit | None:
    """The latent model ``technique`` ranks by, fitted on the driver.

    Parameters
    ----------
    technique : str
        One of :data:`TECHNIQUES`.
    latent : ndarray, shape (n, d)
    labels, predictions : ndarray, shape (n,)
    config : SamplingConfig, optional

    Returns
    -------
    LatentFit or None
        None for a technique without a latent model.
    """
    model = get_technique(technique).model
    return None if model is None else model.fit(latent, labels, predictions, config or SamplingConfig())


def draw_sample(technique: str, fraction: float, latent: np.ndarray, labels: np.ndarray, predictions: np.ndarray,
                fit: LatentFit | None = None, seed: int | None = None,
                config: SamplingConfig | None = None) -> samplers.Sample:
    """One sample of ``technique`` at ``fraction`` on the driver.

    Parameters
    ----------
    technique : str
        One of :data:`TECHNIQUES`.
    fraction : float
        Sample size as a fraction of the items, in (0, 1].
    latent : ndarray, shape (n, d)
    labels, predictions : ndarray, shape (n,)
    fit : LatentFit, optional
        From :func:`fit_latent`, to draw several samples of one fit; fitted here when needed and not given.
    seed : int, optional
        The config's seed when not given.
    config : SamplingConfig, optional

    Returns
    -------
    samplers.Sample
    """
    config = config or SamplingConfig()
    t = get_technique(technique)
    if t.model is not None and fit is None:
        fit = t.model.fit(latent, labels, predictions, config)
    return t.draw(LatentItems(latent, labels, predictions, fit), fraction, config.seed if seed is None else seed,
                  config)


def sample_latent(technique: str, latent: np.ndarray, labels: np.ndarray, predictions: np.ndarray,
                  fractions: Sequence[float], config: SamplingConfig | None = None) -> dict[float, samplers.Sample]:
    """Samples of one technique at several fractions on the driver, its latent model fitted once.

    Parameters
    ----------
    technique : str
        One of :data:`TECHNIQUES`.
    latent : ndarray, shape (n, d)
        The latent vectors (last hidden layer).
    labels, predictions : ndarray, shape (n,)
        True classes and the model's.
    fractions : sequence of float
    config : SamplingConfig, optional

    Returns
    -------
    dict of float to samplers.Sample
        Keyed by fraction; a technique that chooses its own size (``eb_tree``) gives one sample whatever
        the fractions, keyed by the fraction it came to.
    """
    config = config or SamplingConfig()
    t = get_technique(technique)
    latent = np.asarray(latent, dtype=np.float64)
    if t.one_sample:
        sample = t.draw(LatentItems(latent, labels, predictions), 1.0, config.seed, config)
        return {round(len(sample) / len(latent), 4): sample}
    fit = fit_latent(technique, latent, labels, predictions, config)
    items = LatentItems(latent, labels, predictions, fit)
    return {float(f): t.draw(items, f, config.seed, config) for f in fractions}


# --- the Spark path ------------------------------------------------------------------------------------------


class SparkSampler:
    """One technique over several fractions on a Spark embeddings table (MLlib), for latent tables too large.

    Parameters
    ----------
    technique : str
        A technique of :data:`TECHNIQUES` with a Spark draw (not one of :data:`DRIVER_ONLY`).
    config : SamplingConfig, optional
    latent : str
        The latent column (``array<float>``) of the embeddings table, which
        also has ``id``, ``label`` and ``prediction``.

    Raises
    ------
    ConfigError
        For an unknown technique or one without a Spark draw.

    Attributes
    ----------
    parameters : dict of ndarray
        The latent model's parameters, after :meth:`score`.
    """

    def __init__(self, technique: str, config: SamplingConfig | None = None, latent: str = "latent"):
        t = TECHNIQUES.get(technique)
        if t is None:
            raise ConfigError(f"unknown sampling technique {technique!r}")
        if t.spark_draw is None:
            raise ConfigError(f"technique {technique!r} has no Spark path (VAS and the boundary tree stream over "
                              f"all items, MLlib has no spherical mixtures); use fit=driver")
        self.technique, self.config, self.latent = t, config or SamplingConfig(), latent
        self._draw: SparkDraw = t.spark_draw
        self.parameters: dict[str, np.ndarray] = {}

    def score(self, df: DataFrame) -> DataFrame:
        """Items with stratum and log likelihood ratio by the technique's latent model, persisted."""
        model = self.technique.model
        if model is None or model.spark_score is None:
            raise ValueError(f"technique {self.technique.name!r} ranks by no latent model")
        scored, self.parameters = model.spark_score(df, self.latent, self.config)
        return scored.persist(StorageLevel.MEMORY_AND_DISK)

    def draw(self, items: DataFrame, fraction: float) -> DataFrame:
        """One sample at ``fraction``.

        ``items`` is :meth:`score`'s output for a technique with a latent model, else the embeddings table.
        """
        return self._draw(items, [fraction], self.config, self.latent)[float(fraction)]

    def run(self, df: DataFrame, fractions: Sequence[float]) -> dict[float, DataFrame]:
        """Sample rows (the columns of :meth:`scilens.diagnosis.samplers.Sample.to_frame`) keyed by fraction."""
        items = self.score(df) if self.technique.model is not None else df
        return self._draw(items, fractions, self.config, self.latent)
