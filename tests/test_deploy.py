"""Entry points, job registry, shipped configs and Databricks specs agree with each other.

Convention: ``jobs/<entry>.py`` runs one registered job; its config is
``conf/<entry>.yaml`` and its Databricks spec ``deploy/databricks/<entry>.json``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from scilens import cli
from scilens.core.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def _entries() -> dict[str, str]:
    """entry stem -> job name it runs."""
    entries = {}
    for path in sorted((ROOT / "jobs").glob("*.py")):
        match = re.search(r'main\(\["([\w-]+)"', path.read_text())
        assert match, f"{path} does not call scilens.cli.main with a job name"
        entries[path.stem] = match.group(1)
    return entries


def test_every_job_has_one_entry_point():
    runs = list(_entries().values())
    assert sorted(runs) == sorted(cli.JOBS)


def test_shipped_configs_and_databricks_specs():
    for stem, name in _entries().items():
        job = cli.load_job(name)
        load_config(job.config_class, ROOT / "conf" / f"{stem}.yaml")  # the shipped config is valid
        spec = json.loads((ROOT / "deploy" / "databricks" / f"{stem}.json").read_text())
        for task in spec["tasks"]:
            python_task = task["spark_python_task"]
            assert python_task["python_file"] == f"jobs/{stem}.py"
            params = python_task["parameters"]
            assert "--input" in params and "--output" in params
            assert (ROOT / params[params.index("--config") + 1]).is_file()
            assert any(lib.get("whl", "").endswith(".whl") for lib in task["libraries"])
