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

Runs are logged to MLflow (:mod:`scilens.glaucoma.tracking`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from scilens.core.config import ConfigError, field
from scilens.core.inputs import InputError
from scilens.core.job import Job, JobConfig, JobContext
from scilens.core.session import arrow_batch_bytes
from scilens.glaucoma import features as feature_lists
from scilens.glaucoma import metrics, plots
from scilens.glaucoma import models as gbt
from scilens.glaucoma.cohort import eyes_table
from scilens.glaucoma.report import Report
from scilens.glaucoma.tracking import MlflowConfig, log_run

SPLIT_NAMES = ("train", "validation", "test", "ptg")
REQUIRED_COLUMNS = ("eid", "eye", "label", "split")
# An eye row is ~25 numbers; 8 MB batches hold ~30,000 of them.
_EYE_ROW_BYTES = 256
_EYE_BATCH_BUDGET = 8 * 2**20


@dataclass
class GlaucomaClinicalConfig(JobConfig):
    """Config of ``scilens glaucoma-clinical``."""

    models: list[str] = field(["BM1", "BM2", "BM3"], "Baseline models to fit (scilens.glaucoma.features).",
                              choices=tuple(feature_lists.BASELINE_MODELS))
    xgb: gbt.XGBParams = field(gbt.XGBParams(), "Gradient-boosted trees (paper hyper-parameters).")
    bootstrap: metrics.BootstrapConfig = field(metrics.BootstrapConfig(), "Bootstrap confidence intervals.")
    threshold: float | None = field(None, "Probability above which an eye is called glaucoma (accuracy, PTG); "
                                    "null: the Youden-optimal threshold on the validation split.", min=0.0, max=1.0)
    shap_splits: list[str] = field(["train", "validation", "test"], "Splits whose eyes get SHAP values.",
                                   choices=("train", "validation", "test", "ptg"))
    top_k: int = field(10, "Features listed by mean |SHAP|.", min=1)
    dependence: list[str] = field(["age", "iop", "bmi", "fvc"],
                                  "Features with SHAP dependence plots (if in the model).")
    interaction_model: str | None = field("BM3", "Model whose SHAP interaction values are computed (null: none).")
    interaction_with: str = field("age", "Feature whose interactions are shown.")
    interactions: list[str] = field(["iop", "bmi", "fvc"], "Features paired with interaction_with.")
    interaction_eyes: int = field(300, "Most eyes (a seeded sample of shap_splits) given SHAP interaction values, "
                                  "which cost about as many times SHAP as there are features.", min=10)
    mlflow: MlflowConfig = field(MlflowConfig(), "Experiment tracking.")

    def validate(self) -> None:
        if self.interaction_model is not None and self.interaction_model not in self.models:
            raise ConfigError(f"interaction_model: {self.interaction_model!r} is not one of models {self.models}")
        if self.interaction_model is not None:
            names = feature_lists.BASELINE_MODELS[self.interaction_model]
            for name in [self.interaction_with, *self.interactions]:
                if name not in names:
                    raise ConfigError(f"interactions: {name!r} is not a feature of {self.interaction_model}")


def check_eyes(eyes: DataFrame, features: list[str], path: str) -> dict[str, dict[str, int]]:
    """Fail fast on an eye table the models cannot use; returns eyes per split and label."""
    missing = [c for c in (*REQUIRED_COLUMNS, *features) if c not in eyes.columns]
    if missing:
        raise InputError(f"{path}: no column {', '.join(missing)}; is it glaucoma-cohort's eyes.parquet?")
    for name in features:
        if not isinstance(eyes.schema[name].dataType, T.NumericType):
            raise InputError(f"{path}: feature column {name} is {eyes.schema[name].dataType.simpleString()}, "
                             "not a number")
    counts: dict[str, dict[str, int]] = {}
    for row in eyes.groupBy("split", "label").count().collect():
        counts.setdefault(row["split"], {})[row["label"]] = row["count"]
    for split in ("train", "validation", "test"):
        have = counts.get(split, {})
        for label in ("glaucoma", "healthy"):
            if not have.get(label):
                raise InputError(f"{path}: the {split} split has no {label} eyes ({have or 'no eyes'}); "
                                 "the models need both classes in train, validation and test")
    return counts


def score_eyes(fit: gbt.XGBFit, eyes: DataFrame, shap_splits: list[str]) -> pd.DataFrame:
    """Probability of every eye (and its SHAP contributions on ``shap_splits``), as pandas."""
    keys = ["eid", "eye", "label", "split", *fit.features]
    with_shap = gbt.predict(fit, eyes.where(F.col("split").isin(*shap_splits)), contributions=True)
    without = gbt.predict(fit, eyes.where(~F.col("split").isin(*shap_splits)))
    a = with_shap.select(*keys, "probability", "shap").toPandas()
    b = without.select(*keys, "probability").toPandas()
    b["shap"] = None
    return pd.concat([a, b], ignore_index=True).sort_values(["eid", "eye"]).reset_index(drop=True)


def evaluate_model(name: str, fit: gbt.XGBFit, scored: pd.DataFrame,
                   config: GlaucomaClinicalConfig) -> tuple[dict, pd.DataFrame]:
    """Test AUC and accuracy with CIs, PTG accuracy, ROC and SHAP ranking of a scored model; and its SHAP rows."""
    y = scored["label"].isin(gbt.POSITIVE_LABELS).to_numpy(int)
    p = scored["probability"].to_numpy(float)
    split = scored["split"].to_numpy()
    groups = scored["eid"].to_numpy()
    test, valid, ptg = split == "test", split == "validation", split == "ptg"
    threshold = config.threshold if config.threshold is not None else metrics.youden_threshold(y[valid], p[valid])
    auc = metrics.auc_ci(y[test], p[test], groups[test], config.bootstrap)
    accuracy = metrics.accuracy_ci((p[test] >= threshold) == y[test], groups[test], config.bootstrap)
    result = {"features": fit.features, **auc.as_dict("auc"), "ci_low": auc.low, "ci_high": auc.high,
              **accuracy.as_dict("accuracy"), "threshold": threshold, "rounds": fit.rounds,
              "best_iteration": fit.best_iteration, "n_train": int((split == "train").sum()),
              "n_validation": int(valid.sum()), "n_test": int(test.sum()), "n_ptg": int(ptg.sum())}
    if ptg.any():
        ptg_acc = metrics.accuracy_ci(p[ptg] >= threshold, groups[ptg], config.bootstrap)
        result.update(ptg_accuracy=ptg_acc.estimate, ptg_ci_low=ptg_acc.low, ptg_ci_high=ptg_acc.high)
    else:
        result.update(ptg_accuracy=None, ptg_ci_low=None, ptg_ci_high=None)
    fpr, tpr = metrics.roc_points(y[test], p[test])
    result["roc"] = {"fpr": fpr.round(5).tolist(), "tpr": tpr.round(5).tolist()}
    has = scored["shap"].notna().to_numpy()
    contributions = np.stack(scored.loc[has, "shap"].to_numpy())[:, : len(fit.features)]
    mean_abs = np.abs(contributions).mean(axis=0)
    order = np.argsort(-mean_abs)[: config.top_k]
    result["top_features"] = [[fit.features[i], round(float(mean_abs[i]), 6)] for i in order]
    shown = scored.loc[has, ["eid", "eye", "split", "label"]].reset_index(drop=True)
    shap_long = pd.concat([shown.assign(model=name, feature=f, value=scored.loc[has, f].to_numpy(float),
                                        shap=contributions[:, i]) for i, f in enumerate(fit.features)],
                          ignore_index=True)
    return result, shap_long


class GlaucomaClinicalJob(Job[GlaucomaClinicalConfig]):
    name = "glaucoma-clinical"
    summary = "Fit BM1-BM3 (XGBoost on Spark) on glaucoma-cohort eyes: AUC and PTG accuracy with CIs, SHAP, report."
    config_class = GlaucomaClinicalConfig

    def run(self, ctx: JobContext[GlaucomaClinicalConfig]) -> int:
        config = ctx.config
        path = str(eyes_table(ctx.inputs[0]))
        eyes = ctx.spark.read.parquet(path)
        all_features = sorted({f for m in config.models for f in feature_lists.BASELINE_MODELS[m]})
        with ctx.step("check eyes") as step:
            counts = check_eyes(eyes, all_features, path)
            for split, by_label in counts.items():
                step.counts[split] = sum(by_label.values())
        (ctx.output / "models").mkdir()
        (ctx.output / "plots").mkdir()
        with arrow_batch_bytes(ctx.spark, _EYE_ROW_BYTES, _EYE_BATCH_BUDGET, raise_limit=True):
            return self._run(ctx, config, eyes, path)

    def _run(self, ctx: JobContext, config: GlaucomaClinicalConfig, eyes: DataFrame, path: str) -> int:
        eyes = eyes.cache()
        train, validation = eyes.where(F.col("split") == "train"), eyes.where(F.col("split") == "validation")
        results: dict[str, dict] = {}
        predictions, shap_rows, figures = [], [], {}
        fits: dict[str, gbt.XGBFit] = {}
        for name in config.models:
            names = feature_lists.BASELINE_MODELS[name]
            with ctx.step(f"fit {name}") as step:
                fit = fits[name] = gbt.fit_xgb(train, validation, names, config.xgb)
                fit.booster().save_model(str(ctx.output / "models" / f"{name}.json"))
                step.counts.update(rounds=fit.rounds, best_iteration=fit.best_iteration)
            with ctx.step(f"score {name}") as step:
                scored = score_eyes(fit, eyes, config.shap_splits)
                scored["model"] = name
                predictions.append(scored[["eid", "eye", "label", "split", "model", "probability"]])
                result, shap_long = evaluate_model(name, fit, scored, config)
                results[name] = result
                shap_rows.append(shap_long)
                step.counts.update(eyes=len(scored), shap_eyes=int(scored["shap"].notna().sum()))
        with ctx.step("figures and tables") as step:
            prediction_table = pd.concat(predictions, ignore_index=True)
            shap_table = pd.concat(shap_rows, ignore_index=True)
            figures = self._figures(config, results, shap_table)
            interactions = None
            if config.interaction_model is not None:
                interactions = self._interactions(ctx, config, eyes, fits[config.interaction_model], figures)
            for figure_name, png in figures.items():
                (ctx.output / "plots" / figure_name).write_bytes(png)
            self._write_table(ctx, prediction_table, "predictions.parquet")
            self._write_table(ctx, shap_table, "shap.parquet")
            step.counts["figures"] = len(figures)
        with ctx.step("mlflow") as step:
            for name, result in results.items():
                logged = config.mlflow.enabled
                result["mlflow_run_id"] = self._log(ctx, config, name, result, figures) if logged else None
            step.counts["runs"] = sum(r["mlflow_run_id"] is not None for r in results.values())
        document = {"input": path, "models": results, "bootstrap": config.bootstrap.to_dict(),
                    "xgb": config.xgb.to_dict(), "interactions": interactions}
        (ctx.output / "metrics.json").write_text(json.dumps(document, indent=2) + "\n")
        self._report(ctx, config, results, figures, path).save(ctx.output)
        eyes.unpersist()
        return len(prediction_table) // max(1, len(config.models))

    # ------------------------------------------------------------------ steps

    @staticmethod
    def _figures(config: GlaucomaClinicalConfig, results: dict[str, dict], shap_table: pd.DataFrame) -> dict:
        figures = {
            "roc_baseline_models.png": plots.roc_curves(
                {n: (np.array(r["roc"]["fpr"]), np.array(r["roc"]["tpr"]), r["auc"], r["ci_low"], r["ci_high"])
                 for n, r in results.items()}, "Test set ROC"),
            "auc_baseline_models.png": plots.auc_bars(
                {n: (r["auc"], r["ci_low"], r["ci_high"]) for n, r in results.items()},
                "BM1" if "BM1" in results else None, "test AUC (95% CI)", "Baseline models"),
        }
        if all(r["ptg_accuracy"] is not None for r in results.values()):
            figures["ptg_accuracy.png"] = plots.auc_bars(
                {n: (r["ptg_accuracy"], r["ptg_ci_low"], r["ptg_ci_high"]) for n, r in results.items()},
                "BM1" if "BM1" in results else None, "accuracy on PTG eyes (95% CI)", "Progress-to-glaucoma")
        for name, result in results.items():
            top = result["top_features"]
            figures[f"shap_top_{name}.png"] = plots.importance_bars([t[0] for t in top], [t[1] for t in top],
                                                                    f"{name}: mean |SHAP|")
        focus = config.interaction_model or config.models[-1]
        table = shap_table[shap_table["model"] == focus]
        ages = table[table["feature"] == "age"].set_index(["eid", "eye"])["value"] \
            if (table["feature"] == "age").any() else None
        for feature in config.dependence:
            rows = table[table["feature"] == feature]
            if rows.empty:
                continue
            figures[f"dependence_{focus}_{feature}.png"] = plots.dependence(
                rows["value"].to_numpy(), rows["shap"].to_numpy(), rows["label"].to_numpy(), feature, "label",
                categorical=True)
            if ages is not None and feature != "age":
                color = ages.reindex(pd.MultiIndex.from_frame(rows[["eid", "eye"]])).to_numpy()
                figures[f"dependence_{focus}_{feature}_by_age.png"] = plots.dependence(
                    rows["value"].to_numpy(), rows["shap"].to_numpy(), color, feature, "age")
        return figures

    @staticmethod
    def _interactions(ctx: JobContext, config: GlaucomaClinicalConfig, eyes: DataFrame, fit: gbt.XGBFit,
                      figures: dict) -> dict:
        pairs = [(config.interaction_with, other) for other in config.interactions]
        rows = eyes.where(F.col("split").isin(*config.shap_splits))
        total = rows.count()
        if total > config.interaction_eyes:
            rows = rows.sample(fraction=min(1.0, 1.2 * config.interaction_eyes / total), seed=config.xgb.seed)
            rows = rows.orderBy(F.xxhash64("eid", "eye")).limit(config.interaction_eyes)
        values = gbt.shap_interactions(rows, fit, pairs)
        values.write.mode("overwrite").parquet(str(ctx.output / "interactions.parquet"))
        table = ctx.spark.read.parquet(str(ctx.output / "interactions.parquet")).join(
            rows.select("eid", "eye", *{config.interaction_with, *config.interactions}), ["eid", "eye"]).toPandas()
        summary = {}
        for a, b in pairs:
            column = gbt.interaction_column(a, b)
            figures[f"interaction_{a}_{b}.png"] = plots.interaction(
                table[b].to_numpy(float), table[column].to_numpy(float), table[a].to_numpy(float), b, a)
            summary[f"{a}:{b}"] = {"mean_abs": float(np.abs(table[column]).mean())}
        return {"model": config.interaction_model, "pairs": summary}

    @staticmethod
    def _write_table(ctx: JobContext, frame: pd.DataFrame, name: str) -> None:
        ctx.spark.createDataFrame(frame).coalesce(1).write.mode("overwrite").parquet(str(ctx.output / name))

    @staticmethod
    def _log(ctx: JobContext, config: GlaucomaClinicalConfig, name: str, result: dict, figures: dict) -> str:
        keep = ("auc", "ci_low", "ci_high", "accuracy", "ptg_accuracy", "ptg_ci_low", "ptg_ci_high", "threshold",
                "rounds", "best_iteration")
        scores = {k: result[k] for k in keep if result.get(k) is not None}
        artifacts = [ctx.output / "models" / f"{name}.json",
                     *[ctx.output / "plots" / f for f in figures if name in f or f.startswith(("roc", "auc"))]]
        params = {**config.xgb.to_dict(), "model": name, "features": ",".join(result["features"])}
        return log_run(config.mlflow, ctx.output.parent, f"{ctx.job}-{name}", params, scores, artifacts,
                       {"scilens.job": ctx.job, "scilens.output": ctx.manifest.output})

    @staticmethod
    def _report(ctx: JobContext, config: GlaucomaClinicalConfig, results: dict, figures: dict, path: str) -> Report:
        report = Report("Glaucoma screening: clinical models")
        counts = Path(path).parent / "counts.csv"
        if counts.exists():
            report.add("Cohort", "Classes and exclusions of scilens glaucoma-cohort (dissertation Ch. 3 §3.2).",
                       tables={"counts": pd.read_csv(counts)})
        table = pd.DataFrame([{"model": n, "features": len(r["features"]), "test AUC": r["auc"],
                               "95% CI": f"{r['ci_low']:.3f}-{r['ci_high']:.3f}", "accuracy": r["accuracy"],
                               "PTG accuracy": r["ptg_accuracy"],
                               "PTG 95% CI": (f"{r['ptg_ci_low']:.2f}-{r['ptg_ci_high']:.2f}"
                                              if r["ptg_accuracy"] is not None else ""),
                               "rounds": r["rounds"]} for n, r in results.items()])
        boot = config.bootstrap
        report.add("Baseline models",
                   f"XGBoost on Spark with learning rate {config.xgb.learning_rate}, L2 {config.xgb.reg_lambda}, "
                   f"L1 {config.xgb.reg_alpha}, row subsampling {config.xgb.subsample}, early stopping on the "
                   f"validation split ({config.xgb.eval_metric}). {boot.resamples} bootstrap resamples of "
                   f"{boot.unit}s give the {boot.confidence:.0%} intervals.",
                   tables={"test metrics": table},
                   figures={k: v for k, v in figures.items() if k.startswith(("roc", "auc"))})
        if "ptg_accuracy.png" in figures:
            report.add("Progress-to-glaucoma", "Share of PTG eyes (healthy at the visit used, diagnosed later) "
                       "called glaucoma.", figures={"ptg_accuracy.png": figures["ptg_accuracy.png"]})
        report.add("SHAP", "TreeSHAP contributions (log-odds): top features and dependence plots.",
                   figures={k: v for k, v in figures.items() if k.startswith(("shap", "dependence"))})
        if config.interaction_model is not None:
            report.add("SHAP interactions", f"{config.interaction_model}: interaction values of "
                       f"{config.interaction_with} with {', '.join(config.interactions)}.",
                       figures={k: v for k, v in figures.items() if k.startswith("interaction")})
        return report


JOB = GlaucomaClinicalJob
