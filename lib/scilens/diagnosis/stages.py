"""The Spark layer of the diagnosis study: embedding, sampling and activation passes over Spark tables.

* :func:`embed` -- one inference pass writing ``embeddings.parquet`` (latent
  vectors, logits, prediction per row), its Arrow batches sized to the rows;
* :func:`sample_on_driver`, :func:`sample_on_spark`, :func:`write_samples` --
  the ``sample`` job's two paths and its sample table;
* :func:`wanted_ids`, :func:`missing_ids`, :func:`compute_activations`,
  :func:`write_activations` -- the ``activations`` job's passes;
* :class:`SparkSampler` and the Spark scorings and draws below -- the samplers
  for latent tables too large to collect on the driver.

The image table reader (:mod:`~scilens.diagnosis.image_table`) and the
activation store (:mod:`~scilens.diagnosis.activations`) are the study's
table formats and stay in their own modules.

The ``sample`` job picks the sampling path (config ``fit``): ``driver``
collects the latent matrix and runs
:func:`~scilens.diagnosis.sampling.sample_latent`; ``spark`` runs
:class:`SparkSampler`; ``auto`` (the default) takes the driver path when rows
x latent dimensions is at most ``driver_max_values`` (20 million: 160 MB of
float64). Both paths read one table,
:data:`~scilens.diagnosis.sampling.TECHNIQUES`, which names for each
technique its Spark scoring (a latent model's, here) and Spark draw (here),
and rank and draw the same way:

* MaxMargin (:func:`score_maxmargin`), always the driver's ``spark-parity``
  setting (:class:`~scilens.diagnosis.latent.MaxMarginModel`), never the
  ``paper`` one (MLlib has no one-vs-one SVMs nor pairwise coupling): MLlib
  ``StandardScaler`` (mean and unit variance, as the driver path) and
  ``LinearSVC`` (hinge loss, ``regParam = 1/(C n)``, the driver's objective;
  ``OneVsRest`` for more than two classes), then per class an MLlib
  ``LogisticRegression`` of the label on the SVM margin with Platt's smoothed
  targets as weighted rows -- Platt scaling, the same maximum-likelihood
  problem :func:`~scilens.diagnosis.latent.platt_fit` solves. How close its
  samples come to the ``paper`` setting's (Jaccard) is measured in
  ``bench/sampling.py``;
* GMM (:func:`score_gmm`; full covariance only: MLlib has no spherical
  mixtures): MLlib ``GaussianMixture``; responsibilities are evaluated with
  the driver path's :func:`~scilens.diagnosis.latent.gaussian_log_density`
  (covariances given the same ``reg_covar`` ridge);
* Algorithm 1 (:func:`boundary_exemplar`): a window per stratum ordered by
  log likelihood ratio (ties by id) and the same half-up rounding of
  ``f n_c`` and ``j k_c``;
* weighted variants (:func:`likelihood_weighted`): Efraimidis-Spirakis keys
  ``log(u) * likelihood ratio``, the largest ``k_c`` per stratum -- a draw
  without replacement with probabilities proportional to 1 / ratio, as the
  driver's (different random numbers, same distribution);
* :func:`uniform`, :func:`stratified_cm`, :func:`stratified_weighted`,
  :func:`simple_latent`: windows ordered by ``rand(seed)``; PCA by MLlib.

VAS, the boundary tree and spherical GMM stream over or fit on all items at
once and have no Spark draw. Every draw here has one signature,
``draw(items, fractions, config, latent) -> {fraction: rows}``, where
``items`` is the scored table (:data:`scored_schema`) for a technique with a
latent model and the embeddings table otherwise; what the fractions share is
computed once. Per-row numpy work (margins, calibrated log-probabilities,
responsibilities) runs in ``mapInPandas``; nothing is collected but model
parameters and counts.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Row, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from scilens.core.config import ConfigError
from scilens.core.inputs import InputError, list_files
from scilens.core.session import ARROW_BATCH_BUDGET, arrow_batch_bytes
from scilens.diagnosis.activations import ActivationStore
from scilens.diagnosis.image_table import ImageTable
from scilens.diagnosis.latent import (
    GaussianMixtureModel,
    log_likelihood_ratio,
    platt_log_probabilities,
    platt_targets,
)
from scilens.diagnosis.sampling import TECHNIQUES, SamplingConfig, SparkDraw, driver_samples
from scilens.vision.inference import PREDICTION, PROBABILITIES, ImageLayout, ModelInfo, model_outputs, resolve_outputs

__all__ = [
    "SAMPLE_SCHEMA",
    "SparkSampler",
    "activation_batches",
    "boundary_exemplar",
    "chosen_layers",
    "compute_activations",
    "embed",
    "embedding_accuracy",
    "keep_ids",
    "likelihood_weighted",
    "missing_ids",
    "plot_items",
    "sample_on_driver",
    "sample_on_spark",
    "score_gmm",
    "score_maxmargin",
    "scored_schema",
    "select_ids",
    "simple_latent",
    "stratified_cm",
    "stratified_weighted",
    "uniform",
    "wanted_ids",
    "write_activations",
    "write_samples",
]

scored_schema = T.StructType([
    T.StructField("id", T.LongType()), T.StructField("label", T.IntegerType()),
    T.StructField("prediction", T.IntegerType()), T.StructField("stratum", T.IntegerType()),
    T.StructField("log_likelihood_ratio", T.DoubleType()),
])
"""Items with their stratum and log likelihood ratio: what Algorithm 1 draws from."""


def _half_up(x: Column) -> Column:
    return F.floor(x + F.lit(0.5)).cast("long")


def _vector(latent: str) -> Column:
    from pyspark.ml.functions import array_to_vector

    return array_to_vector(F.col(latent))


def _latent_batches(batches: Iterable[pd.DataFrame], latent: str) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
    for pdf in batches:
        if len(pdf):
            yield pdf, np.stack(pdf[latent].to_numpy()).astype(np.float64)


# --- latent models: items with stratum and log likelihood ratio -------------------------------------------


def score_maxmargin(df: DataFrame, latent: str, config: SamplingConfig) -> tuple[DataFrame, dict[str, np.ndarray]]:
    """MaxMargin on Spark (the ``spark-parity`` setting): MLlib linear SVMs on standardised latents, Platt-scaled.

    Parameters
    ----------
    df : DataFrame
        The embeddings table: ``id``, ``label``, ``prediction`` and ``latent`` (``array<float>``).
    latent : str
        Its latent column.
    config : SamplingConfig
        ``svm_c`` (null: spark-parity's 0.01) and ``spark_svm_max_iter`` are used; ``maxmargin`` is not
        (the Spark path has the spark-parity setting only).

    Returns
    -------
    scored : DataFrame
        Items with stratum (the SVMs' class) and log likelihood ratio (:data:`scored_schema`).
    parameters : dict of ndarray
        ``coef``, ``intercept``, ``center``, ``scale``, ``platt_a``, ``platt_b``
        (as :class:`~scilens.diagnosis.latent.MaxMarginFit`).
    """
    from pyspark.ml.classification import LinearSVC, LogisticRegression, OneVsRest
    from pyspark.ml.feature import StandardScaler
    from pyspark.ml.functions import array_to_vector

    data = df.select("id", "label", "prediction", latent, _vector(latent).alias("raw")).persist()
    n = data.count()
    classes = sorted(r["label"] for r in data.select("label").distinct().collect())
    if len(classes) < 2:
        raise ValueError(f"MaxMargin needs at least two classes, found {classes}")
    scaler = StandardScaler(withMean=True, withStd=True, inputCol="raw", outputCol="features").fit(data)
    center, scale = scaler.mean.toArray(), scaler.std.toArray()
    scale = np.where(scale > 0, scale, 1.0)
    binary = len(classes) == 2
    index = {c: k for k, c in enumerate(classes)}
    label_index = F.col("label")
    if classes != list(range(len(classes))):
        mapping = F.create_map(*[F.lit(v) for c, k in index.items() for v in (c, k)])
        label_index = mapping[F.col("label")]
    train = scaler.transform(data).select("features", label_index.cast("double").alias("y")).persist()
    svc = LinearSVC(featuresCol="features", labelCol="y", regParam=1.0 / (config.svm_c_of("spark-parity") * n),
                    standardization=False, maxIter=config.spark_svm_max_iter, tol=1e-10)
    if binary:
        models = [svc.fit(train)]
    else:
        models = OneVsRest(classifier=svc, featuresCol="features", labelCol="y", parallelism=2).fit(train).models
    coef = np.array([m.coefficients.toArray() for m in models])
    intercept = np.array([m.intercept for m in models])

    def margins(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf, x in _latent_batches(batches, latent):
            m = ((x - center) / scale) @ coef.T + intercept
            yield pdf[["id", "label", "prediction"]].assign(margins=list(m))

    with_margins = data.mapInPandas(margins, "id long, label int, prediction int, margins array<double>").persist()
    counts = {r["label"]: r["count"] for r in data.groupBy("label").count().collect()}
    a, b = [], []
    for k in range(len(coef)):
        cls = classes[1] if binary else classes[k]
        hi, lo = platt_targets(np.array([True] * counts[cls] + [False] * (n - counts[cls])))
        target = F.when(F.col("label") == cls, F.lit(hi)).otherwise(F.lit(lo))
        rows = with_margins.select(F.element_at("margins", k + 1).alias("m"), target.alias("t")).select(
            "m", F.explode(F.array(F.struct(F.lit(1.0).alias("y"), F.col("t").alias("w")),
                                   F.struct(F.lit(0.0).alias("y"), (1 - F.col("t")).alias("w")))).alias("r"))
        rows = rows.select(array_to_vector(F.array("m")).alias("features"), "r.y", "r.w")
        lr = LogisticRegression(featuresCol="features", labelCol="y", weightCol="w", regParam=0.0,
                                standardization=False, maxIter=100, tol=1e-9).fit(rows)
        a.append(float(lr.coefficients[0]))
        b.append(float(lr.intercept))
    a_arr, b_arr, class_arr = np.array(a), np.array(b), np.array(classes)
    data.unpersist()
    train.unpersist()

    def scores(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf in batches:
            if not len(pdf):
                continue
            lp = platt_log_probabilities(np.stack(pdf["margins"].to_numpy()), a_arr, b_arr)
            strata, llr = log_likelihood_ratio(lp)
            yield pdf[["id", "label", "prediction"]].assign(stratum=class_arr[strata].astype(np.int32),
                                                             log_likelihood_ratio=llr)

    parameters = {"coef": coef, "intercept": intercept, "center": center, "scale": scale,
                  "platt_a": a_arr, "platt_b": b_arr}
    return with_margins.mapInPandas(scores, scored_schema), parameters


def score_gmm(df: DataFrame, latent: str, config: SamplingConfig) -> tuple[DataFrame, dict[str, np.ndarray]]:
    """A full-covariance Gaussian mixture on Spark (MLlib), one component per class, predicted ones included.

    Parameters
    ----------
    df : DataFrame
        The embeddings table: ``id``, ``label``, ``prediction`` and ``latent`` (``array<float>``).
    latent : str
        Its latent column.
    config : SamplingConfig
        ``gmm_max_iter`` and ``seed`` are used.

    Returns
    -------
    scored : DataFrame
        Items with stratum (most probable component) and log likelihood ratio (:data:`scored_schema`).
    parameters : dict of ndarray
        ``weights``, ``means``, ``covariances`` (with the driver's ``reg_covar`` ridge).
    """
    from pyspark.ml.clustering import GaussianMixture

    data = df.select("id", "label", "prediction", latent, _vector(latent).alias("features")).persist()
    k = data.select("label").union(data.select("prediction")).distinct().count()
    model = GaussianMixture(k=k, maxIter=config.gmm_max_iter, seed=config.seed, tol=1e-4).fit(data.select("features"))
    weights = np.asarray(model.weights)
    gaussians = model.gaussians
    means = np.array([g.mean.toArray() for g in gaussians])
    covariances = np.array([g.cov.toArray() for g in gaussians])
    covariances = covariances + GaussianMixtureModel(k).reg_covar * np.eye(means.shape[1])[None]

    def scores(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf, x in _latent_batches(batches, latent):
            fit = GaussianMixtureModel.from_parameters(x, weights, means, covariances)
            yield pdf[["id", "label", "prediction"]].assign(stratum=fit.strata.astype(np.int32),
                                                             log_likelihood_ratio=fit.log_likelihood_ratio)

    parameters = {"weights": weights, "means": means, "covariances": covariances}
    return data.mapInPandas(scores, scored_schema), parameters


# --- draws: {fraction: sample rows}, the columns of samplers.Sample.to_frame -------------------------------


def boundary_exemplar(scored: DataFrame, fractions: Sequence[float], config: SamplingConfig,
                      latent: str = "latent") -> dict[float, DataFrame]:
    """Algorithm 1 on items scored by a latent model: per stratum ``round(j k_c)`` from the boundary end.

    Parameters
    ----------
    scored : DataFrame
        Items with stratum and log likelihood ratio (:data:`scored_schema`).
    fractions : sequence of float
    config : SamplingConfig
        ``tuning_factor`` (j) is used.
    latent : str
        Unused: every Spark draw takes it (see the module doc).

    Returns
    -------
    dict of float to DataFrame
        One sample per fraction.
    """
    return {float(f): _finish(_boundary_exemplar(scored, f, config.tuning_factor)) for f in fractions}


def likelihood_weighted(scored: DataFrame, fractions: Sequence[float], config: SamplingConfig,
                        latent: str = "latent") -> dict[float, DataFrame]:
    """The weighted variant on scored items: per stratum a draw with probability proportional to 1 / ratio.

    Parameters
    ----------
    scored : DataFrame
        Items with stratum and log likelihood ratio (:data:`scored_schema`).
    fractions : sequence of float
    config : SamplingConfig
        ``weight_cap`` and ``seed`` are used.
    latent : str
        Unused: every Spark draw takes it (see the module doc).

    Returns
    -------
    dict of float to DataFrame
        One sample per fraction.
    """
    return {float(f): _finish(_weighted(scored, f, config)) for f in fractions}


def uniform(df: DataFrame, fractions: Sequence[float], config: SamplingConfig,
            latent: str = "latent") -> dict[float, DataFrame]:
    """Uniform samples without replacement of the embeddings table ``df`` (one stratum, -1).

    Parameters
    ----------
    df : DataFrame
        The embeddings table (``id``, ``label``, ``prediction``).
    fractions : sequence of float
    config : SamplingConfig
        ``seed`` is used.
    latent : str
        Unused: every Spark draw takes it (see the module doc).

    Returns
    -------
    dict of float to DataFrame
        One sample per fraction.
    """
    return _random_draws(_ids(df).withColumn("stratum", F.lit(-1)), fractions, config)


def stratified_cm(df: DataFrame, fractions: Sequence[float], config: SamplingConfig,
                  latent: str = "latent") -> dict[float, DataFrame]:
    """Samples stratified by the confusion matrix's cells, at least one item from each non-empty cell.

    Parameters
    ----------
    df : DataFrame
        The embeddings table (``id``, ``label``, ``prediction``).
    fractions : sequence of float
    config : SamplingConfig
        ``seed`` is used.
    latent : str
        Unused: every Spark draw takes it (see the module doc).

    Returns
    -------
    dict of float to DataFrame
        One sample per fraction.
    """
    base = _ids(df)
    n_classes = _single_row(base.agg(F.greatest(F.max("label"), F.max("prediction"))))[0] + 1
    strata = base.withColumn("stratum", F.col("label") * n_classes + F.col("prediction"))
    return _random_draws(strata, fractions, config, at_least_one=True)


def stratified_weighted(df: DataFrame, fractions: Sequence[float], config: SamplingConfig,
                        latent: str = "latent") -> dict[float, DataFrame]:
    """Per class, up to ``incorrect_share`` of the draw from its misclassified items, the rest from the correct.

    Parameters
    ----------
    df : DataFrame
        The embeddings table (``id``, ``label``, ``prediction``).
    fractions : sequence of float
    config : SamplingConfig
        ``incorrect_share`` and ``seed`` are used.
    latent : str
        Unused: every Spark draw takes it (see the module doc).

    Returns
    -------
    dict of float to DataFrame
        One sample per fraction.
    """
    base = _ids(df)
    return {float(f): _finish(_stratified_weighted(base, f, config)) for f in fractions}


def simple_latent(df: DataFrame, fractions: Sequence[float], config: SamplingConfig,
                  latent: str = "latent") -> dict[float, DataFrame]:
    """The same number of items from each non-empty cell of a grid on the latent space's principal axes.

    Parameters
    ----------
    df : DataFrame
        The embeddings table (``id``, ``label``, ``prediction`` and ``latent``).
    fractions : sequence of float
    config : SamplingConfig
        ``latent_components``, ``latent_bins`` and ``seed`` are used.
    latent : str
        The latent column (``array<float>``).

    Returns
    -------
    dict of float to DataFrame
        One sample per fraction.
    """
    strata = _latent_cells(_ids(df, latent), latent, config)
    return _random_draws(strata, fractions, config, equal=True)


def _ids(df: DataFrame, *more: str) -> DataFrame:
    return df.select("id", "label", "prediction", *more)


def _random_draws(strata: DataFrame, fractions: Sequence[float], config: SamplingConfig, at_least_one: bool = False,
                  equal: bool = False) -> dict[float, DataFrame]:
    """Random draws per stratum; one random order (persisted) serves every fraction."""
    strata = strata.withColumn("_u", F.rand(config.seed)).persist(StorageLevel.MEMORY_AND_DISK)
    return {float(f): _finish(_random(strata, f, at_least_one=at_least_one, equal=equal)) for f in fractions}


def _boundary_exemplar(scored: DataFrame, fraction: float, j: float) -> DataFrame:
    order = Window.partitionBy("stratum").orderBy("log_likelihood_ratio", "id")
    ranked = (scored.withColumn("rank", (F.row_number().over(order) - 1).cast("int"))
                    .withColumn("_n", F.count("*").over(Window.partitionBy("stratum"))))
    k = _half_up(F.lit(fraction) * F.col("_n"))
    b = _half_up(F.lit(j) * k)
    boundary = F.col("rank") < b
    exemplar = F.col("rank") >= F.col("_n") - (k - b)
    return (ranked.where(boundary | exemplar)
                  .withColumn("end", F.when(boundary, F.lit("boundary")).otherwise(F.lit("exemplar"))))


def _weighted(scored: DataFrame, fraction: float, config: SamplingConfig) -> DataFrame:
    bound = float(np.log(config.weight_cap))
    clipped = F.least(F.greatest(F.col("log_likelihood_ratio"), F.lit(-bound)), F.lit(bound))
    # Efraimidis & Spirakis: the k largest u^(1/w) are a weighted draw without replacement; log u * ratio
    # orders the same way (w = 1/ratio) and stays finite.
    key = F.log(F.rand(config.seed) + F.lit(1e-300)) * F.exp(clipped)
    by_llr = Window.partitionBy("stratum").orderBy("log_likelihood_ratio", "id")
    by_key = Window.partitionBy("stratum").orderBy(F.col("_key").desc(), "id")
    ranked = (scored.withColumn("rank", (F.row_number().over(by_llr) - 1).cast("int"))
                    .withColumn("_key", key)
                    .withColumn("_draw", F.row_number().over(by_key))
                    .withColumn("_n", F.count("*").over(Window.partitionBy("stratum"))))
    return ranked.where(F.col("_draw") <= _half_up(F.lit(fraction) * F.col("_n"))).withColumn(
        "end", F.lit("weighted"))


def _random(strata: DataFrame, fraction: float, at_least_one: bool = False, equal: bool = False) -> DataFrame:
    order = Window.partitionBy("stratum").orderBy("_u", "id")
    ranked = (strata.withColumn("rank", (F.row_number().over(order) - 1).cast("int"))
                    .withColumn("_n", F.count("*").over(Window.partitionBy("stratum"))))
    if equal:
        total = strata.count()
        cells = strata.select("stratum").distinct().count()
        k = F.least(F.lit(int(np.floor(fraction / cells * total + 0.5))), F.col("_n"))
    else:
        k = _half_up(F.lit(fraction) * F.col("_n"))
        if at_least_one:
            k = F.greatest(k, F.lit(1))
    return ranked.where(F.col("rank") < k).withColumn("end", F.lit("random"))


def _stratified_weighted(base: DataFrame, fraction: float, config: SamplingConfig) -> DataFrame:
    share = config.incorrect_share
    wrong = F.col("label") != F.col("prediction")
    ordered = (base.withColumn("stratum", F.col("label")).withColumn("_u", F.rand(config.seed))
                   .withColumn("_wrong", wrong))
    by_kind = Window.partitionBy("stratum", "_wrong").orderBy("_u", "id")
    per_class = Window.partitionBy("stratum")
    ranked = (ordered.withColumn("rank", (F.row_number().over(by_kind) - 1).cast("int"))
                     .withColumn("_n", F.count("*").over(per_class))
                     .withColumn("_n_wrong", F.sum(F.col("_wrong").cast("int")).over(per_class)))
    k = _half_up(F.lit(fraction) * F.col("_n"))
    k_wrong = F.least(F.col("_n_wrong"), F.ceil(F.lit(share) * k))
    k_right = F.least(F.col("_n") - F.col("_n_wrong"), k - k_wrong)
    keep = F.when(F.col("_wrong"), F.col("rank") < k_wrong).otherwise(F.col("rank") < k_right)
    return ranked.where(keep).withColumn("end", F.when(F.col("_wrong"), F.lit("misclassified"))
                                                 .otherwise(F.lit("correct")))


def _latent_cells(base: DataFrame, latent: str, config: SamplingConfig) -> DataFrame:
    from pyspark.ml.feature import PCA
    from pyspark.ml.functions import vector_to_array

    vectors = base.withColumn("_x", _vector(latent))
    pca = PCA(k=config.latent_components, inputCol="_x", outputCol="_p").fit(vectors)
    projected = pca.transform(vectors).withColumn("_p", vector_to_array(F.col("_p")))
    comps = [F.col("_p")[i] for i in range(config.latent_components)]
    bounds = _single_row(projected.agg(*[F.min(c) for c in comps], *[F.max(c) for c in comps]))
    cell = F.lit(0).cast("long")
    for i, c in enumerate(comps):
        lo, hi = bounds[i], bounds[config.latent_components + i]
        width = (hi - lo) / config.latent_bins if hi > lo else 1.0
        b = F.least(F.greatest(F.floor((c - F.lit(lo)) / F.lit(width)), F.lit(0)), F.lit(config.latent_bins - 1))
        cell = cell + b.cast("long") * F.lit(config.latent_bins**i)
    return projected.withColumn("stratum", cell.cast("int")).drop("_x", "_p", latent)


def _finish(rows: DataFrame) -> DataFrame:
    """The sample columns of the driver path, in its order."""
    llr = F.col("log_likelihood_ratio") if "log_likelihood_ratio" in rows.columns else F.lit(None).cast("double")
    return rows.select(
        F.col("id").cast("long"), F.col("label").cast("int"), F.col("prediction").cast("int"),
        (F.col("label") == F.col("prediction")).alias("correct"), F.col("stratum").cast("int"),
        F.exp(llr).alias("likelihood_ratio"), llr.alias("log_likelihood_ratio"), F.col("rank").cast("int"),
        F.col("end"),
    )


# --- the sampler: one technique over several fractions -------------------------------------------------------


class SparkSampler:
    """One technique over several fractions on a Spark embeddings table (MLlib), for latent tables too large.

    Parameters
    ----------
    technique : str
        A technique of :data:`~scilens.diagnosis.sampling.TECHNIQUES` with a Spark draw (not one of
        :data:`~scilens.diagnosis.sampling.DRIVER_ONLY`).
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


# --- the sample job's passes ---------------------------------------------------------------------------------

SAMPLE_SCHEMA = T.StructType([
    T.StructField("id", T.LongType()), T.StructField("label", T.IntegerType()),
    T.StructField("prediction", T.IntegerType()), T.StructField("correct", T.BooleanType()),
    T.StructField("stratum", T.IntegerType()), T.StructField("likelihood_ratio", T.DoubleType()),
    T.StructField("log_likelihood_ratio", T.DoubleType()), T.StructField("rank", T.IntegerType()),
    T.StructField("end", T.StringType()), T.StructField("technique", T.StringType()),
    T.StructField("fraction", T.DoubleType()),
])
"""The sample table: a sample's rows with their technique and fraction."""


def embed(spark: SparkSession, table: ImageTable, info: ModelInfo, layer: str, batch_size: int,
          path: Path) -> DataFrame:
    """Write the embeddings table (latent, logits, prediction of every valid row) and return it read back.

    Parameters
    ----------
    spark : SparkSession
    table : ImageTable
        The opened input (:func:`~scilens.diagnosis.image_table.open_image_table`).
    info : ModelInfo
        The model.
    layer : str
        Its latent layer.
    batch_size : int
        Images per model call; also rows per Arrow batch.
    path : Path
        Where to write the table (``embeddings.parquet``).

    Returns
    -------
    DataFrame
        ``id``, ``label``, ``prediction``, ``correct``, ``latent`` (``array<float>``), ``logits``.
    """
    outputs = [layer, "logits", "prediction"]
    rows = (table.frame.withColumn("_out", model_outputs(info, outputs, table.layout, batch_size))
            .select("id", "label", F.col("_out.prediction").alias("prediction"),
                    (F.col("label") == F.col("_out.prediction")).alias("correct"),
                    F.col(f"_out.{layer}").alias("latent"), F.col("_out.logits").alias("logits")))
    itemsize = max(np.dtype(d).itemsize for d in table.layout.dtypes)
    row_bytes = int(np.prod(table.shape)) * itemsize + 4 * (int(np.prod(info.layers[layer])) + info.n_classes)
    # Small rows: batch_size of them per Arrow batch (the session default is sized for volumes).
    with arrow_batch_bytes(spark, row_bytes, min(batch_size * row_bytes, ARROW_BATCH_BUDGET), raise_limit=True):
        rows.write.mode("overwrite").parquet(str(path))
    return spark.read.parquet(str(path))


def embedding_accuracy(emb: DataFrame, rows: int) -> float:
    """The model's accuracy on the embeddings table (NaN when it has no rows).

    Parameters
    ----------
    emb : DataFrame
        From :func:`embed`.
    rows : int
        Its row count.

    Returns
    -------
    float
    """
    if not rows:
        return float("nan")
    return float(_single_row(emb.agg(F.avg(F.col("correct").cast("double"))))[0])


def sample_on_driver(emb: DataFrame, techniques: Sequence[str], fractions: Sequence[float],
                     config: SamplingConfig) -> tuple[DataFrame, dict[str, float]]:
    """The driver path: the latent table collected, every technique's samples drawn in memory.

    Parameters
    ----------
    emb : DataFrame
        The embeddings table (:func:`embed`).
    techniques : sequence of str
    fractions : sequence of float
    config : SamplingConfig

    Returns
    -------
    samples : DataFrame
        Every sample's rows (:data:`SAMPLE_SCHEMA`).
    seconds : dict of str to float
        Each technique's time.
    """
    pdf: pd.DataFrame = emb.select("id", "label", "prediction", "latent").orderBy("id").toPandas()
    latent = np.stack(pdf["latent"].to_numpy()).astype(np.float64)
    ids, labels, predictions = (pdf[c].to_numpy() for c in ("id", "label", "prediction"))
    frames, seconds = driver_samples(techniques, fractions, config, ids, labels, predictions, latent)
    samples = emb.sparkSession.createDataFrame(pd.concat(frames, ignore_index=True), SAMPLE_SCHEMA)
    return samples, seconds


def sample_on_spark(emb: DataFrame, techniques: Sequence[str], fractions: Sequence[float],
                    config: SamplingConfig) -> tuple[DataFrame, dict[str, float]]:
    """The Spark path: every technique's samples drawn with :class:`SparkSampler`, each one persisted.

    Parameters
    ----------
    emb : DataFrame
        The embeddings table (:func:`embed`).
    techniques : sequence of str
        Techniques with a Spark draw.
    fractions : sequence of float
    config : SamplingConfig

    Returns
    -------
    samples : DataFrame
        Every sample's rows (the columns of :data:`SAMPLE_SCHEMA`).
    seconds : dict of str to float
        Each technique's time.
    """
    frames: list[DataFrame] = []
    seconds = {}
    for technique in techniques:
        start = time.perf_counter()
        for fraction, rows in SparkSampler(technique, config, latent="latent").run(emb, fractions).items():
            frames.append(rows.withColumn("technique", F.lit(technique))
                              .withColumn("fraction", F.lit(fraction).cast("double")).persist())
            # Counted here so that each technique's time holds its own Spark work.
            frames[-1].count()
        seconds[technique] = time.perf_counter() - start
    samples = frames[0]
    for frame in frames[1:]:
        samples = samples.unionByName(frame)
    return samples, seconds


def write_samples(samples: DataFrame, path: Path, rows: int, seconds: dict[str, float]) -> list[dict]:
    """Write the sample table partitioned by technique and fraction, and summarise what was written.

    Parameters
    ----------
    samples : DataFrame
        From :func:`sample_on_driver` or :func:`sample_on_spark`.
    path : Path
        The ``samples`` directory.
    rows : int
        Rows of the embeddings table.
    seconds : dict of str to float
        Each technique's time.

    Returns
    -------
    list of dict
        Per sample (ordered by technique, fraction): ``technique``, ``fraction``, ``size``,
        ``misclassified``, ``boundary``, ``exemplar``, ``rows``, ``seconds``.
    """
    samples.coalesce(1).write.mode("overwrite").partitionBy("technique", "fraction").parquet(str(path))
    written = samples.sparkSession.read.parquet(str(path))
    summary = [r.asDict() for r in written.groupBy("technique", "fraction").agg(
        F.count("*").alias("size"), F.sum((~F.col("correct")).cast("int")).alias("misclassified"),
        F.sum((F.col("end") == "boundary").cast("int")).alias("boundary"),
        F.sum((F.col("end") == "exemplar").cast("int")).alias("exemplar"),
    ).orderBy("technique", "fraction").collect()]
    for row in summary:
        row.update(rows=rows, seconds=round(seconds[row["technique"]], 3))
    return summary


def plot_items(emb: DataFrame, samples: Path, summary: Sequence[dict], limit: int,
               seed: int) -> tuple[pd.DataFrame, set[int]]:
    """What the report plots: the embedded items (all, or about ``limit`` random ones) and the first sample's ids.

    Parameters
    ----------
    emb : DataFrame
        The embeddings table.
    samples : Path
        The ``samples`` directory (:func:`write_samples`).
    summary : sequence of dict
        :func:`write_samples`' summary; its first sample is the one shown.
    limit : int
        Most items plotted: beyond it, a random share of about this many.
    seed : int
        Of that random share.

    Returns
    -------
    items : pandas.DataFrame
        ``id``, ``label``, ``prediction``, ``latent``.
    chosen : set of int
        Ids in the first sample.
    """
    n = summary[0]["rows"] if summary else 0
    shown = emb if n <= limit else emb.sample(fraction=limit / n, seed=seed)
    items: pd.DataFrame = shown.select("id", "label", "prediction", "latent").toPandas()
    first = summary[0]
    chosen = {r["id"] for r in emb.sparkSession.read.parquet(str(samples))
              .where((F.col("technique") == first["technique"]) & (F.col("fraction") == first["fraction"]))
              .select("id").collect()}
    return items, chosen


# --- the activations job's passes ----------------------------------------------------------------------------


def wanted_ids(spark: SparkSession, ids_from: str | None, ids: Sequence[int]) -> DataFrame | None:
    """The ids to store: those of the Parquet at ``ids_from`` and ``ids``, without duplicates.

    Parameters
    ----------
    spark : SparkSession
    ids_from : str or None
        Parquet file or directory with an ``id`` column.
    ids : sequence of int

    Returns
    -------
    DataFrame or None
        One ``id`` column; None when neither is given (every row is wanted).

    Raises
    ------
    InputError
        When ``ids_from`` has no ``id`` column.
    """
    frames = []
    if ids_from:
        files = list_files([ids_from], (".parquet",))
        chosen = spark.read.parquet(*files)
        if "id" not in chosen.columns:
            raise InputError(f"ids_from {ids_from}: no id column; columns are {', '.join(chosen.columns)}")
        frames.append(chosen.select(F.col("id").cast("long")))
    if ids:
        frames.append(spark.createDataFrame([(int(i),) for i in ids], "id long"))
    if not frames:
        return None
    wanted = frames[0]
    for frame in frames[1:]:
        wanted = wanted.unionByName(frame)
    return wanted.where(F.col("id").isNotNull()).distinct()


def missing_ids(wanted: DataFrame, frame: DataFrame, limit: int) -> list[int]:
    """The smallest ``limit`` wanted ids that ``frame`` lacks.

    Parameters
    ----------
    wanted : DataFrame
        From :func:`wanted_ids`.
    frame : DataFrame
        The valid rows of the image table.
    limit : int

    Returns
    -------
    list of int
        In increasing order; empty when every wanted id is there.
    """
    return [r["id"] for r in wanted.join(frame.select("id"), "id", "left_anti").orderBy("id").limit(limit).collect()]


def select_ids(spark: SparkSession, frame: DataFrame, source: str, ids_from: str | None, ids: Sequence[int],
               shown: int = 10) -> tuple[DataFrame, DataFrame | None]:
    """The rows of ``frame`` whose ids are those of ``ids_from`` and ``ids`` (all rows when both are empty).

    Parameters
    ----------
    spark : SparkSession
    frame : DataFrame
        The valid rows of an image table.
    source : str
        The table, for messages.
    ids_from : str or None
        Parquet file or directory with an ``id`` column.
    ids : sequence of int
    shown : int
        Absent ids named at most in the error.

    Returns
    -------
    frame : DataFrame
        The wanted rows.
    wanted : DataFrame or None
        The wanted ids (persisted), None when every row is wanted.

    Raises
    ------
    InputError
        When a wanted id is absent from ``frame``, naming the first ``shown``.
    """
    wanted = wanted_ids(spark, ids_from, ids)
    if wanted is None:
        return frame, None
    wanted = wanted.persist()
    missing = missing_ids(wanted, frame, shown + 1)
    if missing:
        listed = ", ".join(map(str, missing[:shown])) + (", ..." if len(missing) > shown else "")
        raise InputError(f"ids absent from {source} (or rejected there): {listed}")
    return keep_ids(frame, wanted), wanted


def chosen_layers(info: ModelInfo, layers: Sequence[str] = ()) -> list[str]:
    """The layers an activations pass computes: ``layers`` checked against the model, by default every hidden one.

    Parameters
    ----------
    info : ModelInfo
    layers : sequence of str
        Layer names; empty: every layer that computes something but the probabilities (logits included).

    Returns
    -------
    list of str
    """
    return resolve_outputs(info, list(layers) or [n for n in info.hidden_layers() if n != PROBABILITIES])


def activation_batches(spark: SparkSession, info: ModelInfo, layers: Sequence[str],
                       batch_size: int) -> AbstractContextManager[int]:
    """Arrow batches of ``batch_size`` rows of these layers' activations (within the budget) for the actions inside.

    Parameters
    ----------
    spark : SparkSession
    info : ModelInfo
    layers : sequence of str
    batch_size : int
        Images per model call: ``predict_batch_udf`` calls the model on at most an Arrow batch.

    Returns
    -------
    context manager
        :func:`~scilens.core.session.arrow_batch_bytes` for the layers' row size.
    """
    row_bytes = 4 * sum(int(np.prod(info.output_shape(n))) for n in layers)
    return arrow_batch_bytes(spark, row_bytes, min(batch_size * row_bytes, ARROW_BATCH_BUDGET), raise_limit=True)


def keep_ids(frame: DataFrame, wanted: DataFrame) -> DataFrame:
    """The rows of ``frame`` whose id is wanted (``wanted`` is small: broadcast).

    Parameters
    ----------
    frame : DataFrame
    wanted : DataFrame
        From :func:`wanted_ids`.

    Returns
    -------
    DataFrame
    """
    return frame.join(F.broadcast(wanted), "id", "left_semi")


def compute_activations(df: DataFrame, info: ModelInfo, layers: Sequence[str], layout: ImageLayout,
                        batch_size: int = 256, id_column: str = "id", label_column: str = "label") -> DataFrame:
    """Rows of the activation store for the (valid) images of ``df``: meta columns then one column per layer.

    Parameters
    ----------
    df : DataFrame
        Images with their ids and labels.
    info : ModelInfo
    layers : sequence of str
        Layers to store; all come from one inference pass.
    layout : ImageLayout
        How ``df`` stores its images.
    batch_size : int
        Images per model call.
    id_column, label_column : str

    Returns
    -------
    DataFrame
        ``id``, ``label``, ``prediction``, ``correct``, then one ``array<float>`` column per layer.
    """
    outputs = [*layers, PREDICTION] if PREDICTION not in layers else list(layers)
    return (df.withColumn("_out", model_outputs(info, outputs, layout, batch_size))
              .select(F.col(id_column).cast("long").alias("id"), F.col(label_column).cast("int").alias("label"),
                      F.col("_out.prediction").alias("prediction"),
                      (F.col(label_column).cast("int") == F.col("_out.prediction")).alias("correct"),
                      *[F.col(f"_out.{name}").alias(name) for name in layers]))


def write_activations(frame: DataFrame, info: ModelInfo, layers: Sequence[str], layout: ImageLayout,
                      batch_size: int, path: Path) -> ActivationStore:
    """Compute the chosen layers for the rows of ``frame`` and write them as an activation store.

    Parameters
    ----------
    frame : DataFrame
        Valid image rows.
    info : ModelInfo
    layers : sequence of str
    layout : ImageLayout
    batch_size : int
        Images per model call; also rows per Arrow batch.
    path : Path
        The store's directory.

    Returns
    -------
    ActivationStore
    """
    rows = compute_activations(frame, info, layers, layout, batch_size)
    with activation_batches(frame.sparkSession, info, layers, batch_size):
        return ActivationStore.write(rows, path, info, layers)


def _single_row(df: DataFrame) -> Row:
    """The one row of a global aggregate."""
    row = df.first()
    if row is None:  # a global aggregate always has one row
        raise ValueError("an aggregate returned no row")
    return row
