"""Entry points, job registry and shipped configs agree with each other.

Convention: ``jobs/<entry>.py`` runs one registered job; its config is ``conf/<entry>.yaml`` and its
Databricks job ``deploy/databricks/resources/<entry>.yml`` (checked by ``test_databricks_bundle.py``).
"""

from __future__ import annotations

import re
from pathlib import Path

from scilens import cli
from scilens.core.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def job_entry_points() -> dict[str, str]:
    """jobs/<stem>.py -> the scilens job it runs (also read by the Databricks bundle test)."""
    entries = {}
    for path in sorted((ROOT / "jobs").glob("*.py")):
        match = re.search(r'main\(\["([\w-]+)"', path.read_text())
        assert match, f"{path} does not call scilens.cli.main with a job name"
        entries[path.stem] = match.group(1)
    return entries


def test_every_job_has_one_entry_point():
    runs = list(job_entry_points().values())
    assert sorted(runs) == sorted(cli.JOBS)


def test_shipped_configs():
    for stem, name in job_entry_points().items():
        job = cli.load_job(name)
        load_config(job.config_class, ROOT / "conf" / f"{stem}.yaml")  # the shipped config is valid
