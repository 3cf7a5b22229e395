"""``scilens glaucoma-clinical``: baseline models BM1-BM3 on the cohort's eyes, with CIs, SHAP and PTG accuracy.

Input: the output directory of ``scilens glaucoma-cohort`` (or its ``eyes.parquet``). For each
model of ``models`` (feature lists in :mod:`scilens.glaucoma.features`): XGBoost on Spark
(:func:`scilens.glaucoma.models.fit_xgb`, early stopping on the validation split), test AUC and
accuracy with bootstrap 95% CIs, ROC curve, TreeSHAP contributions (mean |SHAP| top features,
dependence plots), accuracy on the progress-to-glaucoma eyes with its CI, and for
``interaction_model`` SHAP interaction values of ``interaction_with`` with ``interactions``.
Outputs under ``--output``:

* ``metrics.json`` -- per model: auc, ci_low, ci_high, accuracy (+ CI), threshold, ptg_accuracy,
  ptg_ci_low, ptg_ci_high, top_features, rounds, ROC points, MLflow run id;
* ``predictions.parquet`` (eid, eye, label, split, model, probability), ``shap.parquet`` (eid, eye,
  split, label, model, feature, value, shap), ``interactions.parquet``;
* ``models/<model>.json`` (XGBoost models), ``plots/*.png``, ``report.html`` + ``report.json``.

Runs are logged to MLflow (:mod:`scilens.glaucoma.tracking`). The evaluation is
:mod:`scilens.glaucoma.evaluation`, the figures :mod:`scilens.glaucoma.plots`, the report
:func:`scilens.glaucoma.report.clinical_report`.
"""

from __future__ import annotations

import json

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from scilens.core.job import Job, JobContext
from scilens.core.session import arrow_batch_bytes
from scilens.glaucoma import evaluation, plots
from scilens.glaucoma import features as feature_lists
from scilens.glaucoma import models as gbt
from scilens.glaucoma.cohort import eyes_table
from scilens.glaucoma.config import GlaucomaClinicalConfig
from scilens.glaucoma.report import clinical_report
from scilens.glaucoma.tracking import log_clinical_model

__all__ = ["JOB", "GlaucomaClinicalConfig", "GlaucomaClinicalJob"]

# An eye row is ~25 numbers; 8 MB batches hold ~30,000 of them.
_EYE_ROW_BYTES = 256
_EYE_BATCH_BUDGET = 8 * 2**20


class GlaucomaClinicalJob(Job[GlaucomaClinicalConfig]):
    """Baseline models BM1-BM3 of the glaucoma study; see the module doc."""

    name = "glaucoma-clinical"
    summary = "Fit BM1-BM3 (XGBoost on Spark) on glaucoma-cohort eyes: AUC and PTG accuracy with CIs, SHAP, report."
    config_class = GlaucomaClinicalConfig

    def run(self, ctx: JobContext[GlaucomaClinicalConfig]) -> int:
        """Check the eyes, fit and evaluate each model, then write tables, figures, MLflow runs and the report."""
        config = ctx.config
        path = str(eyes_table(ctx.inputs[0]))
        eyes = ctx.spark.read.parquet(path)
        all_features = sorted({f for m in config.models for f in feature_lists.BASELINE_MODELS[m]})
        with ctx.step("check eyes") as step:
            counts = evaluation.check_eyes(eyes, all_features, path)
            for split, by_label in counts.items():
                step.counts[split] = sum(by_label.values())
        (ctx.output / "models").mkdir()
        (ctx.output / "plots").mkdir()
        with arrow_batch_bytes(ctx.spark, _EYE_ROW_BYTES, _EYE_BATCH_BUDGET, raise_limit=True):
            return self._run(ctx, config, eyes.cache(), path)

    def _run(self, ctx: JobContext, config: GlaucomaClinicalConfig, eyes: DataFrame, path: str) -> int:
        train, validation = eyes.where(F.col("split") == "train"), eyes.where(F.col("split") == "validation")
        results: dict[str, dict] = {}
        predictions, shap_rows = [], []
        fits: dict[str, gbt.XGBFit] = {}
        for name in config.models:
            with ctx.step(f"fit {name}") as step:
                fit = fits[name] = gbt.fit_xgb(train, validation, feature_lists.BASELINE_MODELS[name], config.xgb)
                fit.booster().save_model(str(ctx.output / "models" / f"{name}.json"))
                step.counts.update(rounds=fit.rounds, best_iteration=fit.best_iteration)
            with ctx.step(f"score {name}") as step:
                scored = evaluation.score_eyes(fit, eyes, config.shap_splits)
                scored["model"] = name
                predictions.append(scored[["eid", "eye", "label", "split", "model", "probability"]])
                results[name], shap_long = evaluation.evaluate_model(name, fit, scored, config)
                shap_rows.append(shap_long)
                step.counts.update(eyes=len(scored), shap_eyes=int(scored["shap"].notna().sum()))
        with ctx.step("figures and tables") as step:
            prediction_table = pd.concat(predictions, ignore_index=True)
            shap_table = pd.concat(shap_rows, ignore_index=True)
            figures = plots.clinical_figures(results, shap_table, config.interaction_model or config.models[-1],
                                             config.dependence)
            interactions = None
            if config.interaction_model is not None:
                interactions, more = evaluation.shap_interaction_summary(
                    ctx.spark, config, eyes, fits[config.interaction_model], ctx.output)
                figures.update(more)
            for figure_name, png in figures.items():
                (ctx.output / "plots" / figure_name).write_bytes(png)
            evaluation.write_pandas(ctx.spark, prediction_table, ctx.output / "predictions.parquet")
            evaluation.write_pandas(ctx.spark, shap_table, ctx.output / "shap.parquet")
            step.counts["figures"] = len(figures)
        with ctx.step("mlflow") as step:
            for name, result in results.items():
                result["mlflow_run_id"] = log_clinical_model(
                    config, ctx.output, ctx.job, ctx.manifest.output, name, result, list(figures)) \
                    if config.mlflow.enabled else None
            step.counts["runs"] = sum(r["mlflow_run_id"] is not None for r in results.values())
        document = {"input": path, "models": results, "bootstrap": config.bootstrap.to_dict(),
                    "xgb": config.xgb.to_dict(), "interactions": interactions}
        (ctx.output / "metrics.json").write_text(json.dumps(document, indent=2) + "\n")
        clinical_report(config, results, figures, path).save(ctx.output)
        eyes.unpersist()
        return len(prediction_table) // max(1, len(config.models))


JOB = GlaucomaClinicalJob
