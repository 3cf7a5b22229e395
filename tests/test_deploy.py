"""Entry points, job registry and shipped configs agree with each other.

Convention: ``jobs/<entry>.py`` runs one registered job; its config is ``conf/<entry>.yaml`` and its
Databricks job ``deploy/databricks/resources/<entry>.yml`` (checked by ``test_databricks_bundle.py``).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from scilens import cli
from scilens.core.config import load_config

ROOT = Path(__file__).resolve().parents[1]


DEPRECATED = "Deprecated alias of ``jobs/"


def job_entry_points(deprecated: bool = False) -> dict[str, str]:
    """jobs/<stem>.py -> the scilens job it runs (also read by the Databricks bundle test).

    Deprecated aliases (old entry-point names kept for one release) are listed only when asked for.
    """
    entries = {}
    for path in sorted((ROOT / "jobs").glob("*.py")):
        if path.read_text().startswith(f'"""{DEPRECATED}') != deprecated:
            continue
        match = re.search(r'main\(\["([\w-]+)"', path.read_text())
        assert match, f"{path} does not call scilens.cli.main with a job name"
        entries[path.stem] = match.group(1)
    return entries


def test_every_job_has_one_entry_point():
    runs = list(job_entry_points().values())
    assert sorted(runs) == sorted(cli.JOBS)


def entry_stem(name: str) -> str:
    """The entry point's stem of a job: its name with ``-`` as ``_``, plus ``_`` for a standard-library name.

    ``spark-submit jobs/<stem>.py`` puts ``jobs/`` first on ``sys.path``, so a ``jobs/select.py`` would be
    imported for the standard library's ``select`` by every job (and break them all under spark-submit).
    """
    stem = name.replace("-", "_")
    return f"{stem}_" if stem in sys.stdlib_module_names else stem


def test_no_entry_point_shadows_a_standard_library_module():
    shadowing = [p.name for p in (ROOT / "jobs").glob("*.py") if p.stem in sys.stdlib_module_names]
    assert not shadowing, f"jobs/ is first on sys.path under spark-submit; rename {shadowing}"


def test_entry_points_are_named_after_their_jobs_and_old_names_say_they_are_deprecated():
    for stem, name in job_entry_points().items():
        assert stem == entry_stem(name), f"jobs/{stem}.py runs {name}"
    aliases = job_entry_points(deprecated=True)
    assert aliases, "the old entry-point names stay one release"
    for stem, name in aliases.items():
        text = (ROOT / "jobs" / f"{stem}.py").read_text()
        new = name.replace("-", "_")
        assert f"{DEPRECATED}{new}.py``" in text and f"use jobs/{new}.py" in text, f"jobs/{stem}.py"


def test_shipped_configs():
    for name in job_entry_points().values():
        job = cli.load_job(name)
        load_config(job.config_class, ROOT / "conf" / f"{name.replace('-', '_')}.yaml")  # the shipped config is valid
