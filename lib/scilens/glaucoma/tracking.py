"""MLflow logging of model runs: parameters, metrics, artifacts.

By default runs go to a SQLite store next to the job's output directory
(``sqlite:///<parent of --output>/mlflow.db``, artifacts in ``mlflow-artifacts/`` beside it),
so reruns accumulate as MLflow runs to compare, while each run's own outputs stay in the
(atomically replaced) output directory. Set ``tracking_uri`` to a server, or ``databricks``
on Databricks. MLflow's file store is not used (it raises on this stack).

:func:`log_clinical_model` and :func:`log_final_model` log the glaucoma jobs' models,
:func:`log_epochs` a training run epoch by epoch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scilens.core.config import Config, field

if TYPE_CHECKING:
    from scilens.glaucoma.config import GlaucomaClinicalConfig, GlaucomaFinalConfig

__all__ = ["CLINICAL_SCORES", "FINAL_SCORES", "MlflowConfig", "flat_params", "log_clinical_model", "log_epochs",
           "log_final_model", "log_run", "tracking_uri"]

CLINICAL_SCORES = ("auc", "ci_low", "ci_high", "accuracy", "ptg_accuracy", "ptg_ci_low", "ptg_ci_high", "threshold",
                   "rounds", "best_iteration")
"""Metrics of a glaucoma-clinical model logged to MLflow (those that are not None)."""
FINAL_SCORES = ("auc", "ci_low", "ci_high", "accuracy", "ptg_accuracy", "threshold", "rounds")
"""Metrics of the final model logged to MLflow (those that are not None)."""


@dataclass
class MlflowConfig(Config):
    """Where and whether runs are logged."""

    enabled: bool = field(True, "Log each model run to MLflow.")
    tracking_uri: str | None = field(None, "MLflow tracking URI; null: sqlite:///<output parent>/mlflow.db.")
    experiment: str = field("scilens-glaucoma", "MLflow experiment name.")


def tracking_uri(config: MlflowConfig, output_parent: Path) -> str:
    """The configured tracking URI, or the SQLite store next to the output directory."""
    return config.tracking_uri or f"sqlite:///{Path(output_parent).absolute() / 'mlflow.db'}"


def log_run(config: MlflowConfig, output_parent: Path, run_name: str, params: Mapping[str, object],
            metrics: Mapping[str, float], artifacts: Sequence[Path] = (), tags: Mapping[str, str] | None = None) -> str:
    """Log one run; returns its run id.

    Parameters
    ----------
    config
        Where to log.
    output_parent
        The directory holding the job's output (the default store and artifacts go there).
    run_name
        The MLflow run name.
    params, metrics
        Logged as they are (parameters as text; NaN metrics are left out).
    artifacts
        Files logged with the run.
    tags
        Run tags.

    Returns
    -------
    str
        The MLflow run id.
    """
    import mlflow

    uri = tracking_uri(config, output_parent)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(config.experiment)
    if experiment is None:
        location = None
        if uri.startswith("sqlite:///") and config.tracking_uri is None:
            location = (Path(output_parent).absolute() / "mlflow-artifacts").as_uri()
        experiment_id = client.create_experiment(config.experiment, artifact_location=location)
    else:
        experiment_id = experiment.experiment_id
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=dict(tags or {})) as run:
        mlflow.log_params({k: str(v) for k, v in params.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v == v})
        for path in artifacts:
            mlflow.log_artifact(str(path))
        return run.info.run_id


def _job_tags(job: str, manifest_output: str) -> dict[str, str]:
    return {"scilens.job": job, "scilens.output": manifest_output}


def log_clinical_model(config: GlaucomaClinicalConfig, output: Path, job: str, manifest_output: str, name: str,
                       result: Mapping, figures: Sequence[str]) -> str:
    """Log one glaucoma-clinical model: XGBoost parameters, its metrics, its model file and figures.

    Parameters
    ----------
    config
        The job's config (``mlflow`` and ``xgb``).
    output
        The job's output directory (``models/<name>.json`` and ``plots/`` written).
    job, manifest_output
        The job's name and final output path, as run tags.
    name
        The model (``BM1`` ...); the run is ``<job>-<name>``.
    result
        The model's entry of ``metrics.json``.
    figures
        Figure file names; the model's own and the ROC / AUC comparisons are logged.

    Returns
    -------
    str
        The MLflow run id.
    """
    scores = {k: result[k] for k in CLINICAL_SCORES if result.get(k) is not None}
    artifacts = [output / "models" / f"{name}.json",
                 *[output / "plots" / f for f in figures if name in f or f.startswith(("roc", "auc"))]]
    params = {**config.xgb.to_dict(), "model": name, "features": ",".join(result["features"])}
    return log_run(config.mlflow, output.parent, f"{job}-{name}", params, scores, artifacts,
                   _job_tags(job, manifest_output))


def log_final_model(config: GlaucomaFinalConfig, output: Path, job: str, manifest_output: str, result: Mapping,
                    n_features: int) -> str:
    """Log the final model: XGBoost parameters, feature count, baseline, its metrics, model file and figures.

    Parameters
    ----------
    config
        The job's config (``mlflow``, ``xgb``, ``baseline``).
    output
        The job's output directory (``models/final.json`` and ``plots/`` written).
    job, manifest_output
        The job's name and final output path, as run tags.
    result
        The final model's entry of ``metrics.json``.
    n_features
        Features of the final model.

    Returns
    -------
    str
        The MLflow run id.
    """
    scores = {k: result[k] for k in FINAL_SCORES if result.get(k) is not None}
    params = {**config.xgb.to_dict(), "features": n_features, "baseline": config.baseline}
    artifacts = [output / "models" / "final.json", *(output / "plots").glob("*.png")]
    return log_run(config.mlflow, output.parent, f"{job}-final", params, scores, artifacts,
                   _job_tags(job, manifest_output))


def flat_params(prefix: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Nested config values as flat ``prefix.key.subkey`` parameters (MLflow's parameters are flat)."""
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(flat_params(f"{prefix}.{key}", value))
        else:
            out[f"{prefix}.{key}"] = value
    return out


def log_epochs(config: MlflowConfig, output: Path, run_name: str, params: dict, history: list[dict],
               artifacts: list[Path], tags: Mapping[str, str]) -> str:
    """One MLflow run: parameters, the best epoch's metrics, artifacts, and every epoch's metrics.

    Parameters
    ----------
    config : MlflowConfig
        Where to track.
    output : Path
        The job's output directory; the default tracking store sits beside it.
    run_name : str
        The run's name.
    params : dict
        Its parameters.
    history : list of dict
        One dict of metrics per epoch, with ``epoch`` and ``val_auc``; logged as each metric's history.
    artifacts : list of Path
        Files stored with the run.
    tags : mapping
        The run's tags.

    Returns
    -------
    str
        The run id.
    """
    import time

    from mlflow import MlflowClient
    from mlflow.entities import Metric

    best = max(history, key=lambda h: h["val_auc"] if h["val_auc"] == h["val_auc"] else -1.0)
    summary = {f"best_{k}": v for k, v in best.items()}
    run_id = log_run(config, output.parent, run_name, params, summary, artifacts, dict(tags))
    now = int(time.time() * 1000)
    metrics = [Metric(key, float(value), now, int(h["epoch"])) for h in history for key, value in h.items()
               if key != "epoch" and value == value]
    MlflowClient(tracking_uri(config, output.parent)).log_batch(run_id, metrics=metrics)
    return run_id
