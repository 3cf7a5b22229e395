"""Evaluation of the glaucoma study's XGBoost models on the cohort's eyes (dissertation Ch. 3 §3.2).

* :func:`check_eyes` -- fail fast on an eye table the models cannot use;
* :func:`score_eyes` -- every eye's probability (and SHAP contributions on some splits), on Spark;
* :func:`evaluate_model` -- test AUC and accuracy with bootstrap CIs, threshold, PTG accuracy, ROC and
  the SHAP ranking of one scored model (pandas, on the driver);
* :func:`shap_interaction_summary` -- SHAP interaction values of feature pairs on a sample of eyes;
* :func:`eyes_with_images` -- the cohort's eyes joined to their image probabilities (final model).

``glaucoma-clinical`` (BM1-BM3) and ``glaucoma-final`` (images + BM3) evaluate their models with
the same functions, so their metrics compare.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from scilens.core.inputs import InputError
from scilens.glaucoma import features as feature_lists
from scilens.glaucoma import metrics, plots
from scilens.glaucoma import models as gbt
from scilens.glaucoma.config import GlaucomaClinicalConfig

__all__ = ["REQUIRED_COLUMNS", "SPLIT_NAMES", "check_eyes", "evaluate_model", "eyes_with_images",
           "score_eyes", "shap_interaction_summary", "write_pandas"]

SPLIT_NAMES = ("train", "validation", "test", "ptg")
REQUIRED_COLUMNS = ("eid", "eye", "label", "split")


def check_eyes(eyes: DataFrame, features: list[str], path: str) -> dict[str, dict[str, int]]:
    """Fail fast on an eye table the models cannot use.

    Parameters
    ----------
    eyes
        Eye rows (``eid``, ``eye``, ``label``, ``split`` and the features).
    features
        Feature columns the models read; each must be numeric.
    path
        Where ``eyes`` was read from, for the error messages.

    Returns
    -------
    dict
        Eyes per split and label.

    Raises
    ------
    InputError
        A column is missing or not a number, or train, validation or test lacks a class.
    """
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
    """Probability of every eye (and its SHAP contributions on ``shap_splits``), as pandas.

    Parameters
    ----------
    fit
        A fitted model.
    eyes
        Eye rows with the model's features.
    shap_splits
        Splits whose eyes get SHAP contributions (``shap``; None elsewhere).

    Returns
    -------
    pandas.DataFrame
        ``eid``, ``eye``, ``label``, ``split``, the features, ``probability``, ``shap``; sorted by eye.
    """
    keys = ["eid", "eye", "label", "split", *fit.features]
    with_shap = gbt.predict(fit, eyes.where(F.col("split").isin(*shap_splits)), contributions=True)
    without = gbt.predict(fit, eyes.where(~F.col("split").isin(*shap_splits)))
    a: pd.DataFrame = with_shap.select(*keys, "probability", "shap").toPandas()
    b: pd.DataFrame = without.select(*keys, "probability").toPandas()
    b["shap"] = None
    return pd.concat([a, b], ignore_index=True).sort_values(["eid", "eye"]).reset_index(drop=True)


def evaluate_model(name: str, fit: gbt.XGBFit, scored: pd.DataFrame,
                   config: GlaucomaClinicalConfig) -> tuple[dict, pd.DataFrame]:
    """Test AUC and accuracy with CIs, PTG accuracy, ROC and SHAP ranking of a scored model; and its SHAP rows.

    Parameters
    ----------
    name
        The model's name (the ``model`` column of the SHAP rows).
    fit
        The fitted model.
    scored
        Its :func:`score_eyes` table.
    config
        Threshold, bootstrap and ``top_k`` settings.

    Returns
    -------
    result : dict
        The model's entry of ``metrics.json``.
    shap_long : pandas.DataFrame
        One row per eye with SHAP values and feature: ``eid``, ``eye``, ``split``, ``label``, ``model``,
        ``feature``, ``value``, ``shap``.
    """
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


def shap_interaction_summary(spark: SparkSession, config: GlaucomaClinicalConfig, eyes: DataFrame,
                             fit: gbt.XGBFit, output: Path) -> tuple[dict, dict[str, bytes]]:
    """SHAP interaction values of ``interaction_with`` with each of ``interactions``, on a seeded sample of eyes.

    Writes ``output/interactions.parquet``.

    Parameters
    ----------
    spark
        The session (reads the written table back).
    config
        ``interaction_model``, ``interaction_with``, ``interactions``, ``interaction_eyes``, ``shap_splits``
        and the sampling seed ``xgb.seed``.
    eyes
        Eye rows with the model's features.
    fit
        The interaction model.
    output
        The job's output directory.

    Returns
    -------
    summary : dict
        ``model`` and per pair ``a:b`` the mean |interaction value|, for ``metrics.json``.
    figures : dict
        ``interaction_<a>_<b>.png`` per pair.
    """
    pairs = [(config.interaction_with, other) for other in config.interactions]
    rows = eyes.where(F.col("split").isin(*config.shap_splits))
    total = rows.count()
    if total > config.interaction_eyes:
        rows = rows.sample(fraction=min(1.0, 1.2 * config.interaction_eyes / total), seed=config.xgb.seed)
        rows = rows.orderBy(F.xxhash64("eid", "eye")).limit(config.interaction_eyes)
    values = gbt.shap_interactions(rows, fit, pairs)
    values.write.mode("overwrite").parquet(str(output / "interactions.parquet"))
    table: pd.DataFrame = spark.read.parquet(str(output / "interactions.parquet")).join(
        rows.select("eid", "eye", *{config.interaction_with, *config.interactions}), ["eid", "eye"]).toPandas()
    summary, figures = {}, {}
    for a, b in pairs:
        column = gbt.interaction_column(a, b)
        figures[f"interaction_{a}_{b}.png"] = plots.interaction(
            table[b].to_numpy(float), table[column].to_numpy(float), table[a].to_numpy(float), b, a)
        summary[f"{a}:{b}"] = {"mean_abs": float(np.abs(table[column]).mean())}
    return {"model": config.interaction_model, "pairs": summary}, figures


def eyes_with_images(eyes: DataFrame, vectors: DataFrame, baseline: list[str],
                     vectors_path: str) -> tuple[DataFrame, list[str]]:
    """The cohort's eyes that have image probabilities, joined to them (cached), checked for the models.

    Parameters
    ----------
    eyes
        ``eyes.parquet`` of glaucoma-cohort.
    vectors
        ``retina_vectors.parquet`` of glaucoma-infer.
    baseline
        The clinical features the final model adds the images to.
    vectors_path
        Where ``vectors`` was read from, for the error messages.

    Returns
    -------
    data : DataFrame
        Eye rows with the image probability columns (cached; unpersist when done).
    image_features : list of str
        The image probability columns (:func:`scilens.glaucoma.features.image_features`).
    """
    image_features = feature_lists.image_features(vectors.columns)
    if not image_features:
        raise InputError(f"{vectors_path}: no image probability columns "
                         f"({feature_lists.SCAN_PREFIX}###, {feature_lists.CFP_FEATURE})")
    data = eyes.join(vectors.select("eid", "eye", *image_features), ["eid", "eye"]).cache()
    check_eyes(data, baseline, vectors_path)
    return data, image_features


def write_pandas(spark: SparkSession, frame: pd.DataFrame, path: Path) -> None:
    """Write a driver-side table as one Parquet file set at ``path``."""
    spark.createDataFrame(frame).coalesce(1).write.mode("overwrite").parquet(str(path))
