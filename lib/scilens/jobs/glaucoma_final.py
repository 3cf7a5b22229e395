"""``scilens glaucoma-final``: the final model -- XGBoost on the image probabilities plus the BM3 features.

Input: the output directory of ``scilens glaucoma-infer`` (``retina_vectors.parquet``: per eye the
probabilities of every OCT scan position and of the fundus photo). ``cohort``: the
``glaucoma-cohort`` output (``eyes.parquet``: labels, splits, clinical features); ``clinical``:
the ``glaucoma-clinical`` output whose report gets the imaging and final-model sections.

The final model (dissertation Ch. 3 §3.2, "Final model") is XGBoost on Spark with the paper's
hyper-parameters over the ``n_scans`` OCT probabilities, the fundus probability and the
``baseline`` (BM3) features, trained on ``train`` with early stopping on ``validation``. The
same baseline model is refitted on the same eyes, so the two are compared on one test set.
Metrics come from the clinical code (:mod:`scilens.glaucoma.evaluation`): test AUC and accuracy with
bootstrap 95% CIs (subjects resampled), the threshold (Youden on validation), PTG accuracy, the
top-10 features by mean |SHAP| (TreeSHAP).

Outputs: ``metrics.json`` (``final`` and ``baseline_same_eyes``), ``predictions.parquet``,
``models/final.json``, ``plots/*.png``, ``report.html`` + ``report.json`` (the clinical report with
the "Imaging models" and "Final model" sections added after "Baseline models").
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import functions as F

from scilens.core.config import ConfigError
from scilens.core.inputs import InputError
from scilens.core.job import Job, JobContext, JobFailed
from scilens.glaucoma import evaluation, plots
from scilens.glaucoma import features as feature_lists
from scilens.glaucoma import models as gbt
from scilens.glaucoma.cohort import eyes_table
from scilens.glaucoma.config import GlaucomaFinalConfig, final_evaluation_config
from scilens.glaucoma.report import final_report, upstream_metrics
from scilens.glaucoma.tracking import log_final_model

__all__ = ["JOB", "GlaucomaFinalConfig", "GlaucomaFinalJob"]


class GlaucomaFinalJob(Job[GlaucomaFinalConfig]):
    """The final glaucoma model (images + BM3) and its report; see the module doc."""

    name = "glaucoma-final"
    summary = "Final glaucoma model: XGBoost on 128 OCT + 1 fundus probabilities + BM3; AUC, SHAP, PTG, report."
    config_class = GlaucomaFinalConfig

    def run(self, ctx: JobContext[GlaucomaFinalConfig]) -> int:
        """Join eyes and image probabilities, fit and evaluate both models, write tables, figures and the report."""
        config = ctx.config
        infer_dir, vectors_path, clinical_dir = self._inputs(ctx)
        baseline = feature_lists.BASELINE_MODELS[config.baseline]
        evaluation_config = final_evaluation_config(config)
        with ctx.step("join eyes and images") as joined:
            eyes = ctx.spark.read.parquet(str(eyes_table(config.cohort)))
            data, image_features = evaluation.eyes_with_images(
                eyes, ctx.spark.read.parquet(str(vectors_path)), baseline, str(vectors_path))
            joined.counts["cohort_eyes"] = eyes.count()
            joined.counts["eyes_with_images"] = data.count()
            joined.counts["image_features"] = len(image_features)
        train, validation = data.where(F.col("split") == "train"), data.where(F.col("split") == "validation")
        models = {f"{config.baseline} (same eyes)": baseline, "final": [*image_features, *baseline]}
        results, scored_all = {}, []
        for name, features in models.items():
            with ctx.step(f"fit {name}") as step:
                fit = gbt.fit_xgb(train, validation, features, config.xgb)
                if name == "final":
                    (ctx.output / "models").mkdir()
                    fit.booster().save_model(str(ctx.output / "models" / "final.json"))
                scored = evaluation.score_eyes(fit, data, evaluation_config.shap_splits)
                results[name], _ = evaluation.evaluate_model(name, fit, scored, evaluation_config)
                scored_all.append(scored[["eid", "eye", "label", "split", "probability"]].assign(model=name))
                step.counts.update(rounds=fit.rounds, best_iteration=fit.best_iteration)
        data.unpersist()
        with ctx.step("report") as step:
            table = pd.concat(scored_all, ignore_index=True)
            evaluation.write_pandas(ctx.spark, table, ctx.output / "predictions.parquet")
            imaging, clinical = upstream_metrics(infer_dir, clinical_dir)
            figures = plots.final_figures(results, clinical)
            (ctx.output / "plots").mkdir()
            for figure_name, png in figures.items():
                (ctx.output / "plots" / figure_name).write_bytes(png)
            document = {"input": ctx.inputs[0], "cohort": config.cohort, "eyes": dict(joined.counts),
                        "image_features": image_features, "models": results, "imaging": imaging}
            (ctx.output / "metrics.json").write_text(json.dumps(document, indent=2, default=float) + "\n")
            final_report(clinical_dir, config.baseline, results, clinical, imaging, figures, infer_dir).save(ctx.output)
            step.counts["figures"] = len(figures)
        if config.mlflow.enabled:
            with ctx.step("mlflow"):
                log_final_model(config, ctx.output, ctx.job, ctx.manifest.output, results["final"],
                                len(models["final"]))
        if not np.isfinite(results["final"]["auc"]):
            raise JobFailed("the final model has no test AUC (a class is missing from the test split)")
        return int(len(table) // len(models))

    @staticmethod
    def _inputs(ctx: JobContext[GlaucomaFinalConfig]) -> tuple[Path, Path, Path | None]:
        """glaucoma-infer's output, its retina_vectors.parquet and glaucoma-clinical's output, checked."""
        config = ctx.config
        if not config.cohort:
            raise ConfigError("cohort: required; give the output of scilens glaucoma-cohort")
        infer_dir = Path(ctx.inputs[0])
        vectors_path = infer_dir / "retina_vectors.parquet"
        if not vectors_path.exists():
            raise InputError(f"input {ctx.inputs[0]}: no retina_vectors.parquet; give the output of glaucoma-infer")
        clinical_dir = Path(config.clinical) if config.clinical else None
        if clinical_dir is not None and not (clinical_dir / "report.json").exists():
            raise InputError(f"clinical {config.clinical}: no report.json; give the output of glaucoma-clinical")
        return infer_dir, vectors_path, clinical_dir


JOB = GlaucomaFinalJob
