"""The run manifest: what a job read, how it was configured, what it did, how long it took.

Written as ``<output>/manifest.json`` by every job.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import platform
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Manifest", "StepRecord", "package_versions", "redact"]

SECRET_KEY = re.compile(r"secret|passw(or)?d|token|credential|private[._-]?key|api[._-]?key|access[._-]?key|"
                        r"[._]key$", re.IGNORECASE)
"""Names of settings whose values a manifest never shows (``fs.s3a.secret.key``, ``*password*``, tokens)."""
REDACTED = "<redacted>"


def redact(value: Any, key: str = "") -> Any:
    """``value`` with the values of secret-looking keys (at any depth) replaced by ``<redacted>``.

    Strings of the form ``name=value`` (command-line ``--set`` arguments) are redacted by their name.
    """
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    if key and SECRET_KEY.search(key) and not isinstance(value, (bool, int, float)) and value is not None:
        return REDACTED
    if isinstance(value, str) and "=" in value:
        name, _, rest = value.partition("=")
        if SECRET_KEY.search(name) and rest:
            return f"{name}={REDACTED}"
    return value

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
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


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
    input_files: int = 0
    """Input files (and unlistable directories) the driver found; each ends in the outputs or in ``_rejected``."""
    rejected_examples: list[dict[str, str]] = field(default_factory=list)

    def write(self, path: str | Path) -> Path:
        """Write the manifest as indented JSON to ``path``."""
        path = Path(path)
        path.write_text(json.dumps(redact(asdict(self)), indent=2, default=str) + "\n")
        return path

    def finish(self, status: str) -> None:
        """Record the run's final ``status`` and the time it finished."""
        self.status = status
        self.finished = _now()
