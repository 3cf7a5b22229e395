"""The Databricks runtimes scilens targets: which package-set file describes each cluster ``spark_version``.

The files (``dbr-<version>-lts-ml.txt``, pip constraints of the runtime's Python packages) live in
``deploy/runtimes/`` of the repository; until they are copied there, in ``../shared/runtimes/`` beside the
repository. ``$SCILENS_RUNTIMES_DIR`` names another directory (a git worktree sits elsewhere than the clone
whose ``../shared`` holds them). This module is the one place that maps a runtime to its file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RUNTIMES: dict[str, str] = {
    "15.4.x-cpu-ml-scala2.12": "dbr-15.4-lts-ml.txt",
    "16.4.x-cpu-ml-scala2.12": "dbr-16.4-lts-ml.txt",
    "16.4.x-cpu-ml-scala2.13": "dbr-16.4-lts-ml.txt",
    "17.3.x-cpu-ml-scala2.13": "dbr-17.3-lts-ml.txt",
}
"""Cluster ``spark_version`` (Databricks Runtime ML, CPU) -> its package-set file."""

CURRENT = "17.3.x-cpu-ml-scala2.13"
"""The runtime of the current stack (Spark 4.0, TensorFlow 2.19): what the Databricks bundle's clusters run."""


def runtimes_dir() -> Path:
    """The directory holding the runtimes' package files; fails naming every place looked in."""
    candidates = [ROOT / "deploy" / "runtimes", ROOT.parent / "shared" / "runtimes"]
    if os.environ.get("SCILENS_RUNTIMES_DIR"):
        candidates.insert(0, Path(os.environ["SCILENS_RUNTIMES_DIR"]))
    for path in candidates:
        if path.is_dir():
            return path
    raise FileNotFoundError("no Databricks runtime package files; looked in " + ", ".join(map(str, candidates)))


def runtime_file(spark_version: str) -> Path:
    """The package file of the runtime a cluster names; fails for a runtime scilens does not list."""
    if spark_version not in RUNTIMES:
        raise KeyError(f"runtime {spark_version!r} is not one scilens lists: {sorted(RUNTIMES)}")
    return runtimes_dir() / RUNTIMES[spark_version]


def normalize(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_packages(spark_version: str) -> dict[str, str]:
    """Normalized package name -> version the runtime ships (``name~=version`` or ``name==version`` lines)."""
    packages = {}
    for line in runtime_file(spark_version).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:~=|==)\s*(\S+)", line)
        if match is None:
            raise ValueError(f"{runtime_file(spark_version)}: cannot read line {line!r}")
        packages[normalize(match.group(1))] = match.group(2)
    return packages
