"""The Spark stages of the glaucoma imaging jobs: thin Arrow layers over :mod:`scilens.glaucoma.pipeline`.

* ``glaucoma-images``: :func:`read_cohort`, then :func:`read_oct_scans` and
  :func:`read_fundus` (``mapInPandas`` over file paths, ``files_per_task`` files a
  task, the B-scans of a volume in one Arrow batch), :func:`reject_unknown_eyes`,
  :func:`example_figures`;
* ``glaucoma-train``: :func:`training_table`, :func:`image_shape`,
  :func:`training_datasets` (Petastorm or plain Parquet) and :func:`train`;
* ``glaucoma-infer``: :func:`predict_images` (``predict_batch_udf``), :func:`retina_vectors`,
  :func:`fit_ensemble` (XGBoost on Spark) and :func:`saliency_masks` (``mapInPandas``,
  at most eight tasks, each loading the model once).

Files that fail a per-file step become ``_rejected`` rows naming the file and the reason
(:mod:`scilens.core.quarantine`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from scilens.core import tensor
from scilens.core.inputs import InputError, paths_frame
from scilens.core.job import JobFailed
from scilens.core.quarantine import REJECTED_TYPE, guard_rows, split_rejected, with_rejected_field
from scilens.glaucoma import pipeline
from scilens.glaucoma.config import GlaucomaImagesConfig, GlaucomaTrainConfig, SaliencySection
from scilens.glaucoma.features import CFP_FEATURE
from scilens.glaucoma.metrics import BootstrapConfig
from scilens.glaucoma.models import XGBParams
from scilens.glaucoma.pipeline import KEYS, LABELS

__all__ = [
    "FUNDUS_SCHEMA",
    "OCT_SCAN_SCHEMA",
    "SALIENCY_SCHEMA",
    "TABLES",
    "evaluated",
    "example_figures",
    "fit_ensemble",
    "image_shape",
    "predict_images",
    "read_cohort",
    "read_fundus",
    "read_oct_scans",
    "reject_unknown_eyes",
    "retina_vectors",
    "saliency_masks",
    "saliency_rows",
    "train",
    "training_datasets",
    "training_table",
]

TABLES = {"oct": "oct_scans.parquet", "cfp": "fundus.parquet"}
"""The glaucoma-images table of each modality."""

OCT_SCAN_SCHEMA = T.StructType([
    T.StructField("eid", T.LongType(), False), T.StructField("eye", T.StringType(), False),
    T.StructField("visit", T.IntegerType(), False), T.StructField("scan", T.IntegerType(), False),
    T.StructField("path", T.StringType(), False), T.StructField("shift_axial", T.IntegerType(), False),
    T.StructField("shift_lateral", T.IntegerType(), False), tensor.tensor_field("image", nullable=False),
])
FUNDUS_SCHEMA = T.StructType([
    T.StructField("eid", T.LongType(), False), T.StructField("eye", T.StringType(), False),
    T.StructField("visit", T.IntegerType(), False), T.StructField("path", T.StringType(), False),
    T.StructField("disc_row", T.DoubleType(), False), T.StructField("disc_col", T.DoubleType(), False),
    tensor.tensor_field("image", nullable=False),
])
SALIENCY_SCHEMA = T.StructType([
    T.StructField("mask_id", T.LongType()), T.StructField("eid", T.LongType()),
    T.StructField("eye", T.StringType()), T.StructField("label", T.StringType()),
    T.StructField("modality", T.StringType()), T.StructField("scan", T.IntegerType()),
    T.StructField("method", T.StringType()), T.StructField("probability", T.DoubleType()),
    T.StructField("completeness_gap", T.DoubleType()), T.StructField("band_top", T.IntegerType()),
    T.StructField("band_bottom", T.IntegerType()), tensor.tensor_field("image"), tensor.tensor_field("mask"),
])
"""Rows of ``saliency.parquet``. ``mask_id`` is unique per mask (from the modality, the eye's position among the
chosen eyes, the scan and the method: :func:`saliency_rows`), what ``scilens mask-index`` fetches masks by;
``band_top``/``band_bottom`` bound an OCT scan's retinal band (:func:`scilens.glaucoma.preprocess.retinal_band`,
null for photos), a box per mask for ``scilens mask-query``."""


def _encoded(row: dict[str, Any], *columns: str) -> dict[str, Any]:
    return {**row, **{c: tensor.encode(row[c]) for c in columns}}


# glaucoma-images

def read_cohort(spark: SparkSession, cohort: str) -> DataFrame:
    """Eye rows of the cohort (``eid``, ``eye``, ``label``, ``split``, ``visit``), checked."""
    path = pipeline.cohort_path(cohort)
    eyes = spark.read.parquet(str(path))
    missing = {"eid", "eye", "label", "split", "visit"} - set(eyes.columns)
    if missing:
        raise InputError(f"cohort {path}: no column {', '.join(sorted(missing))}; "
                         f"is it the eyes.parquet of glaucoma-cohort?")
    bad = eyes.where(~F.col("label").isin(*LABELS)).select("label").distinct().limit(5).collect()
    if bad:
        raise InputError(f"cohort {path}: labels {[r.label for r in bad]} are not {', '.join(LABELS)}")
    return eyes.select(F.col("eid").cast("long"), "eye", "label", "split", F.col("visit").cast("int"))


def reject_unknown_eyes(good: DataFrame, eyes: DataFrame, cohort: str, step: str) -> tuple[DataFrame, DataFrame]:
    """Rows of eyes in the cohort (with label and split) and one rejection per file of an eye that is not."""
    keyed = good.join(eyes.withColumnRenamed("visit", "cohort_visit"), ["eid", "eye"], "left")
    labelled = keyed.where(F.col("label").isNotNull() & (F.col("visit") == F.col("cohort_visit"))).drop(
        "cohort_visit")
    unknown = keyed.where(F.col("label").isNull() | (F.col("visit") != F.col("cohort_visit")))
    message = F.when(
        F.col("label").isNull(),
        F.format_string("%s: eid %d %s eye is not in the cohort %s, so it has no label", F.col("path"),
                        F.col("eid"), F.col("eye"), F.lit(cohort)),
    ).otherwise(F.format_string("%s: image of visit %d, but the cohort uses visit %d of eid %d %s eye",
                                F.col("path"), F.col("visit"), F.col("cohort_visit"), F.col("eid"), F.col("eye")))
    rejected = unknown.select(
        F.struct(F.col("path"), F.format_string("eid %d %s eye", F.col("eid"), F.col("eye")).alias("record"),
                 F.lit(step).alias("step"), F.lit("NotInCohort").alias("error_type"),
                 message.alias("message")).cast(REJECTED_TYPE).alias("r")).select("r.*").distinct()
    return labelled, rejected


def read_oct_scans(spark: SparkSession, paths: list[str], config: GlaucomaImagesConfig
                   ) -> tuple[DataFrame, DataFrame]:
    """Read, check and preprocess OCT volumes on the executors: (scan rows, rejected files)."""
    columns = OCT_SCAN_SCHEMA.fieldNames()
    n_scans = config.n_scans

    def produce(row: pd.Series) -> Iterator[dict[str, Any]]:
        for scan in pipeline.oct_scan_rows(row["path"], config):
            yield _encoded(scan, "image")

    def read(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            # All scans of a volume in one frame: a volume is one record, 128 small rows.
            yield from guard_rows(batch, produce, "read_oct", columns, rows_per_frame=n_scans)

    frame = paths_frame(spark, paths, files_per_partition=config.files_per_task)
    out = frame.mapInPandas(read, with_rejected_field(OCT_SCAN_SCHEMA))
    return split_rejected(out, on="path")


def read_fundus(spark: SparkSession, paths: list[str], config: GlaucomaImagesConfig) -> tuple[DataFrame, DataFrame]:
    """Read and preprocess fundus photos on the executors: (photo rows, rejected files)."""
    columns = FUNDUS_SCHEMA.fieldNames()

    def produce(row: pd.Series) -> Iterator[dict[str, Any]]:
        yield _encoded(pipeline.fundus_row(row["path"], config), "image")

    def read(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            yield from guard_rows(batch, produce, "read_fundus", columns)

    frame = paths_frame(spark, paths, files_per_partition=config.files_per_task)
    out = frame.mapInPandas(read, with_rejected_field(FUNDUS_SCHEMA))
    return split_rejected(out, on="path")


def example_figures(config: GlaucomaImagesConfig, oct_rows: DataFrame | None, fundus_rows: DataFrame | None,
                    rejected_oct: DataFrame | None, folder: Path) -> list[str]:
    """Example figures (a handful of images, so read on the driver); the paths written."""
    from scilens.glaucoma import figures

    written: list[str] = []
    n = config.figure_eyes
    if n == 0:
        return written
    if oct_rows is not None:
        central = config.n_scans // 2
        picks = (oct_rows.where(F.col("scan") == central).select("eid", "eye", "label", "path", "image")
                 .orderBy("label", "eid", "eye").limit(n).collect())
        if picks:
            written.append(str(figures.oct_examples(
                [(r.path, central, f"{r.eid} {r.eye} ({r.label})", tensor.decode(r.image)) for r in picks],
                folder / "oct_preprocessing.png")))
    if rejected_oct is not None:
        excluded = rejected_oct.where(F.col("step") == "read_oct").where(
            F.col("message").contains("cannot be aligned")).limit(n).collect()
        if excluded:
            written.append(str(figures.excluded_oct([(r.path, r.message) for r in excluded],
                                                    folder / "excluded_oct.png")))
    if fundus_rows is not None:
        picks = (fundus_rows.select("eid", "eye", "label", "path", "image").orderBy("label", "eid", "eye")
                 .limit(n).collect())
        if picks:
            written.append(str(figures.fundus_examples(
                [(r.path, f"{r.eid} {r.eye} ({r.label})", tensor.decode(r.image)) for r in picks],
                folder / "cfp_preprocessing.png")))
    return written


# glaucoma-train

def training_table(spark: SparkSession, inputs: list[str], modality: str) -> DataFrame:
    """Training and validation rows of the images table: ``target`` 1 for glaucoma, 0 for healthy."""
    if len(inputs) != 1 or not Path(inputs[0]).is_dir():
        raise InputError(f"input {', '.join(inputs)}: give the output directory of scilens glaucoma-images")
    path = Path(inputs[0]) / TABLES[modality]
    if not path.exists():
        raise InputError(f"input {inputs[0]}: no {TABLES[modality]}; did glaucoma-images process {modality}?")
    rows = spark.read.parquet(str(path))
    if "scan" not in rows.columns:
        rows = rows.withColumn("scan", F.lit(0))
    return (rows.where(F.col("label").isin("glaucoma", "healthy") & F.col("split").isin("train", "validation"))
            .withColumn("target", (F.col("label") == "glaucoma").cast("int")))


def image_shape(rows: DataFrame, source: str) -> tuple[int, ...]:
    """The one shape of the images of ``rows``, with a channel axis; JobFailed when they have several."""
    shapes = [tuple(r.shape) for r in rows.select(F.col("image.shape").alias("shape")).distinct().collect()]
    if len(shapes) != 1:
        raise JobFailed(f"{source}: images of {len(shapes)} shapes {shapes[:4]}; rerun glaucoma-images with one size")
    shape = shapes[0]
    return (*shape, 1) if len(shape) == 2 else shape


def training_datasets(spark: SparkSession, rows: DataFrame, counts: Mapping[tuple[str, int], int],
                      config: GlaucomaTrainConfig, output: Path, shape: tuple[int, ...], source_table: str
                      ) -> dict[str, Any]:
    """The train and validation datasets the backend reads (Petastorm for horovod, else plain Parquet).

    Parameters
    ----------
    spark : SparkSession
    rows : DataFrame
        The :func:`training_table`.
    counts : mapping
        Rows per (split, target).
    config : GlaucomaTrainConfig
        Its ``backend``, ``modality``, ``petastorm`` section and the modality's ranks.
    output : Path
        The job's output directory (the datasets' default home).
    shape : tuple of int
        The images' shape (:func:`image_shape`).
    source_table : str
        The table the rows come from: a dataset written from the same source is reused.

    Returns
    -------
    dict
        ``{split: DatasetInfo}`` for ``train`` and ``validation``.
    """
    store = config.petastorm
    num_proc = (config.oct if config.modality == "oct" else config.cfp).training.num_proc
    if config.backend == "horovod":
        from scilens.vision import petastorm_data

        materialize = petastorm_data.materialize_images
        base = Path(store.dataset_dir) if store.dataset_dir else output / "petastorm"
    else:
        from scilens.vision import parquet_data

        materialize = parquet_data.materialize_images
        base = Path(store.dataset_dir or output) / "parquet"
    infos = {}
    for split in ("train", "validation"):
        n = counts[(split, 0)] + counts[(split, 1)]
        infos[split] = materialize(
            spark, rows.where(F.col("split") == split), base / config.modality / split, shape,
            source=f"{source_table} split={split} rows={n}", min_row_groups=num_proc * store.row_groups_per_rank,
            row_group_size_mb=store.row_group_size_mb, overwrite=store.overwrite)
    return infos


def train(spark: SparkSession, spec: Any, backend: str) -> list[dict[str, Any]]:
    """Train ``spec`` (a :class:`scilens.vision.train_common.TrainSpec`) on ``backend``'s ranks; one result each."""
    if backend == "horovod":
        from scilens.vision.horovod_train import train_distributed
    else:
        from scilens.vision.tf_distribute_train import train_distributed
    try:
        return train_distributed(spark, spec)
    except ValueError as exc:
        raise JobFailed(str(exc)) from None


# glaucoma-infer

def predict_images(spark: SparkSession, table: Path, model: Path, batch_size: int, step: str
                   ) -> tuple[DataFrame, DataFrame]:
    """P(glaucoma) of every image of ``table`` on the executors: (predictions, rejected rows)."""
    from scilens.vision import inference

    images = spark.read.parquet(str(table))
    info = inference.describe_model(model)
    layout = inference.image_layout(images, "image")
    shape = inference.check_model_input(info, layout, str(table))
    has_scan = "scan" in images.columns
    checked = images.withColumn("_reason", inference.invalid_image_reason(layout, shape))
    record = (F.format_string("eid %d %s eye scan %d", "eid", "eye", "scan") if has_scan
              else F.format_string("eid %d %s eye", "eid", "eye"))
    rejected = checked.where(F.col("_reason").isNotNull()).select(F.struct(
        F.col("path"), record.alias("record"), F.lit(step).alias("step"), F.lit("InvalidImage").alias("error_type"),
        F.concat_ws(": ", F.col("path"), record, F.col("_reason")).alias("message")).cast(REJECTED_TYPE).alias("r")
    ).select("r.*")
    scored = (checked.where(F.col("_reason").isNull())
              .withColumn("_out", inference.model_outputs(info, [inference.PROBABILITIES], layout, batch_size))
              .select(*KEYS, *(["scan"] if has_scan else []),
                      F.col(f"_out.{inference.PROBABILITIES}")[0].cast("double").alias("probability")))
    return scored, rejected


def retina_vectors(oct_predictions: DataFrame | None, cfp_predictions: DataFrame | None, n_scans: int) -> DataFrame:
    """One row per eye: the scan probabilities as ``p_oct_scan_###`` columns and the photo's as ``p_cfp``."""
    vectors = None
    if oct_predictions is not None:
        vectors = (oct_predictions.groupBy(*KEYS).pivot("scan", list(range(n_scans)))
                   .agg(F.first("probability")))
        vectors = vectors.select(*KEYS, *(F.col(str(s)).alias(pipeline.scan_feature(s)) for s in range(n_scans)))
    if cfp_predictions is not None:
        photos = cfp_predictions.select(*KEYS, F.col("probability").alias(CFP_FEATURE))
        vectors = photos if vectors is None else vectors.join(photos, KEYS, "full")
    if vectors is None:
        raise ValueError("retina_vectors: give the OCT predictions, the fundus predictions or both")
    return vectors


def evaluated(rows: DataFrame, split: str) -> DataFrame:
    """The glaucoma and healthy rows of ``split`` (the ones an AUC is computed on)."""
    return rows.where((F.col("split") == split) & F.col("label").isin("glaucoma", "healthy"))


def fit_ensemble(vectors: DataFrame, features: list[str], params: XGBParams, folder: Path, evaluation: str,
                 bootstrap: BootstrapConfig, shap_scans: int = 0) -> tuple[dict[str, Any], int]:
    """XGBoost over per-eye features: model, predictions and AUC on ``evaluation`` (Fig. 3.4).

    Parameters
    ----------
    vectors : DataFrame
        The :func:`retina_vectors`.
    features : list of str
        Its columns the model uses.
    params : XGBParams
        Trained on ``train``, early stopping on ``validation``.
    folder : Path
        Receives ``model.json`` and ``predictions.parquet`` (and ``shap_by_scan.png``).
    evaluation : str
        The split the AUC is reported on.
    bootstrap : BootstrapConfig
        Its confidence interval.
    shap_scans : int
        When > 0, the first ``shap_scans`` features are scan positions: store per-eye SHAP values,
        draw them and report their mean magnitude per scan.

    Returns
    -------
    metrics : dict
        AUC with CI, ``best_iteration`` and, with ``shap_scans``, ``mean_abs_shap_by_scan``.
    rounds : int
        Boosting rounds trained.
    """
    from scilens.glaucoma import figures
    from scilens.glaucoma.models import fit_xgb, predict

    labelled = vectors.where(F.col("label").isin("glaucoma", "healthy"))
    fit = fit_xgb(labelled.where(F.col("split") == "train"), labelled.where(F.col("split") == "validation"),
                  features, params)
    scored = predict(fit, vectors, contributions=shap_scans > 0)
    folder.mkdir(exist_ok=True)
    fit.booster().save_model(str(folder / "model.json"))
    scored.write.mode("overwrite").parquet(str(folder / "predictions.parquet"))
    scored_pd: pd.DataFrame = vectors.sparkSession.read.parquet(str(folder / "predictions.parquet")).toPandas()
    test = scored_pd[(scored_pd["split"] == evaluation) & scored_pd["label"].isin(["glaucoma", "healthy"])]
    metrics: dict[str, Any] = pipeline.auc_with_ci(test, "probability", bootstrap)
    metrics["best_iteration"] = fit.best_iteration
    if shap_scans:
        shap = np.stack(test["shap"].to_numpy())[:, :shap_scans]
        figures.scan_shap(shap, test["label"].tolist(), folder / "shap_by_scan.png")
        # The same eyes as the figure: the evaluation split.
        metrics["mean_abs_shap_by_scan"] = np.abs(shap).mean(axis=0).tolist()
    return metrics, fit.rounds


def saliency_rows(spark: SparkSession, table: Path, model: Path, modality: str, eyes: pd.DataFrame,
                  section: SaliencySection, n_scans: int) -> DataFrame:
    """Saliency masks of the chosen eyes' images, computed on the executors.

    Each mask's id is ``((modality x eyes + eye position) x n_scans + scan) x methods + method position``:
    unique, and known without a shuffle.
    """
    images = spark.read.parquet(str(table))
    chosen = spark.createDataFrame(eyes[["eid", "eye"]].assign(eye_index=np.arange(len(eyes))))
    images = images.join(F.broadcast(chosen), ["eid", "eye"])
    if modality == "oct":
        images = images.where(F.col("scan").isin(pipeline.saliency_scans(n_scans, section.scan_stride)))
    else:
        images = images.withColumn("scan", F.lit(0))
    model_path, methods = str(model), section.methods
    position = {method: k for k, method in enumerate(methods.methods)}
    first_eye = ("oct", "cfp").index(modality) * len(eyes)

    def compute(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from scilens.vision.inference import with_model

        for keras_model, batch in with_model(model_path, batches):
            eye_at = {(r.eid, r.eye): int(r.eye_index) for r in batch.itertuples()}
            out = [_encoded({**r, "mask_id": ((first_eye + eye_at[(r["eid"], r["eye"])]) * n_scans + r["scan"])
                             * len(position) + position[r["method"]]}, "image", "mask")
                   for r in pipeline.saliency_records(keras_model, _with_images(batch), modality, methods)]
            yield pd.DataFrame(out, columns=SALIENCY_SCHEMA.fieldNames())

    n = max(1, len(eyes))
    return (images.select("eid", "eye", "label", "scan", "image", "eye_index").repartition(min(n, 8))
            .mapInPandas(compute, SALIENCY_SCHEMA))


def _with_images(batch: pd.DataFrame) -> Iterator[tuple[Any, np.ndarray]]:
    for row, image in zip(batch.itertuples(), tensor.decode_column(batch["image"])):
        if image is None:  # glaucoma-images writes no null image; a hand-made table might
            raise ValueError(f"eid {row.eid} {row.eye} eye scan {row.scan}: no image")
        yield row, image


def saliency_masks(spark: SparkSession, tables: Mapping[str, Path], models: Mapping[str, str | None],
                   eyes: pd.DataFrame, section: SaliencySection, n_scans: int) -> DataFrame:
    """The :func:`saliency_rows` of every modality with a model, in one frame."""
    frames = [saliency_rows(spark, tables[m], Path(model), m, eyes, section, n_scans)
              for m in ("oct", "cfp") if (model := models[m])]
    masks = frames[0]
    for frame in frames[1:]:
        masks = masks.unionByName(frame)
    return masks
