"""The run manifest: what a job read, how it was configured, what it did, how long it took.

Written as ``<output>/manifest.json`` by every job.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import platform
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Manifest", "StepRecord", "package_versions"]

TRACKED_PACKAGES = (
    "scilens", "pyspark", "numpy", "pandas", "pyarrow", "scipy", "nibabel", "dipy", "astropy",
    "photutils", "reproject", "scikit-learn", "xgboost", "tensorflow-cpu", "petastorm", "horovod",
)


def package_versions() -> dict[str, str]:
    """Versions of the packages scilens results depend on (those installed)."""
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class StepRecord:
    """Timing and row counts of one job step."""

    name: str
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class Manifest:
    """Everything needed to tell what a run was; see :meth:`write`."""

    job: str
    inputs: list[str]
    config: dict[str, Any]
    output: str = ""
    spark_master: str = ""
    spark_version: str = ""
    application_id: str = ""
    command: list[str] = field(default_factory=lambda: list(sys.argv))
    versions: dict[str, str] = field(default_factory=package_versions)
    started: str = field(default_factory=_now)
    finished: str = ""
    status: str = "running"
    steps: list[StepRecord] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    rejected_examples: list[dict[str, str]] = field(default_factory=list)

    def write(self, path: str | Path) -> Path:
        """Write the manifest as indented JSON to ``path``."""
        path = Path(path)
        path.write_text(json.dumps(asdict(self), indent=2, default=str) + "\n")
        return path

    def finish(self, status: str) -> None:
        self.status = status
        self.finished = _now()
