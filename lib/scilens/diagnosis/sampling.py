"""The sampling techniques of the study in one table, and the driver path that reads it.

Every technique is a :class:`Technique` in :data:`TECHNIQUES`: the latent
model it ranks items by (a :class:`LatentModel`: MaxMargin or a Gaussian
mixture, fitted once for all fractions), its draw on the driver (on the
latent matrix in memory, with :mod:`~scilens.diagnosis.samplers`) and its
draw on Spark (a function of :mod:`~scilens.diagnosis.stages`, named here by
a :class:`SparkStage`), or none.

* The driver path: :func:`sample_latent` takes the latent matrix (last
  hidden layer), the true labels and the model's predictions, fits the
  technique's latent model once (:func:`fit_latent`) and draws one sample
  per fraction (:func:`draw_sample`); :func:`driver_samples` runs several
  techniques and gives their sample rows.
* The Spark path: :class:`~scilens.diagnosis.stages.SparkSampler` does the
  same on an embeddings table when it is too large to collect.

This module needs no Spark: the table names its Spark functions by
:class:`SparkStage`, which imports :mod:`~scilens.diagnosis.stages` only
when one is called.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import pandas as pd

from scilens.core.config import Config, field
from scilens.diagnosis import samplers
from scilens.diagnosis.latent import GaussianMixtureModel, LatentFit, MaxMarginModel, PaperMaxMarginModel

if TYPE_CHECKING:  # only named in type aliases: the Spark layer is imported when a SparkStage is called
    from pyspark.sql import DataFrame

__all__ = [
    "DEFAULT_SVM_C",
    "DRIVER_ONLY",
    "MAXMARGIN_SETTINGS",
    "TECHNIQUES",
    "LatentItems",
    "LatentModel",
    "SamplingConfig",
    "SparkStage",
    "Technique",
    "draw_sample",
    "driver_samples",
    "fit_latent",
    "get_technique",
    "sample_latent",
]


MAXMARGIN_SETTINGS = ("paper", "spark-parity")
"""MaxMargin's settings: the paper's (driver only) and the one MLlib reproduces (both paths)."""
DEFAULT_SVM_C = {"paper": 1.0, "spark-parity": 0.01}
"""Each MaxMargin setting's C when ``svm_c`` is null."""


@dataclass
class SamplingConfig(Config):
    """Parameters of the samplers (the paper's defaults)."""

    tuning_factor: float = field(0.7, "j of Algorithm 1: share of each stratum's draw taken from the boundary "
                                 "(low likelihood ratio) end; 1 - j comes from the exemplar end.", min=0.0, max=1.0)
    seed: int = field(0, "Seed of every random choice (random samplers, GMM initialisation, stream orders).")
    maxmargin: str = field("paper", "MaxMargin setting on the driver: paper (the paper's: linear SVC, C = 1, "
                           "pairwise-coupled Platt probabilities, raw latents; scilens.diagnosis.latent."
                           "PaperMaxMarginModel) or spark-parity (one-vs-rest linear SVMs, C = 0.01, standardised "
                           "latents: what MLlib solves alike; MaxMarginModel). The Spark path always runs "
                           "spark-parity.", choices=MAXMARGIN_SETTINGS)
    svm_c: float | None = field(None, "Linear SVM regularisation C of MaxMargin; null: the setting's own "
                                "(1 for paper, 0.01 for spark-parity).", check=lambda v: v > 0,
                                check_doc="must be > 0")
    svm_max_iter: int = field(20_000, "Iterations of the SVM solver on the driver (liblinear; spark-parity).",
                              min=1)
    spark_svm_max_iter: int = field(100, "Iterations of MLlib's LinearSVC on the Spark path (each one a pass "
                                    "over the data).", min=1)
    gmm_max_iter: int = field(200, "EM iterations of the Gaussian mixtures.", min=1)
    weight_cap: float = field(1000.0, "Weighted variants: likelihood ratios are clipped to [1/cap, cap] before "
                              "weighting by their inverse.", min=1.0)
    incorrect_share: float = field(0.5, "stratified_weighted, maxmargin_label_aware: share of each "
                                   "class's draw taken from its misclassified items.", min=0.0, max=1.0)
    latent_components: int = field(5, "simple_latent: principal components of the grid.", min=1, max=16)
    latent_bins: int = field(2, "simple_latent: equal-width bins per component.", min=1)
    vas_bandwidth: float | None = field(None, "VAS proximity kernel width eps; null: the median pairwise "
                                        "distance of the latent vectors.")
    tree_max_children: int | None = field(None, "eb_tree: most children per node (null: unlimited, as in "
                                          "Mathy et al.).")

    def svm_c_of(self, setting: str) -> float:
        """MaxMargin's C in ``setting``: ``svm_c``, or the setting's default when it is null.

        Parameters
        ----------
        setting : str
            One of :data:`MAXMARGIN_SETTINGS`.

        Returns
        -------
        float
        """
        return float(self.svm_c) if self.svm_c is not None else DEFAULT_SVM_C[setting]


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


DriverFit: TypeAlias = Callable[[np.ndarray, np.ndarray, np.ndarray, SamplingConfig], LatentFit]
"""``fit(latent, labels, predictions, config)``: a latent model fitted on the driver."""
SparkScore: TypeAlias = "Callable[[DataFrame, str, SamplingConfig], tuple[DataFrame, dict[str, np.ndarray]]]"
"""``score(embeddings, latent_column, config) -> (scored items, parameters)``: a latent model on Spark."""
DriverDraw: TypeAlias = Callable[[LatentItems, float, int, SamplingConfig], samplers.Sample]
"""``draw(items, fraction, seed, config)``: one sample on the driver."""
SparkDraw: TypeAlias = "Callable[[DataFrame, Sequence[float], SamplingConfig, str], dict[float, DataFrame]]"
"""``draw(items, fractions, config, latent_column) -> {fraction: rows}``: samples on Spark, from the scored
items for a technique with a latent model, else from the embeddings table."""


@dataclass(frozen=True)
class SparkStage:
    """A function of :mod:`~scilens.diagnosis.stages` as the table names it: imported when first called.

    The table lists each technique's Spark scoring and draw beside its driver draw; naming them this way
    keeps this module, and everything on the driver path, free of the Spark layer's imports.

    Attributes
    ----------
    name : str
        The function's name in :mod:`~scilens.diagnosis.stages`.
    """

    name: str

    def resolve(self) -> Callable[..., Any]:
        """The function itself.

        Returns
        -------
        callable
            ``scilens.diagnosis.stages.<name>``.
        """
        from scilens.diagnosis import stages

        function: Callable[..., Any] = getattr(stages, self.name)
        return function

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function with these arguments."""
        return self.resolve()(*args, **kwargs)


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
    c = config.svm_c_of(config.maxmargin)
    if config.maxmargin == "paper":
        return PaperMaxMarginModel(c).fit(latent, labels, seed=config.seed)
    return MaxMarginModel(c, config.svm_max_iter).fit(latent, labels, seed=config.seed)


def _fit_gmm(covariance: str, latent: np.ndarray, labels: np.ndarray, predictions: np.ndarray,
             config: SamplingConfig) -> LatentFit:
    # One component per class, the predicted ones included.
    n_classes = len(np.unique(np.concatenate([np.asarray(labels), np.asarray(predictions)])))
    return GaussianMixtureModel(n_classes, covariance, config.gmm_max_iter).fit(latent, seed=config.seed)


# On Spark MaxMargin is the spark-parity setting whatever ``maxmargin`` says (MLlib has no pairwise coupling).
MAXMARGIN = LatentModel("maxmargin", _fit_maxmargin, SparkStage("score_maxmargin"))
GMM_FULL = LatentModel("gmm_full", partial(_fit_gmm, "full"), SparkStage("score_gmm"))
GMM_SPHERICAL = LatentModel("gmm_spherical", partial(_fit_gmm, "spherical"), None)  # MLlib: full covariances only


# --- the driver draws ----------------------------------------------------------------------------------------


def _boundary_exemplar(items: LatentItems, fraction: float, seed: int, config: SamplingConfig) -> samplers.Sample:
    fit = items.ranked()
    return samplers.boundary_exemplar(fit.strata, fit.log_likelihood_ratio, fraction, config.tuning_factor)


def _likelihood_weighted(items: LatentItems, fraction: float, seed: int, config: SamplingConfig) -> samplers.Sample:
    fit = items.ranked()
    return samplers.likelihood_weighted(fit.strata, fit.log_likelihood_ratio, fraction, seed, config.weight_cap)


def _label_aware(items: LatentItems, fraction: float, seed: int, config: SamplingConfig) -> samplers.Sample:
    fit = items.ranked()
    return samplers.label_aware_boundary_exemplar(items.labels, items.predictions, fit.log_likelihood_ratio,
                                                  fraction, config.tuning_factor, config.incorrect_share)


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
    Technique("uniform", None, _uniform, SparkStage("uniform")),
    Technique("stratified_cm", None, _stratified_cm, SparkStage("stratified_cm")),
    Technique("stratified_weighted", None, _stratified_weighted, SparkStage("stratified_weighted")),
    Technique("simple_latent", None, _simple_latent, SparkStage("simple_latent")),
    Technique("gmm_full", GMM_FULL, _boundary_exemplar, SparkStage("boundary_exemplar")),
    Technique("gmm_spherical", GMM_SPHERICAL, _boundary_exemplar, None),
    Technique("gmm_full_weighted", GMM_FULL, _likelihood_weighted, SparkStage("likelihood_weighted")),
    Technique("gmm_spherical_weighted", GMM_SPHERICAL, _likelihood_weighted, None),
    Technique("maxmargin", MAXMARGIN, _boundary_exemplar, SparkStage("boundary_exemplar")),
    Technique("maxmargin_weighted", MAXMARGIN, _likelihood_weighted, SparkStage("likelihood_weighted")),
    # Uses labels and predictions like the stratifiers (a tier-(b) sampler): driver only.
    Technique("maxmargin_label_aware", MAXMARGIN, _label_aware, None),
    # VAS and the boundary tree stream over all items at once: no Spark draw.
    Technique("vas", None, _vas, None),
    Technique("eb_tree", None, _boundary_tree, None, one_sample=True),
)})
"""Technique name -> :class:`Technique`: the paper's samplers, the likelihood-weighted variant of each
clustering sampler and MaxMargin filling stratified weighted's (label, correct) quotas. Iterating gives the names."""

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


def driver_samples(techniques: Sequence[str], fractions: Sequence[float], config: SamplingConfig, ids: np.ndarray,
                   labels: np.ndarray, predictions: np.ndarray,
                   latent: np.ndarray) -> tuple[list[pd.DataFrame], dict[str, float]]:
    """Sample rows of several techniques on the driver, with each technique's time.

    Parameters
    ----------
    techniques : sequence of str
        Names in :data:`TECHNIQUES`.
    fractions : sequence of float
    config : SamplingConfig
    ids, labels, predictions : ndarray, shape (n,)
        Item ids, true classes and the model's.
    latent : ndarray, shape (n, d)

    Returns
    -------
    frames : list of pandas.DataFrame
        One per sample: the columns of :meth:`scilens.diagnosis.samplers.Sample.to_frame` plus
        ``technique`` and ``fraction``.
    seconds : dict of str to float
        Wall time of each technique (its fit and all its draws).
    """
    frames, seconds = [], {}
    for technique in techniques:
        start = time.perf_counter()
        samples = sample_latent(technique, latent, labels, predictions, fractions, config)
        seconds[technique] = time.perf_counter() - start
        for fraction, sample in samples.items():
            frames.append(sample.to_frame(ids, labels, predictions).assign(technique=technique, fraction=fraction))
    return frames, seconds
