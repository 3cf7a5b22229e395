"""Gradient-boosted trees on Spark for the glaucoma models, with TreeSHAP (dissertation Ch. 3 §3.2).

One way to train, used by ``glaucoma-clinical`` (BM1-BM3) and the imaging engineer's final
model alike::

    fit = fit_xgb(train, validation, features, XGBParams())   # xgboost.spark.SparkXGBClassifier
    scored = predict(fit, eyes, contributions=True)            # + probability, shap (TreeSHAP)
    pairs = shap_interactions(eyes, fit, [("age", "iop")])     # + SHAP interaction values

``train`` and ``validation`` are DataFrames with a ``label`` column (``glaucoma``/``ptg`` are
positive, ``healthy`` negative) and the feature columns (numeric; null = missing). Early
stopping watches the validation rows. :func:`fit_xgb_local` is the same model with
single-node ``xgboost`` on pandas, the reference the Spark fit is checked against.

Hyper-parameters (:class:`XGBParams`) default to the paper's: learning rate 0.001, early
stopping, L2 1.0, no L1, no column sampling, row subsampling 0.7. The paper does not give the
tree depth (we keep XGBoost's 6) nor the early-stopping metric: validation log-loss, which at
this learning rate keeps falling for thousands of rounds, so ``n_estimators`` caps the rounds.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from scilens.core.config import Config, field

__all__ = ["POSITIVE_LABELS", "XGBFit", "XGBParams", "fit_xgb", "fit_xgb_local", "interaction_column", "predict",
           "shap_interactions", "target"]

POSITIVE_LABELS = ("glaucoma", "ptg")
"""Labels the models call glaucoma (1); ``healthy`` is 0."""

FEATURES_COLUMN = "_features"
TARGET_COLUMN = "_target"
VALIDATION_COLUMN = "_is_validation"


@dataclass
class XGBParams(Config):
    """Gradient-boosted trees, the paper's hyper-parameters by default."""

    learning_rate: float = field(0.001, "Shrinkage per round (paper: 0.001).", min=0.0)
    n_estimators: int = field(5000, "Most boosting rounds; early stopping usually ends sooner.", min=1)
    early_stopping_rounds: int = field(200, "Stop after this many rounds without validation improvement.", min=1)
    eval_metric: str = field("logloss", "Validation metric early stopping watches.",
                             choices=("logloss", "auc", "error"))
    reg_lambda: float = field(1.0, "L2 regularisation (paper: 1.0).", min=0.0)
    reg_alpha: float = field(0.0, "L1 regularisation (paper: none).", min=0.0)
    colsample_bytree: float = field(1.0, "Share of features per tree (paper: no column sampling).", min=0.0, max=1.0)
    subsample: float = field(0.7, "Share of rows per tree (paper: bagging 70%).", min=0.0, max=1.0)
    max_depth: int = field(6, "Tree depth (not given in the paper; XGBoost's default).", min=1)
    num_workers: int = field(2, "XGBoost workers = Spark tasks training together (at most the cores).", min=1)
    seed: int = field(0, "Random seed of row subsampling.")

    def booster_params(self) -> dict[str, Any]:
        """Parameters shared by the Spark and the single-node estimator."""
        return {"learning_rate": self.learning_rate, "n_estimators": self.n_estimators,
                "early_stopping_rounds": self.early_stopping_rounds, "eval_metric": self.eval_metric,
                "reg_lambda": self.reg_lambda, "reg_alpha": self.reg_alpha,
                "colsample_bytree": self.colsample_bytree, "subsample": self.subsample, "max_depth": self.max_depth,
                "random_state": self.seed, "tree_method": "hist"}


@dataclass
class XGBFit:
    """A trained model: the Spark model, its features (in order) and where early stopping ended."""

    model: Any  # xgboost.spark.SparkXGBClassifierModel
    features: list[str]
    best_iteration: int
    rounds: int

    def booster(self) -> Any:
        """The ``xgboost.Booster`` (save with ``booster().save_model("model.json")``)."""
        return self.model.get_booster()

    @property
    def iteration_range(self) -> tuple[int, int]:
        """Trees used to predict: up to the best validation iteration."""
        return (0, self.best_iteration + 1)


def target(df: DataFrame, label_col: str = "label") -> DataFrame:
    """``df`` with ``_target``: 1 for glaucoma or PTG, 0 for healthy."""
    return df.withColumn(TARGET_COLUMN, F.col(label_col).isin(*POSITIVE_LABELS).cast("int"))


def _with_features(df: DataFrame, features: Sequence[str]) -> DataFrame:
    # One array column rather than SparkXGB's list-of-columns: xgboost 3.2's list path breaks on
    # Arrow batches without validation rows; NaN (not null) is what XGBoost reads as missing.
    values = [F.coalesce(F.col(c).cast("double"), F.lit(float("nan"))) for c in features]
    return df.withColumn(FEATURES_COLUMN, F.array(*values))


def fit_xgb(train: DataFrame, validation: DataFrame, features: Sequence[str], params: XGBParams,
            label_col: str = "label") -> XGBFit:
    """Train ``xgboost.spark.SparkXGBClassifier`` on ``train``, early stopping on ``validation``.

    Parameters
    ----------
    train, validation : DataFrame
        Rows with ``label_col`` (glaucoma/ptg/healthy) and the ``features``.
    features : sequence of str
        Numeric feature columns, in the order the model (and its SHAP values) uses.
    params : XGBParams
        Hyper-parameters and ``num_workers``.
    """
    from xgboost.spark import SparkXGBClassifier

    features = list(features)
    both = (target(train, label_col).withColumn(VALIDATION_COLUMN, F.lit(False))
            .unionByName(target(validation, label_col).withColumn(VALIDATION_COLUMN, F.lit(True))))
    both = _with_features(both, features).select(FEATURES_COLUMN, TARGET_COLUMN, VALIDATION_COLUMN)
    estimator = SparkXGBClassifier(
        features_col=FEATURES_COLUMN, label_col=TARGET_COLUMN, validation_indicator_col=VALIDATION_COLUMN,
        num_workers=params.num_workers, verbosity=0, verbose=False,
        force_repartition=True,  # a barrier stage cannot hold the union of train and validation
        **params.booster_params())
    model = estimator.fit(both)
    booster = model.get_booster()
    rounds = booster.num_boosted_rounds()
    best = booster.attr("best_iteration")
    return XGBFit(model, features, int(best) if best is not None else rounds - 1, rounds)


def predict(fit: XGBFit, df: DataFrame, contributions: bool = False) -> DataFrame:
    """``df`` with ``probability`` (P(glaucoma), double) and, with ``contributions``, ``shap``.

    ``shap`` is TreeSHAP from the model's ``pred_contrib_col``: one value per feature of
    ``fit.features`` (log-odds), then the bias; they sum to the margin.
    """
    from pyspark.ml.functions import vector_to_array

    model = fit.model.copy({fit.model.pred_contrib_col: "_contrib"}) if contributions else fit.model
    scored = model.transform(_with_features(df, fit.features))
    scored = scored.withColumn("probability", vector_to_array(F.col("probability"))[1])
    if contributions:
        scored = scored.withColumn("shap", F.col("_contrib")[0]).drop("_contrib")
    return scored.drop(FEATURES_COLUMN, "rawPrediction", "prediction")


def fit_xgb_local(train: pd.DataFrame, validation: pd.DataFrame, features: Sequence[str], params: XGBParams,
                  label_col: str = "label", n_jobs: int = 1) -> Any:
    """Single-node reference: ``xgboost.XGBClassifier`` with the same parameters, on pandas."""
    import xgboost

    features = list(features)
    model = xgboost.XGBClassifier(n_jobs=n_jobs, verbosity=0, **params.booster_params())
    y_train = train[label_col].isin(POSITIVE_LABELS).astype(int)
    y_valid = validation[label_col].isin(POSITIVE_LABELS).astype(int)
    model.fit(train[features].astype(float), y_train, eval_set=[(validation[features].astype(float), y_valid)],
              verbose=False)
    return model


def interaction_column(a: str, b: str) -> str:
    """Name of the SHAP interaction column of features ``a`` and ``b``."""
    return f"interaction_{a}__{b}"


def shap_interactions(df: DataFrame, fit: XGBFit, pairs: Sequence[tuple[str, str]],
                      keys: Sequence[str] = ("eid", "eye")) -> DataFrame:
    """SHAP interaction values of feature ``pairs`` for every row of ``df``, on the executors.

    Returns ``keys`` plus one column per pair (:func:`interaction_column`): the interaction
    value phi_ab + phi_ba (log-odds), i.e. the pair's joint effect beyond the two main effects.
    """
    index = {name: i for i, name in enumerate(fit.features)}
    for a, b in pairs:
        for name in (a, b):
            if name not in index:
                raise ValueError(f"interaction feature {name!r} is not a model feature ({', '.join(fit.features)})")
    raw = bytes(fit.booster().save_raw("json"))
    spark = df.sparkSession
    model_bytes = spark.sparkContext.broadcast(raw)
    iteration_range = fit.iteration_range
    features = list(fit.features)
    schema = T.StructType([*(df.schema[k] for k in keys),
                           *(T.StructField(interaction_column(a, b), T.DoubleType()) for a, b in pairs)])

    def compute(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import xgboost

        booster = xgboost.Booster()
        booster.load_model(bytearray(model_bytes.value))
        booster.set_param({"nthread": 1})  # Spark runs one task per core
        for batch in batches:
            if batch.empty:
                continue
            matrix = xgboost.DMatrix(batch[features].astype(float).to_numpy(), missing=np.nan)
            values = booster.predict(matrix, pred_interactions=True, iteration_range=iteration_range)
            out = batch[list(keys)].reset_index(drop=True)
            for a, b in pairs:
                out[interaction_column(a, b)] = values[:, index[a], index[b]] + values[:, index[b], index[a]]
            yield out

    return df.select(*keys, *features).mapInPandas(compute, schema)
