"""``scilens glaucoma-infer``: OCT and fundus models over every eye, the per-retina OCT ensemble, saliency.

Input: the output directory of ``scilens glaucoma-images``; ``oct_model`` and
``cfp_model``: trained models (``model.keras`` or the ``glaucoma-train``
output holding it). Batch inference runs on the executors with
``predict_batch_udf`` (:mod:`scilens.vision.inference`).

Outputs:

* ``oct_predictions.parquet`` -- P(glaucoma) per B-scan (``eid``, ``eye``, ``visit``, ``scan``, ``label``,
  ``split``, ``probability``); ``cfp_predictions.parquet`` -- per fundus photo;
* ``retina_vectors.parquet`` -- one row per eye: ``p_oct_scan_000`` ... (the scan probabilities in scan
  order, superior first) and ``p_cfp``: the image features of the final model;
* ``scan_auc.csv``/``.png`` -- AUC of the single-scan predictions at each scan position on
  ``evaluation_split``, with bootstrap 95% CIs (Fig. 3.4A);
* ``oct_ensemble/`` -- XGBoost over the scan probabilities of a retina (trained on ``train``, early
  stopping on ``validation``): ``predictions.parquet`` with per-scan SHAP values, ``shap_by_scan.png``
  (mean |SHAP| per scan and the clustered per-retina heat map, Fig. 3.4B-C), ``model.json``;
* ``imaging_metrics.json`` -- AUC with 95% CI on ``evaluation_split`` of the fundus model, the OCT
  ensemble and the OCT + fundus ensemble;
* ``saliency.parquet`` -- integrated-gradients and SmoothGrad masks (``eid``, ``eye``, ``modality``,
  ``scan``, ``method``, ``mask`` tensor, ...) for a few eyes, queryable later; ``saliency/*.png`` overlays.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from scilens.core import tensor
from scilens.core.config import Config, ConfigError, field
from scilens.core.inputs import InputError
from scilens.core.job import Job, JobConfig, JobContext, JobFailed
from scilens.core.quarantine import REJECTED_TYPE
from scilens.glaucoma.metrics import BootstrapConfig
from scilens.glaucoma.models import XGBParams
from scilens.vision.saliency import SaliencyConfig

KEYS = ["eid", "eye", "visit", "label", "split"]
SCAN_PREFIX = "p_oct_scan_"
CFP_FEATURE = "p_cfp"
SALIENCY_SCHEMA = T.StructType([
    T.StructField("eid", T.LongType()), T.StructField("eye", T.StringType()), T.StructField("label", T.StringType()),
    T.StructField("modality", T.StringType()), T.StructField("scan", T.IntegerType()),
    T.StructField("method", T.StringType()), T.StructField("probability", T.DoubleType()),
    T.StructField("completeness_gap", T.DoubleType()), tensor.tensor_field("image"), tensor.tensor_field("mask"),
])


def scan_feature(scan: int) -> str:
    """Column of the final model's feature for scan position ``scan``."""
    return f"{SCAN_PREFIX}{scan:03d}"


@dataclass
class SaliencySection(Config):
    """Which images get saliency masks, and how."""

    eyes: int = field(4, "Eyes of the evaluation split (half glaucoma, half healthy) whose images get masks.",
                      min=0)
    scan_stride: int = field(16, "Every k-th B-scan of those eyes, counted from the central scan both ways.",
                             min=1)
    methods: SaliencyConfig = field(SaliencyConfig(), "Saliency methods.")


@dataclass
class GlaucomaInferConfig(JobConfig):
    """Config of ``scilens glaucoma-infer``."""

    oct_model: str | None = field(None, "OCT model: a model.keras, or the glaucoma-train output holding one.")
    cfp_model: str | None = field(None, "Fundus model: a model.keras, or the glaucoma-train output holding one.")
    batch_size: int = field(64, "Images per model call on an executor.", min=1)
    evaluation_split: str = field("test", "Split the AUCs are reported on.",
                                  choices=("train", "validation", "test", "ptg"))
    bootstrap: BootstrapConfig = field(BootstrapConfig(), "Bootstrap confidence intervals (subjects resampled).")
    ensemble: XGBParams = field(XGBParams(), "Per-retina XGBoost over the scan probabilities (Fig. 3.4).")
    saliency: SaliencySection = field(SaliencySection(), "Saliency masks.")


def model_file(setting: str, name: str) -> Path:
    """The model file a ``*_model`` setting names (the file, or a glaucoma-train output directory)."""
    path = Path(setting)
    if path.is_dir():
        path = path / "model.keras"
    if not path.is_file():
        raise InputError(f"{name} {setting}: no model file (model.keras)")
    return path


def predict_images(ctx: JobContext, table: Path, model: Path, batch_size: int, step: str
                   ) -> tuple[DataFrame, DataFrame]:
    """P(glaucoma) of every image of ``table`` on the executors: (predictions, rejected rows)."""
    from scilens.vision import inference

    images = ctx.spark.read.parquet(str(table))
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
        vectors = vectors.select(*KEYS, *(F.col(str(s)).alias(scan_feature(s)) for s in range(n_scans)))
    if cfp_predictions is not None:
        photos = cfp_predictions.select(*KEYS, F.col("probability").alias(CFP_FEATURE))
        vectors = photos if vectors is None else vectors.join(photos, KEYS, "full")
    return vectors


def auc_with_ci(frame: pd.DataFrame, score: str, bootstrap: BootstrapConfig) -> dict[str, float]:
    """AUC of ``frame[score]`` for glaucoma vs healthy rows, with its bootstrap CI (scilens.glaucoma.metrics)."""
    from scilens.glaucoma import metrics

    interval = metrics.auc_ci((frame["label"] == "glaucoma").to_numpy(int), frame[score].to_numpy(float),
                              frame["eid"].to_numpy(), bootstrap)
    return {"auc": interval.estimate, "ci_low": interval.low, "ci_high": interval.high, "n": len(frame)}


def scan_position_auc(oct_predictions: pd.DataFrame, n_scans: int, bootstrap: BootstrapConfig) -> pd.DataFrame:
    """AUC of the single-scan predictions at each scan position (glaucoma vs healthy eyes)."""
    return pd.DataFrame([{"scan": scan, **auc_with_ci(oct_predictions[oct_predictions["scan"] == scan],
                                                      "probability", bootstrap)} for scan in range(n_scans)])


def saliency_rows(ctx: JobContext, table: Path, model: Path, modality: str, eyes: pd.DataFrame,
                  section: SaliencySection, n_scans: int) -> DataFrame:
    """Saliency masks of the chosen eyes' images, computed on the executors."""
    images = ctx.spark.read.parquet(str(table))
    chosen = ctx.spark.createDataFrame(eyes[["eid", "eye"]])
    images = images.join(F.broadcast(chosen), ["eid", "eye"])
    if modality == "oct":
        centre = n_scans // 2
        wanted = sorted({s for s in range(n_scans) if (s - centre) % section.scan_stride == 0})
        images = images.where(F.col("scan").isin(wanted))
    else:
        images = images.withColumn("scan", F.lit(0))
    model_path, config = str(model), section.methods

    def compute(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from scilens.vision.inference import load_keras_model
        from scilens.vision.saliency import SaliencyStep

        keras_model, step = None, SaliencyStep(config)
        for batch in batches:
            if batch.empty:
                continue
            if keras_model is None:
                keras_model = load_keras_model(model_path)
            out = []
            for row, image in zip(batch.itertuples(), tensor.decode_column(batch["image"])):
                x = image.astype(np.float32)
                x = x[..., None] if x.ndim == 2 else x
                p = float(np.asarray(keras_model(x[None], training=False)).ravel()[0])
                for method, (mask, gap) in step.run(keras_model, x).items():
                    out.append({"eid": row.eid, "eye": row.eye, "label": row.label, "modality": modality,
                                "scan": int(row.scan), "method": method, "probability": p,
                                "completeness_gap": gap, "image": tensor.encode(image), "mask": tensor.encode(mask)})
            yield pd.DataFrame(out, columns=SALIENCY_SCHEMA.fieldNames())

    n = max(1, len(eyes))
    return (images.select("eid", "eye", "label", "scan", "image").repartition(min(n, 8))
            .mapInPandas(compute, SALIENCY_SCHEMA))


def choose_eyes(vectors: pd.DataFrame, n: int) -> pd.DataFrame:
    """``n`` eyes of the evaluation split, half glaucoma and half healthy, lowest eids first."""
    per_class = []
    for label, k in (("glaucoma", (n + 1) // 2), ("healthy", n // 2)):
        per_class.append(vectors[vectors["label"] == label].sort_values(["eid", "eye"]).head(k))
    return pd.concat(per_class, ignore_index=True)


class GlaucomaInferJob(Job[GlaucomaInferConfig]):
    name = "glaucoma-infer"
    summary = "OCT and fundus models over every eye (predict_batch_udf), per-retina OCT ensemble, saliency masks."
    config_class = GlaucomaInferConfig

    def run(self, ctx: JobContext[GlaucomaInferConfig]) -> int:
        from scilens.glaucoma import figures as retina_figures
        from scilens.glaucoma.models import fit_xgb, predict

        config = ctx.config
        if not config.oct_model and not config.cfp_model:
            raise ConfigError("oct_model, cfp_model: give at least one model")
        root = Path(ctx.inputs[0])
        tables = {"oct": root / "oct_scans.parquet", "cfp": root / "fundus.parquet"}
        models = {"oct": config.oct_model, "cfp": config.cfp_model}
        for modality, setting in models.items():
            if setting:
                models[modality] = str(model_file(setting, f"{modality}_model"))
                if not tables[modality].exists():
                    raise InputError(f"input {root}: no {tables[modality].name} for the {modality} model")
        predictions: dict[str, DataFrame] = {}
        n_scans = 0
        for modality in ("oct", "cfp"):
            if not models[modality]:
                continue
            with ctx.step(f"{modality} inference") as step:
                scored, rejected = predict_images(ctx, tables[modality], Path(models[modality]), config.batch_size,
                                                  f"{modality}_inference")
                ctx.reject(rejected)
                path = ctx.output / f"{modality}_predictions.parquet"
                scored.write.mode("overwrite").parquet(str(path))
                predictions[modality] = ctx.spark.read.parquet(str(path))
                step.counts["images"] = predictions[modality].count()
                if modality == "oct":
                    last_scan = predictions["oct"].agg(F.max("scan")).first()[0]
                    if last_scan is None:
                        raise JobFailed("oct inference: no B-scan was predicted (every image rejected); "
                                        "see _rejected/ of this run")
                    n_scans = last_scan + 1
        with ctx.step("retina vectors") as step:
            vectors_path = ctx.output / "retina_vectors.parquet"
            retina_vectors(predictions.get("oct"), predictions.get("cfp"), n_scans).write.mode("overwrite").parquet(
                str(vectors_path))
            vectors = ctx.spark.read.parquet(str(vectors_path))
            n_eyes = step.counts["eyes"] = vectors.count()
        evaluation = config.evaluation_split
        metrics: dict[str, Any] = {"evaluation_split": evaluation}
        if "oct" in predictions:
            with ctx.step("auc per scan position") as step:
                scans = (predictions["oct"].where((F.col("split") == evaluation)
                                                  & F.col("label").isin("glaucoma", "healthy"))
                         .select("eid", "scan", "label", "probability").toPandas())
                per_scan = scan_position_auc(scans, n_scans, config.bootstrap)
                per_scan.to_csv(ctx.output / "scan_auc.csv", index=False)
                retina_figures.scan_auc(per_scan["auc"].to_numpy(), ctx.output / "scan_auc.png",
                                        per_scan["ci_low"].to_numpy(), per_scan["ci_high"].to_numpy(),
                                        f"Single-scan AUC per position ({evaluation} split)")
                metrics["scan_auc"] = per_scan.to_dict(orient="list")
                step.counts["scans"] = n_scans
        ensembles = {"oct_ensemble": [scan_feature(s) for s in range(n_scans)] if "oct" in predictions else [],
                     "oct_cfp_ensemble": ([scan_feature(s) for s in range(n_scans)] + [CFP_FEATURE]
                                          if len(predictions) == 2 else [])}
        for name, features in ensembles.items():
            if not features:
                continue
            with ctx.step(name) as step:
                labelled = vectors.where(F.col("label").isin("glaucoma", "healthy"))
                fit = fit_xgb(labelled.where(F.col("split") == "train"), labelled.where(F.col("split") == "validation"),
                              features, config.ensemble)
                scored = predict(fit, vectors, contributions=(name == "oct_ensemble"))
                out = ctx.output / name
                out.mkdir(exist_ok=True)
                fit.booster().save_model(str(out / "model.json"))
                scored.write.mode("overwrite").parquet(str(out / "predictions.parquet"))
                scored_pd = ctx.spark.read.parquet(str(out / "predictions.parquet")).toPandas()
                test = scored_pd[(scored_pd["split"] == evaluation) & scored_pd["label"].isin(["glaucoma", "healthy"])]
                metrics[name] = auc_with_ci(test, "probability", config.bootstrap)
                metrics[name]["best_iteration"] = fit.best_iteration
                if name == "oct_ensemble":
                    shap = np.stack(test["shap"].to_numpy())[:, :n_scans]
                    retina_figures.scan_shap(shap, test["label"].tolist(), out / "shap_by_scan.png")
                    # The same eyes as the figure: the evaluation split.
                    metrics[name]["mean_abs_shap_by_scan"] = np.abs(shap).mean(axis=0).tolist()
                step.counts["rounds"] = fit.rounds
        if "cfp" in predictions:
            photos = (predictions["cfp"].where((F.col("split") == evaluation)
                                               & F.col("label").isin("glaucoma", "healthy")).toPandas())
            metrics["cfp"] = auc_with_ci(photos, "probability", config.bootstrap)
        (ctx.output / "imaging_metrics.json").write_text(json.dumps(metrics, indent=1, default=float))
        if config.saliency.eyes:
            with ctx.step("saliency") as step:
                evaluated = vectors.where(F.col("split") == evaluation).select("eid", "eye", "label").toPandas()
                eyes = choose_eyes(evaluated, config.saliency.eyes)
                frames = [saliency_rows(ctx, tables[m], Path(models[m]), m, eyes, config.saliency, n_scans)
                          for m in ("oct", "cfp") if models[m]]
                masks = frames[0]
                for frame in frames[1:]:
                    masks = masks.unionByName(frame)
                masks.write.mode("overwrite").parquet(str(ctx.output / "saliency.parquet"))
                stored = ctx.spark.read.parquet(str(ctx.output / "saliency.parquet"))
                step.counts["masks"] = stored.count()
                step.counts["figures"] = _saliency_figures(stored, ctx.output / "saliency")
        return n_eyes


def _saliency_figures(masks: DataFrame, folder: Path) -> int:
    """One PNG per eye: each of its images with every method's mask overlaid."""
    from scilens.glaucoma import figures as retina_figures

    rows = masks.drop("completeness_gap").toPandas()
    count = 0
    for (eid, eye), group in rows.groupby(["eid", "eye"]):
        panels = []
        for (modality, scan), part in group.groupby(["modality", "scan"]):
            image = tensor.decode(part.iloc[0]["image"])
            title = (f"{eid} {eye} ({part.iloc[0]['label']}) {modality.upper()}"
                     + (f" scan {scan}" if modality == "oct" else "") + f", p={part.iloc[0]['probability']:.2f}")
            panels.append((title, image, {r.method: tensor.decode(r.mask) for r in part.itertuples()}))
        retina_figures.saliency_overlays(panels, folder / f"{eid}_{eye}.png")
        count += 1
    return count


JOB = GlaucomaInferJob
