"""MLflow logging of model runs: parameters, metrics, artifacts.

By default runs go to a SQLite store next to the job's output directory
(``sqlite:///<parent of --output>/mlflow.db``, artifacts in ``mlflow-artifacts/`` beside it),
so reruns accumulate as MLflow runs to compare, while each run's own outputs stay in the
(atomically replaced) output directory. Set ``tracking_uri`` to a server, or ``databricks``
on Databricks. MLflow's file store is not used (it raises on this stack).

:func:`log_clinical_model` and :func:`log_final_model` log the glaucoma jobs' models.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from scilens.core.config import Config, field

if TYPE_CHECKING:
    from scilens.glaucoma.config import GlaucomaClinicalConfig, GlaucomaFinalConfig

__all__ = ["CLINICAL_SCORES", "FINAL_SCORES", "MlflowConfig", "log_clinical_model", "log_final_model", "log_run",
           "tracking_uri"]

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
