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
* ``saliency.parquet`` -- integrated-gradients and SmoothGrad masks (``mask_id``, ``eid``, ``eye``,
  ``modality``, ``scan``, ``method``, ``band_top``/``band_bottom`` (an OCT scan's retinal band), ``image``
  and ``mask`` tensors, ...) for a few eyes, sorted by ``mask_id`` in small row groups: ``scilens mask-index
  --set key_columns=[mask_id,eid,scan,band_top,band_bottom] --set where="modality = 'oct'"`` indexes it;
  ``saliency/*.png`` overlays.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from scilens.core.config import ConfigError
from scilens.core.inputs import InputError
from scilens.core.job import Job, JobContext, JobFailed
from scilens.core.parquet import write_sorted
from scilens.glaucoma.config import GlaucomaInferConfig

__all__ = ["JOB", "GlaucomaInferConfig", "GlaucomaInferJob"]


class GlaucomaInferJob(Job[GlaucomaInferConfig]):
    """Both models over every eye, the per-retina ensembles and saliency (see the module doc)."""

    name = "glaucoma-infer"
    summary = "OCT and fundus models over every eye (predict_batch_udf), per-retina OCT ensemble, saliency masks."
    config_class = GlaucomaInferConfig

    def run(self, ctx: JobContext[GlaucomaInferConfig]) -> int:
        """Predict, evaluate and explain; the number of eyes with a retina vector."""
        from scilens.glaucoma import figures, pipeline, stages
        from scilens.glaucoma.features import CFP_FEATURE

        config = ctx.config
        if not config.oct_model and not config.cfp_model:
            raise ConfigError("oct_model, cfp_model: give at least one model")
        root = Path(ctx.inputs[0])
        tables = {m: root / table for m, table in stages.TABLES.items()}
        models = {"oct": config.oct_model, "cfp": config.cfp_model}
        for modality, setting in models.items():
            if setting:
                models[modality] = str(pipeline.model_file(setting, f"{modality}_model"))
                if not tables[modality].exists():
                    raise InputError(f"input {root}: no {tables[modality].name} for the {modality} model")
        predictions: dict[str, DataFrame] = {}
        n_scans = 0
        for modality, model in models.items():
            if not model:
                continue
            with ctx.step(f"{modality} inference") as step:
                scored, rejected = stages.predict_images(ctx.spark, tables[modality], Path(model), config.batch_size,
                                                         f"{modality}_inference")
                ctx.reject(rejected)
                path = ctx.output / f"{modality}_predictions.parquet"
                scored.write.mode("overwrite").parquet(str(path))
                predictions[modality] = ctx.spark.read.parquet(str(path))
                step.counts["images"] = predictions[modality].count()
                if modality == "oct":
                    last = predictions["oct"].agg(F.max("scan")).first()
                    last_scan = last[0] if last is not None else None
                    if last_scan is None:
                        raise JobFailed("oct inference: no B-scan was predicted (every image rejected); "
                                        "see _rejected/ of this run")
                    n_scans = last_scan + 1
        with ctx.step("retina vectors") as step:
            vectors_path = ctx.output / "retina_vectors.parquet"
            stages.retina_vectors(predictions.get("oct"), predictions.get("cfp"), n_scans).write.mode(
                "overwrite").parquet(str(vectors_path))
            vectors = ctx.spark.read.parquet(str(vectors_path))
            n_eyes = step.counts["eyes"] = vectors.count()
        evaluation = config.evaluation_split
        metrics: dict[str, Any] = {"evaluation_split": evaluation}
        if "oct" in predictions:
            with ctx.step("auc per scan position") as step:
                scans = stages.evaluated(predictions["oct"], evaluation).select("eid", "scan", "label", "probability")
                per_scan = pipeline.scan_position_auc(scans.toPandas(), n_scans, config.bootstrap)
                per_scan.to_csv(ctx.output / "scan_auc.csv", index=False)
                figures.scan_auc(per_scan["auc"].to_numpy(), ctx.output / "scan_auc.png",
                                 per_scan["ci_low"].to_numpy(), per_scan["ci_high"].to_numpy(),
                                 f"Single-scan AUC per position ({evaluation} split)")
                metrics["scan_auc"] = per_scan.to_dict(orient="list")
                step.counts["scans"] = n_scans
        scan_features = [pipeline.scan_feature(s) for s in range(n_scans)]
        ensembles = {"oct_ensemble": scan_features if "oct" in predictions else [],
                     "oct_cfp_ensemble": [*scan_features, CFP_FEATURE] if len(predictions) == 2 else []}
        for name, features in ensembles.items():
            if features:
                with ctx.step(name) as step:
                    metrics[name], step.counts["rounds"] = stages.fit_ensemble(
                        vectors, features, config.ensemble, ctx.output / name, evaluation, config.bootstrap,
                        shap_scans=n_scans if name == "oct_ensemble" else 0)
        if "cfp" in predictions:
            photos = stages.evaluated(predictions["cfp"], evaluation).toPandas()
            metrics["cfp"] = pipeline.auc_with_ci(photos, "probability", config.bootstrap)
        (ctx.output / "imaging_metrics.json").write_text(json.dumps(metrics, indent=1, default=float))
        if config.saliency.eyes:
            with ctx.step("saliency") as step:
                evaluated = vectors.where(F.col("split") == evaluation).select("eid", "eye", "label").toPandas()
                eyes = pipeline.choose_eyes(evaluated, config.saliency.eyes)
                masks = stages.saliency_masks(ctx.spark, tables, models, eyes, config.saliency, n_scans)
                write_sorted(masks, ctx.output / "saliency.parquet", ["mask_id"])
                stored = ctx.spark.read.parquet(str(ctx.output / "saliency.parquet"))
                step.counts["masks"] = stored.count()
                step.counts["figures"] = figures.eye_saliency_figures(stored.drop("completeness_gap").toPandas(),
                                                                      ctx.output / "saliency")
        return n_eyes


JOB = GlaucomaInferJob
