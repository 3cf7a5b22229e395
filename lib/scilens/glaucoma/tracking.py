"""MLflow logging of model runs: parameters, metrics, artifacts.

By default runs go to a SQLite store next to the job's output directory
(``sqlite:///<parent of --output>/mlflow.db``, artifacts in ``mlflow-artifacts/`` beside it),
so reruns accumulate as MLflow runs to compare, while each run's own outputs stay in the
(atomically replaced) output directory. Set ``tracking_uri`` to a server, or ``databricks``
on Databricks. MLflow's file store is not used (it raises on this stack).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from scilens.core.config import Config, field

__all__ = ["MlflowConfig", "log_run", "tracking_uri"]


@dataclass
class MlflowConfig(Config):
    """Where and whether runs are logged."""

    enabled: bool = field(True, "Log each model run to MLflow.")
    tracking_uri: str | None = field(None, "MLflow tracking URI; null: sqlite:///<output parent>/mlflow.db.")
    experiment: str = field("scilens-glaucoma", "MLflow experiment name.")


def tracking_uri(config: MlflowConfig, output_parent: Path) -> str:
    return config.tracking_uri or f"sqlite:///{Path(output_parent).absolute() / 'mlflow.db'}"


def log_run(config: MlflowConfig, output_parent: Path, run_name: str, params: Mapping[str, object],
            metrics: Mapping[str, float], artifacts: Sequence[Path] = (), tags: Mapping[str, str] | None = None) -> str:
    """Log one run; returns its run id."""
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
