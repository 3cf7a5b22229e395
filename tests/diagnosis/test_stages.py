"""The Spark (MLlib) path of the samplers agrees with the driver path where both run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from scilens.core.config import ConfigError
from scilens.diagnosis import samplers
from scilens.diagnosis.latent import GaussianMixtureModel, MaxMarginModel
from scilens.diagnosis.sampling import SamplingConfig
from scilens.diagnosis.stages import SparkSampler


def _frame(spark, ids, labels, predictions, latent):
    return spark.createDataFrame(pd.DataFrame({
        "id": np.asarray(ids, np.int64), "label": np.asarray(labels, np.int32),
        "prediction": np.asarray(predictions, np.int32), "latent": list(np.asarray(latent, np.float32))}))


def _jaccard(a, b):
    a, b = set(a), set(b)
    return len(a & b) / len(a | b)


def test_maxmargin_mllib_agrees_with_the_driver(spark, digits_latent):
    # The Spark path has one MaxMargin setting, spark-parity: the driver's MaxMarginModel at C = 0.01.
    latent, labels, predictions = digits_latent
    # The two most confused digits: a binary SVM (MLlib runs a Spark job per iteration, per class).
    wrong = labels != predictions
    pairs = np.bincount(np.minimum(labels, predictions)[wrong] * 10 + np.maximum(labels, predictions)[wrong],
                        minlength=100)
    a, b = divmod(int(pairs.argmax()), 10)
    keep = (labels == a) | (labels == b)
    latent, labels, predictions = latent[keep].astype(np.float32), labels[keep], predictions[keep]
    ids = np.flatnonzero(keep)
    sampler = SparkSampler("maxmargin", latent="latent")
    scored_frame = sampler.score(_frame(spark, ids, labels, predictions, latent))
    scored = scored_frame.toPandas().sort_values("id")
    driver = MaxMarginModel().fit(latent.astype(np.float64), labels)
    p = sampler.parameters
    np.testing.assert_allclose(p["center"], driver.center, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p["scale"], driver.scale, rtol=1e-5)
    # Same objective (hinge + |w|^2/(2C n), standardised inputs): MLlib's OWL-QN stops close to liblinear's
    # optimum on this non-smooth loss, within 1 % of it.
    z = (latent.astype(np.float64) - driver.center) / driver.scale
    t = np.where(labels == b, 1.0, -1.0)

    def objective(w, w0):
        return np.mean(np.maximum(0, 1 - t * (z @ w + w0))) + w @ w / (2 * 0.01 * len(z))

    ours, theirs = objective(driver.coef[0], driver.intercept[0]), objective(p["coef"][0], p["intercept"][0])
    assert abs(theirs - ours) / ours < 0.01
    # Platt scaling is smooth and strictly convex: on the same margins MLlib's logistic fit equals ours.
    calibrated = MaxMarginModel.from_svm(latent, labels, p["coef"], p["intercept"], p["center"], p["scale"])
    np.testing.assert_allclose(p["platt_a"], calibrated.platt_a, rtol=1e-3)
    np.testing.assert_allclose(p["platt_b"], calibrated.platt_b, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(scored["log_likelihood_ratio"], calibrated.log_likelihood_ratio, rtol=1e-5,
                               atol=1e-5)
    # And the rankings Algorithm 1 draws from agree with the driver's.
    assert np.mean(scored["stratum"].to_numpy() == driver.strata) > 0.99
    assert spearmanr(scored["log_likelihood_ratio"], driver.log_likelihood_ratio)[0] > 0.99
    got = sampler.draw(scored_frame, 0.2).toPandas()
    expected = samplers.boundary_exemplar(driver.strata, driver.log_likelihood_ratio, 0.2, 0.7)
    assert len(got) == len(expected)
    assert _jaccard(got["id"], ids[expected.index]) > 0.8


def test_maxmargin_one_vs_rest_on_spark_draws_per_class(spark, digits_latent):
    latent, labels, predictions = digits_latent
    keep = labels < 3
    config = SamplingConfig(spark_svm_max_iter=5)  # the plumbing, not the optimum
    sampler = SparkSampler("maxmargin", config, latent="latent")
    scored = sampler.score(_frame(spark, np.flatnonzero(keep), labels[keep], predictions[keep], latent[keep]))
    assert sampler.parameters["coef"].shape == (3, latent.shape[1])
    strata = scored.toPandas()["stratum"].value_counts()
    got = sampler.draw(scored, 0.1).toPandas()
    assert got.groupby("stratum").size().to_dict() == {s: int(np.floor(0.1 * n + 0.5)) for s, n in strata.items()}


def test_gmm_mllib_recovers_generated_clusters_like_the_driver(spark):
    rng = np.random.default_rng(3)
    means = np.array([[0, 0, 0, 0], [5, 0, 0, 0], [0, 5, 0, 0]], float)
    truth = np.repeat(np.arange(3), 300)
    x = means[truth] + rng.normal(0, 1, (900, 4))
    ids = np.arange(900)
    sampler = SparkSampler("gmm_full", latent="latent")
    scored = sampler.score(_frame(spark, ids, truth, truth, x)).toPandas().sort_values("id")
    # Clusters 5 sd apart: fewer than 1 % of points lie past the midplane, so both fits find the truth.
    contingency = pd.crosstab(scored["stratum"], truth)
    assert contingency.max(axis=1).sum() / 900 > 0.98
    driver = GaussianMixtureModel(3, "full").fit(x, seed=0)
    spark_rank = scored["log_likelihood_ratio"].to_numpy()
    assert spearmanr(spark_rank, driver.log_likelihood_ratio)[0] > 0.95
    got = sampler.draw(sampler.score(_frame(spark, ids, truth, truth, x)), 0.1).toPandas()
    expected = samplers.boundary_exemplar(driver.strata, driver.log_likelihood_ratio, 0.1, 0.7)
    assert len(got) == len(expected) and _jaccard(got["id"], expected.index) > 0.7


def test_driver_only_techniques_are_refused_on_spark():
    with pytest.raises(ConfigError, match="'vas' has no Spark path"):
        SparkSampler("vas")
