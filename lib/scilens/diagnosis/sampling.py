"""The sampling step: one technique of :mod:`~scilens.diagnosis.samplers` over several fractions.

:class:`SampleLatentTask` takes the latent matrix (last hidden layer), the
true labels and the model's predictions in memory, fits what the technique
needs once (an SVM, a Gaussian mixture, a tree) and draws one sample per
fraction. This is the driver path; :mod:`~scilens.diagnosis.spark_sampling`
runs the same techniques on Spark when the latent table is too large.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from scilens.core.config import Config, field
from scilens.diagnosis import samplers
from scilens.diagnosis.latent import GaussianMixtureModel, LatentFit, MaxMarginModel

__all__ = ["LIKELIHOOD_TECHNIQUES", "TECHNIQUES", "SampleLatentTask", "SamplingConfig"]

TECHNIQUES = (
    "uniform", "stratified_cm", "stratified_weighted", "simple_latent", "gmm_full", "gmm_spherical",
    "gmm_full_weighted", "gmm_spherical_weighted", "maxmargin", "maxmargin_weighted", "vas", "eb_tree",
)
"""Technique names: the paper's samplers plus the likelihood-weighted variant of each clustering sampler."""

LIKELIHOOD_TECHNIQUES = tuple(t for t in TECHNIQUES if t.startswith(("gmm", "maxmargin")))
"""Techniques that fit a latent model and rank items by likelihood ratio."""


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


class SampleLatentTask:
    """Draw samples of one technique at several fractions (the driver path).

    Parameters
    ----------
    technique : str
        One of :data:`TECHNIQUES`.
    config : SamplingConfig
    """

    def __init__(self, technique: str, config: SamplingConfig | None = None):
        if technique not in TECHNIQUES:
            raise ValueError(f"unknown sampling technique {technique!r}; choose one of {', '.join(TECHNIQUES)}")
        self.technique = technique
        self.config = config or SamplingConfig()

    def fit(self, latent: np.ndarray, labels: np.ndarray, predictions: np.ndarray) -> LatentFit | None:
        """The latent model the technique ranks by (None for techniques without one)."""
        cfg, t = self.config, self.technique
        if t.startswith("maxmargin"):
            return MaxMarginModel(cfg.svm_c, cfg.svm_max_iter).fit(latent, labels, seed=cfg.seed)
        if t.startswith("gmm"):
            n_classes = len(np.unique(np.concatenate([np.asarray(labels), np.asarray(predictions)])))
            covariance = "spherical" if "spherical" in t else "full"
            return GaussianMixtureModel(n_classes, covariance, cfg.gmm_max_iter).fit(latent, seed=cfg.seed)
        return None

    def draw(self, fraction: float, latent: np.ndarray, labels: np.ndarray, predictions: np.ndarray,
             fit: LatentFit | None = None, seed: int | None = None) -> samplers.Sample:
        """One sample at ``fraction`` (``fit`` from :meth:`fit` for the likelihood techniques)."""
        cfg, t = self.config, self.technique
        seed = cfg.seed if seed is None else seed
        if t in LIKELIHOOD_TECHNIQUES:
            if fit is None:
                fit = self.fit(latent, labels, predictions)
            if t.endswith("_weighted"):
                return samplers.likelihood_weighted(fit.strata, fit.log_likelihood_ratio, fraction, seed,
                                                    cfg.weight_cap)
            return samplers.boundary_exemplar(fit.strata, fit.log_likelihood_ratio, fraction, cfg.tuning_factor)
        if t == "uniform":
            return samplers.uniform(len(latent), fraction, seed)
        if t == "stratified_cm":
            return samplers.stratified_by_confusion(labels, predictions, fraction, seed)
        if t == "stratified_weighted":
            return samplers.stratified_weighted(labels, predictions, fraction, seed, cfg.incorrect_share)
        if t == "simple_latent":
            return samplers.simple_latent(latent, fraction, seed, cfg.latent_components, cfg.latent_bins)
        if t == "vas":
            return samplers.visualization_aware(latent, fraction, seed, cfg.vas_bandwidth)
        return samplers.boundary_tree(latent, predictions, seed, cfg.tree_max_children)

    def run(self, latent: np.ndarray, labels: np.ndarray, predictions: np.ndarray,
            fractions: Sequence[float]) -> dict[float, samplers.Sample]:
        """Samples keyed by fraction; ``eb_tree`` gives one sample whatever the fractions, keyed by its size."""
        latent = np.asarray(latent, dtype=np.float64)
        if self.technique == "eb_tree":
            sample = self.draw(1.0, latent, labels, predictions)
            return {round(len(sample) / len(latent), 4): sample}
        fit = self.fit(latent, labels, predictions)
        return {float(f): self.draw(f, latent, labels, predictions, fit) for f in fractions}
