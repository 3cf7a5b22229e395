"""What ``glaucoma-train`` records of a distributed training run: the ranks' summary and the MLflow run.

The training itself is generic (:mod:`scilens.vision.train_common` and its two backends); these
functions turn the ranks' results (one dict per rank: ``rank``, ``history``, ``weights_sha256``,
``best_epoch``, ``best_val_auc``) into the job's records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from scilens.glaucoma.tracking import MlflowConfig

__all__ = ["flat_params", "log_epochs", "ranks_summary"]


def ranks_summary(results: Sequence[Mapping[str, Any]], backend: str) -> dict[str, Any]:
    """The content of ``ranks.json``: each rank's weight digest and losses, and whether the digests agree."""
    digests = {r["rank"]: r["weights_sha256"] for r in results}
    return {"backend": backend, "ranks": [{"rank": r["rank"], "weights_sha256": r["weights_sha256"],
                                           "loss": [h["loss"] for h in r["history"]]} for r in results],
            "identical_weights": len(set(digests.values())) == 1,
            "best_epoch": results[0]["best_epoch"], "best_val_auc": results[0]["best_val_auc"]}


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
        Where to track (:mod:`scilens.glaucoma.tracking`).
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

    from scilens.glaucoma.tracking import log_run, tracking_uri

    best = max(history, key=lambda h: h["val_auc"] if h["val_auc"] == h["val_auc"] else -1.0)
    summary = {f"best_{k}": v for k, v in best.items()}
    run_id = log_run(config, output.parent, run_name, params, summary, artifacts, dict(tags))
    now = int(time.time() * 1000)
    metrics = [Metric(key, float(value), now, int(h["epoch"])) for h in history for key, value in h.items()
               if key != "epoch" and value == value]
    MlflowClient(tracking_uri(config, output.parent)).log_batch(run_id, metrics=metrics)
    return run_id
