"""``scilens glaucoma-final``: the final model -- XGBoost on the image probabilities plus the BM3 features.

Input: the output directory of ``scilens glaucoma-infer`` (``retina_vectors.parquet``: per eye the
probabilities of every OCT scan position and of the fundus photo). ``cohort``: the
``glaucoma-cohort`` output (``eyes.parquet``: labels, splits, clinical features); ``clinical``:
the ``glaucoma-clinical`` output whose report gets the imaging and final-model sections.

The final model (dissertation Ch. 3 §3.2, "Final model") is XGBoost on Spark with the paper's
hyper-parameters over the ``n_scans`` OCT probabilities, the fundus probability and the
``baseline`` (BM3) features, trained on ``train`` with early stopping on ``validation``. The
same baseline model is refitted on the same eyes, so the two are compared on one test set.
Metrics come from the clinical code (:mod:`scilens.glaucoma`): test AUC and accuracy with
bootstrap 95% CIs (subjects resampled), the threshold (Youden on validation), PTG accuracy, the
top-10 features by mean |SHAP| (TreeSHAP).

Outputs: ``metrics.json`` (``final`` and ``baseline_same_eyes``), ``predictions.parquet``,
``models/final.json``, ``plots/*.png``, ``report.html`` + ``report.json`` (the clinical report with
the "Imaging models" and "Final model" sections added after "Baseline models").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import functions as F

from scilens.core.config import ConfigError, field
from scilens.core.inputs import InputError
from scilens.core.job import Job, JobConfig, JobContext, JobFailed
from scilens.glaucoma import features as feature_lists
from scilens.glaucoma.metrics import BootstrapConfig
from scilens.glaucoma.models import XGBParams
from scilens.glaucoma.tracking import MlflowConfig

SCAN_PREFIX = "p_oct_scan_"
CFP_FEATURE = "p_cfp"


@dataclass
class GlaucomaFinalConfig(JobConfig):
    """Config of ``scilens glaucoma-final``."""

    cohort: str = field("", "glaucoma-cohort output (or its eyes.parquet): labels, splits, clinical features. "
                        "Required.")
    clinical: str | None = field(None, "glaucoma-clinical output whose report.json the imaging and final sections "
                                 "are added to (next to BM1-BM3); null: a report of its own.")
    baseline: str = field("BM3", "Clinical features the image probabilities are added to.",
                          choices=tuple(feature_lists.BASELINE_MODELS))
    xgb: XGBParams = field(XGBParams(), "Gradient-boosted trees (paper hyper-parameters).")
    bootstrap: BootstrapConfig = field(BootstrapConfig(), "Bootstrap confidence intervals.")
    threshold: float | None = field(None, "Probability above which an eye is called glaucoma (accuracy, PTG); "
                                    "null: the Youden-optimal threshold on the validation split.", min=0.0, max=1.0)
    top_k: int = field(10, "Features listed by mean |SHAP|.", min=1)
    mlflow: MlflowConfig = field(MlflowConfig(), "Experiment tracking.")


def _clinical_config(config: GlaucomaFinalConfig):
    """The clinical job's config for its evaluation (metrics, threshold, SHAP ranking) of our models."""
    from scilens.jobs.glaucoma_clinical import GlaucomaClinicalConfig

    return GlaucomaClinicalConfig(models=[config.baseline], xgb=config.xgb, bootstrap=config.bootstrap,
                                  threshold=config.threshold, top_k=config.top_k, interaction_model=None,
                                  shap_splits=["train", "validation", "test"], mlflow=config.mlflow)


class GlaucomaFinalJob(Job[GlaucomaFinalConfig]):
    name = "glaucoma-final"
    summary = "Final glaucoma model: XGBoost on 128 OCT + 1 fundus probabilities + BM3; AUC, SHAP, PTG, report."
    config_class = GlaucomaFinalConfig

    def run(self, ctx: JobContext[GlaucomaFinalConfig]) -> int:
        from scilens.glaucoma import models as gbt
        from scilens.glaucoma import plots
        from scilens.glaucoma.cohort import eyes_table
        from scilens.jobs.glaucoma_clinical import check_eyes, evaluate_model, score_eyes

        config = ctx.config
        if not config.cohort:
            raise ConfigError("cohort: required; give the output of scilens glaucoma-cohort")
        vectors_path = Path(ctx.inputs[0]) / "retina_vectors.parquet"
        if not vectors_path.exists():
            raise InputError(f"input {ctx.inputs[0]}: no retina_vectors.parquet; give the output of glaucoma-infer")
        clinical_dir = Path(config.clinical) if config.clinical else None
        if clinical_dir is not None and not (clinical_dir / "report.json").exists():
            raise InputError(f"clinical {config.clinical}: no report.json; give the output of glaucoma-clinical")
        baseline = feature_lists.BASELINE_MODELS[config.baseline]
        evaluation = _clinical_config(config)
        with ctx.step("join eyes and images") as step:
            eyes = ctx.spark.read.parquet(str(eyes_table(config.cohort)))
            vectors = ctx.spark.read.parquet(str(vectors_path))
            image_features = sorted(c for c in vectors.columns if c.startswith(SCAN_PREFIX))
            if CFP_FEATURE in vectors.columns:
                image_features.append(CFP_FEATURE)
            if not image_features:
                raise InputError(f"{vectors_path}: no image probability columns ({SCAN_PREFIX}###, {CFP_FEATURE})")
            data = eyes.join(vectors.select("eid", "eye", *image_features), ["eid", "eye"]).cache()
            check_eyes(data, baseline, str(vectors_path))
            step.counts["cohort_eyes"] = eyes.count()
            step.counts["eyes_with_images"] = data.count()
            step.counts["image_features"] = len(image_features)
        train, validation = data.where(F.col("split") == "train"), data.where(F.col("split") == "validation")
        models = {f"{config.baseline} (same eyes)": baseline, "final": [*image_features, *baseline]}
        results, scored_all = {}, []
        for name, features in models.items():
            with ctx.step(f"fit {name}") as step:
                fit = gbt.fit_xgb(train, validation, features, config.xgb)
                if name == "final":
                    (ctx.output / "models").mkdir()
                    fit.booster().save_model(str(ctx.output / "models" / "final.json"))
                scored = score_eyes(fit, data, evaluation.shap_splits)
                results[name], _ = evaluate_model(name, fit, scored, evaluation)
                scored_all.append(scored[["eid", "eye", "label", "split", "probability"]].assign(model=name))
                step.counts.update(rounds=fit.rounds, best_iteration=fit.best_iteration)
        data.unpersist()
        with ctx.step("report") as step:
            table = pd.concat(scored_all, ignore_index=True)
            ctx.spark.createDataFrame(table).coalesce(1).write.parquet(str(ctx.output / "predictions.parquet"))
            imaging = json.loads((Path(ctx.inputs[0]) / "imaging_metrics.json").read_text()) \
                if (Path(ctx.inputs[0]) / "imaging_metrics.json").exists() else {}
            clinical = json.loads((clinical_dir / "metrics.json").read_text())["models"] \
                if clinical_dir is not None and (clinical_dir / "metrics.json").exists() else {}
            figures = _figures(plots, results, clinical)
            (ctx.output / "plots").mkdir()
            for figure_name, png in figures.items():
                (ctx.output / "plots" / figure_name).write_bytes(png)
            document = {"input": ctx.inputs[0], "cohort": config.cohort, "eyes": step_counts(ctx),
                        "image_features": image_features, "models": results, "imaging": imaging}
            (ctx.output / "metrics.json").write_text(json.dumps(document, indent=2, default=float) + "\n")
            report = _report(clinical_dir, config, results, clinical, imaging, figures, Path(ctx.inputs[0]))
            report.save(ctx.output)
            step.counts["figures"] = len(figures)
        if config.mlflow.enabled:
            with ctx.step("mlflow"):
                from scilens.glaucoma.tracking import log_run

                keep = ("auc", "ci_low", "ci_high", "accuracy", "ptg_accuracy", "threshold", "rounds")
                log_run(config.mlflow, ctx.output.parent, f"{ctx.job}-final",
                        {**config.xgb.to_dict(), "features": len(models["final"]), "baseline": config.baseline},
                        {k: results["final"][k] for k in keep if results["final"].get(k) is not None},
                        [ctx.output / "models" / "final.json", *(ctx.output / "plots").glob("*.png")],
                        {"scilens.job": ctx.job, "scilens.output": ctx.manifest.output})
        if not np.isfinite(results["final"]["auc"]):
            raise JobFailed("the final model has no test AUC (a class is missing from the test split)")
        return int(len(table) // len(models))


def step_counts(ctx: JobContext) -> dict[str, int]:
    """Eye counts of the join step, for metrics.json."""
    step = next(s for s in ctx.manifest.steps if s.name == "join eyes and images")
    return dict(step.counts)


def _figures(plots, results: dict[str, dict], clinical: dict[str, dict]) -> dict[str, bytes]:
    """ROC, AUC bars (with BM1-BM3 of the clinical job when given), PTG accuracy, SHAP top features."""
    curves = {n: (np.array(r["roc"]["fpr"]), np.array(r["roc"]["tpr"]), r["auc"], r["ci_low"], r["ci_high"])
              for n, r in results.items()}
    aucs = {**{n: (r["auc"], r["ci_low"], r["ci_high"]) for n, r in clinical.items()},
            **{n: (r["auc"], r["ci_low"], r["ci_high"]) for n, r in results.items()}}
    figures = {"roc_final.png": plots.roc_curves(curves, "Test set ROC: final model vs clinical features"),
               "auc_final.png": plots.auc_bars(aucs, "BM1" if "BM1" in aucs else None, "test AUC (95% CI)",
                                               "Clinical and final models")}
    ptg = {**{n: (r["ptg_accuracy"], r["ptg_ci_low"], r["ptg_ci_high"]) for n, r in clinical.items()
              if r.get("ptg_accuracy") is not None},
           **{n: (r["ptg_accuracy"], r["ptg_ci_low"], r["ptg_ci_high"]) for n, r in results.items()
              if r.get("ptg_accuracy") is not None}}
    if ptg:
        figures["ptg_accuracy_final.png"] = plots.auc_bars(ptg, "BM1" if "BM1" in ptg else None,
                                                           "accuracy on PTG eyes (95% CI)", "Progress-to-glaucoma")
    top = results["final"]["top_features"]
    figures["shap_top_final.png"] = plots.importance_bars([t[0] for t in top], [t[1] for t in top],
                                                          "Final model: mean |SHAP|")
    return figures


def _report(clinical_dir: Path | None, config: GlaucomaFinalConfig, results: dict, clinical: dict, imaging: dict,
            figures: dict[str, bytes], infer_dir: Path):
    from scilens.glaucoma.report import Report

    report = Report.load(clinical_dir) if clinical_dir is not None else Report("Glaucoma screening")
    rows = []
    for name, key in (("fundus CNN (per photo)", "cfp"), ("OCT ensemble (XGBoost over scans)", "oct_ensemble"),
                      ("OCT + fundus ensemble", "oct_cfp_ensemble")):
        if key in imaging:
            r = imaging[key]
            rows.append({"model": name, "test AUC": r["auc"], "95% CI": f"{r['ci_low']:.3f}-{r['ci_high']:.3f}",
                         "eyes": r["n"]})
    imaging_figures = {p.name: p.read_bytes() for p in (infer_dir / "scan_auc.png",
                                                        infer_dir / "oct_ensemble" / "shap_by_scan.png")
                       if p.exists()}
    saliency = sorted((infer_dir / "saliency").glob("*.png"))[:2] if (infer_dir / "saliency").exists() else []
    imaging_figures.update({f"saliency_{p.name}": p.read_bytes() for p in saliency})
    after = "Baseline models" if any(s.title == "Baseline models" for s in report.sections) else None
    report.add("Imaging models",
               "CNNs on single OCT B-scans (DenseNet) and fundus photos (transfer learning), trained with Horovod "
               "on Spark; per-retina XGBoost ensembles over the scan probabilities. AUC per scan position, SHAP "
               "per scan, and saliency maps (integrated gradients, SmoothGrad).",
               tables={"imaging test metrics": pd.DataFrame(rows)} if rows else None,
               figures=imaging_figures, after=after)
    table = pd.DataFrame([{"model": n, "features": len(r["features"]), "test AUC": r["auc"],
                           "95% CI": f"{r['ci_low']:.3f}-{r['ci_high']:.3f}", "accuracy": r["accuracy"],
                           "PTG accuracy": r["ptg_accuracy"], "n_test": r["n_test"], "rounds": r["rounds"]}
                          for n, r in {**clinical, **results}.items()])
    top = pd.DataFrame(results["final"]["top_features"], columns=["feature", "mean |SHAP|"])
    report.add("Final model",
               f"XGBoost over the image probabilities (OCT scans and fundus photo) and the {config.baseline} "
               f"features, the paper's hyper-parameters, trained on the eyes that have images; "
               f"{config.baseline} (same eyes) is the clinical model refitted on exactly those eyes.",
               tables={"test metrics": table, "top features": top}, figures=figures, after="Imaging models")
    return report


JOB = GlaucomaFinalJob
