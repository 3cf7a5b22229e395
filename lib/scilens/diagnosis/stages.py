"""The Spark layer of the samplers, for latent tables too large to collect on the driver.

The ``sample`` job picks the path (config ``fit``): ``driver`` collects the
latent matrix and runs :func:`~scilens.diagnosis.sampling.sample_latent`;
``spark`` runs :class:`~scilens.diagnosis.sampling.SparkSampler`; ``auto``
(the default) takes the driver path when rows x latent dimensions is at most
``driver_max_values`` (20 million: 160 MB of float64). Both paths read one
table, :data:`~scilens.diagnosis.sampling.TECHNIQUES`, which names for each
technique its Spark scoring (a latent model's, here) and Spark draw (here),
and rank and draw the same way:

* MaxMargin (:func:`score_maxmargin`): MLlib ``StandardScaler`` (mean and
  unit variance, as the driver path) and ``LinearSVC`` (hinge loss,
  ``regParam = 1/(C n)``, the driver's objective; ``OneVsRest`` for more than
  two classes), then per class an MLlib ``LogisticRegression`` of the label
  on the SVM margin with Platt's smoothed targets as weighted rows -- Platt
  scaling, the same maximum-likelihood problem
  :func:`~scilens.diagnosis.latent.platt_fit` solves;
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

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from scilens.diagnosis.latent import (
    GaussianMixtureModel,
    log_likelihood_ratio,
    platt_log_probabilities,
    platt_targets,
)

if TYPE_CHECKING:  # sampling imports this module for its table
    from scilens.diagnosis.sampling import SamplingConfig

__all__ = [
    "boundary_exemplar",
    "likelihood_weighted",
    "score_gmm",
    "score_maxmargin",
    "scored_schema",
    "simple_latent",
    "stratified_cm",
    "stratified_weighted",
    "uniform",
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


def _latent_batches(batches: Iterator[pd.DataFrame], latent: str) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
    for pdf in batches:
        if len(pdf):
            yield pdf, np.stack(pdf[latent].to_numpy()).astype(np.float64)


# --- latent models: items with stratum and log likelihood ratio -------------------------------------------


def score_maxmargin(df: DataFrame, latent: str, config: SamplingConfig) -> tuple[DataFrame, dict[str, np.ndarray]]:
    """MaxMargin on Spark: linear SVMs (MLlib) on standardised latent vectors, Platt-calibrated.

    Parameters
    ----------
    df : DataFrame
        The embeddings table: ``id``, ``label``, ``prediction`` and ``latent`` (``array<float>``).
    latent : str
        Its latent column.
    config : SamplingConfig
        ``svm_c`` and ``spark_svm_max_iter`` are used.

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
    svc = LinearSVC(featuresCol="features", labelCol="y", regParam=1.0 / (config.svm_c * n),
                    standardization=False, maxIter=config.spark_svm_max_iter, tol=1e-10)
    if binary:
        models = [svc.fit(train)]
    else:
        models = OneVsRest(classifier=svc, featuresCol="features", labelCol="y", parallelism=2).fit(train).models
    coef = np.array([m.coefficients.toArray() for m in models])
    intercept = np.array([m.intercept for m in models])

    def margins(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
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

    def scores(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
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

    def scores(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
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
    n_classes = base.agg(F.greatest(F.max("label"), F.max("prediction"))).first()[0] + 1
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
    projected = pca.transform(vectors).withColumn("_p", vector_to_array("_p"))
    comps = [F.col("_p")[i] for i in range(config.latent_components)]
    bounds = projected.agg(*[F.min(c) for c in comps], *[F.max(c) for c in comps]).first()
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
