"""The samplers on Spark, for latent tables too large to collect on the driver.

The ``sample`` job picks the path (config ``fit``): ``driver`` collects the
latent matrix and runs :class:`~scilens.diagnosis.sampling.SampleLatentTask`;
``spark`` runs :class:`SparkSampler` here; ``auto`` (the default) takes the
driver path when rows x latent dimensions is at most ``driver_max_values``
(20 million: 160 MB of float64). Both paths rank and draw the same way:

* MaxMargin: MLlib ``StandardScaler`` (mean and unit variance, as the driver
  path) and ``LinearSVC`` (hinge loss, ``regParam = 1/(C n)``, the driver's
  objective; ``OneVsRest`` for more than two classes), then per class an MLlib
  ``LogisticRegression`` of the label on the SVM margin with Platt's smoothed
  targets as weighted rows -- Platt scaling, the same maximum-likelihood
  problem :func:`~scilens.diagnosis.latent.platt_fit` solves;
* GMM (full covariance only: MLlib has no spherical mixtures): MLlib
  ``GaussianMixture``; responsibilities are evaluated with the driver
  path's :func:`~scilens.diagnosis.latent.gaussian_log_density` (covariances
  given the same ``reg_covar`` ridge);
* Algorithm 1: a window per stratum ordered by log likelihood ratio
  (ties by id) and the same half-up rounding of ``f n_c`` and ``j k_c``;
* weighted variants: Efraimidis-Spirakis keys ``log(u) * likelihood ratio``,
  the largest ``k_c`` per stratum -- a draw without replacement with
  probabilities proportional to 1 / ratio, as the driver's (different
  random numbers, same distribution);
* uniform, stratified, simple latent space: windows ordered by ``rand(seed)``;
  PCA by MLlib.

VAS, the boundary tree and spherical GMM stream over or fit on all items at
once and have no Spark path: asking for one raises a ConfigError.
Per-row numpy work (margins, calibrated log-probabilities, responsibilities)
runs in ``mapInPandas``; nothing is collected but model parameters and counts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from scilens.core.config import ConfigError
from scilens.diagnosis.latent import (
    GaussianMixtureModel,
    log_likelihood_ratio,
    platt_log_probabilities,
    platt_targets,
)
from scilens.diagnosis.sampling import SamplingConfig

__all__ = ["DRIVER_ONLY", "SPARK_TECHNIQUES", "SparkSampler", "scored_schema"]

DRIVER_ONLY = ("gmm_spherical", "gmm_spherical_weighted", "vas", "eb_tree")
SPARK_TECHNIQUES = ("uniform", "stratified_cm", "stratified_weighted", "simple_latent", "gmm_full",
                    "gmm_full_weighted", "maxmargin", "maxmargin_weighted")

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


class SparkSampler:
    """One technique over several fractions on a Spark embeddings table.

    Parameters
    ----------
    technique : str
        One of :data:`SPARK_TECHNIQUES`.
    config : SamplingConfig
    latent : str
        The latent column (``array<float>``) of the embeddings table, which
        also has ``id``, ``label`` and ``prediction``.
    """

    def __init__(self, technique: str, config: SamplingConfig | None = None, latent: str = "latent"):
        if technique in DRIVER_ONLY:
            raise ConfigError(f"technique {technique!r} has no Spark path (VAS and the boundary tree stream over "
                              f"all items, MLlib has no spherical mixtures); use fit=driver")
        if technique not in SPARK_TECHNIQUES:
            raise ConfigError(f"unknown sampling technique {technique!r}")
        self.technique, self.config, self.latent = technique, config or SamplingConfig(), latent

    # --- latent models ------------------------------------------------------------------------------

    def score(self, df: DataFrame) -> DataFrame:
        """Items with stratum and log likelihood ratio (MaxMargin or GMM), persisted."""
        if self.technique.startswith("maxmargin"):
            scored = self._score_maxmargin(df)
        else:
            scored = self._score_gmm(df)
        return scored.persist(StorageLevel.MEMORY_AND_DISK)

    def _score_maxmargin(self, df: DataFrame) -> DataFrame:
        from pyspark.ml.classification import LinearSVC, LogisticRegression, OneVsRest
        from pyspark.ml.feature import StandardScaler
        from pyspark.ml.functions import array_to_vector

        cfg, latent = self.config, self.latent
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
        svc = LinearSVC(featuresCol="features", labelCol="y", regParam=1.0 / (cfg.svm_c * n),
                        standardization=False, maxIter=cfg.spark_svm_max_iter, tol=1e-10)
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

        self.parameters = {"coef": coef, "intercept": intercept, "center": center, "scale": scale,
                           "platt_a": a_arr, "platt_b": b_arr}
        return with_margins.mapInPandas(scores, scored_schema)

    def _score_gmm(self, df: DataFrame) -> DataFrame:
        from pyspark.ml.clustering import GaussianMixture

        cfg, latent = self.config, self.latent
        data = df.select("id", "label", "prediction", latent, _vector(latent).alias("features")).persist()
        k = data.select("label").union(data.select("prediction")).distinct().count()
        model = GaussianMixture(k=k, maxIter=cfg.gmm_max_iter, seed=cfg.seed, tol=1e-4).fit(data.select("features"))
        weights = np.asarray(model.weights)
        gaussians = model.gaussians
        means = np.array([g.mean.toArray() for g in gaussians])
        covariances = np.array([g.cov.toArray() for g in gaussians])
        covariances = covariances + GaussianMixtureModel(k).reg_covar * np.eye(means.shape[1])[None]
        self.parameters = {"weights": weights, "means": means, "covariances": covariances}

        def scores(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
            for pdf, x in _latent_batches(batches, latent):
                fit = GaussianMixtureModel.from_parameters(x, weights, means, covariances)
                yield pdf[["id", "label", "prediction"]].assign(stratum=fit.strata.astype(np.int32),
                                                                 log_likelihood_ratio=fit.log_likelihood_ratio)

        return data.mapInPandas(scores, scored_schema)

    # --- drawing ------------------------------------------------------------------------------------------

    def run(self, df: DataFrame, fractions: Sequence[float]) -> dict[float, DataFrame]:
        """Sample rows (the columns of :meth:`scilens.diagnosis.samplers.Sample.to_frame`) keyed by fraction."""
        t, cfg = self.technique, self.config
        if t.startswith(("maxmargin", "gmm")):
            scored = self.score(df)
            return {float(f): self.draw(scored, f) for f in fractions}
        base = df.select("id", "label", "prediction", *([self.latent] if t == "simple_latent" else []))
        if t == "uniform":
            strata = base.withColumn("stratum", F.lit(-1))
        elif t == "stratified_cm":
            n_classes = base.agg(F.greatest(F.max("label"), F.max("prediction"))).first()[0] + 1
            strata = base.withColumn("stratum", F.col("label") * n_classes + F.col("prediction"))
        elif t == "stratified_weighted":
            return {float(f): _finish(self._stratified_weighted(base, f)) for f in fractions}
        else:
            strata = self._latent_cells(base)
        strata = strata.withColumn("_u", F.rand(cfg.seed)).persist(StorageLevel.MEMORY_AND_DISK)
        return {float(f): _finish(self._random(strata, f, at_least_one=t == "stratified_cm",
                                               equal=t == "simple_latent")) for f in fractions}

    def draw(self, scored: DataFrame, fraction: float) -> DataFrame:
        """One sample from items scored by :meth:`score` (Algorithm 1, or the weighted draw)."""
        if self.technique.endswith("_weighted"):
            return _finish(self._weighted(scored, fraction))
        return _finish(self._boundary_exemplar(scored, fraction))

    def _boundary_exemplar(self, scored: DataFrame, fraction: float) -> DataFrame:
        j = self.config.tuning_factor
        order = Window.partitionBy("stratum").orderBy("log_likelihood_ratio", "id")
        ranked = (scored.withColumn("rank", (F.row_number().over(order) - 1).cast("int"))
                        .withColumn("_n", F.count("*").over(Window.partitionBy("stratum"))))
        k = _half_up(F.lit(fraction) * F.col("_n"))
        b = _half_up(F.lit(j) * k)
        boundary = F.col("rank") < b
        exemplar = F.col("rank") >= F.col("_n") - (k - b)
        return (ranked.where(boundary | exemplar)
                      .withColumn("end", F.when(boundary, F.lit("boundary")).otherwise(F.lit("exemplar"))))

    def _weighted(self, scored: DataFrame, fraction: float) -> DataFrame:
        bound = float(np.log(self.config.weight_cap))
        clipped = F.least(F.greatest(F.col("log_likelihood_ratio"), F.lit(-bound)), F.lit(bound))
        # Efraimidis & Spirakis: the k largest u^(1/w) are a weighted draw without replacement; log u * ratio
        # orders the same way (w = 1/ratio) and stays finite.
        key = F.log(F.rand(self.config.seed) + F.lit(1e-300)) * F.exp(clipped)
        by_llr = Window.partitionBy("stratum").orderBy("log_likelihood_ratio", "id")
        by_key = Window.partitionBy("stratum").orderBy(F.col("_key").desc(), "id")
        ranked = (scored.withColumn("rank", (F.row_number().over(by_llr) - 1).cast("int"))
                        .withColumn("_key", key)
                        .withColumn("_draw", F.row_number().over(by_key))
                        .withColumn("_n", F.count("*").over(Window.partitionBy("stratum"))))
        return ranked.where(F.col("_draw") <= _half_up(F.lit(fraction) * F.col("_n"))).withColumn(
            "end", F.lit("weighted"))

    def _random(self, strata: DataFrame, fraction: float, at_least_one: bool = False, equal: bool = False) -> DataFrame:
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

    def _stratified_weighted(self, base: DataFrame, fraction: float) -> DataFrame:
        share = self.config.incorrect_share
        wrong = F.col("label") != F.col("prediction")
        ordered = (base.withColumn("stratum", F.col("label")).withColumn("_u", F.rand(self.config.seed))
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

    def _latent_cells(self, base: DataFrame) -> DataFrame:
        from pyspark.ml.feature import PCA
        from pyspark.ml.functions import vector_to_array

        cfg = self.config
        vectors = base.withColumn("_x", _vector(self.latent))
        pca = PCA(k=cfg.latent_components, inputCol="_x", outputCol="_p").fit(vectors)
        projected = pca.transform(vectors).withColumn("_p", vector_to_array("_p"))
        comps = [F.col("_p")[i] for i in range(cfg.latent_components)]
        bounds = projected.agg(*[F.min(c) for c in comps], *[F.max(c) for c in comps]).first()
        cell = F.lit(0).cast("long")
        for i, c in enumerate(comps):
            lo, hi = bounds[i], bounds[cfg.latent_components + i]
            width = (hi - lo) / cfg.latent_bins if hi > lo else 1.0
            b = F.least(F.greatest(F.floor((c - F.lit(lo)) / F.lit(width)), F.lit(0)), F.lit(cfg.latent_bins - 1))
            cell = cell + b.cast("long") * F.lit(cfg.latent_bins**i)
        return projected.withColumn("stratum", cell.cast("int")).drop("_x", "_p", self.latent)


def _finish(rows: DataFrame) -> DataFrame:
    """The sample columns of the driver path, in its order."""
    llr = F.col("log_likelihood_ratio") if "log_likelihood_ratio" in rows.columns else F.lit(None).cast("double")
    return rows.select(
        F.col("id").cast("long"), F.col("label").cast("int"), F.col("prediction").cast("int"),
        (F.col("label") == F.col("prediction")).alias("correct"), F.col("stratum").cast("int"),
        F.exp(llr).alias("likelihood_ratio"), llr.alias("log_likelihood_ratio"), F.col("rank").cast("int"),
        F.col("end"),
    )
