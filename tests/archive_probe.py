"""``deploy/submit.sh ... tests/archive_probe.py REPORT <job> <job args...>``: run a scilens job, then report
which Python the executors ran and where it found scilens and pyspark.

Used by ``test_integration_archive``: with ``--env-archive`` every task must run the unpacked archive's Python.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pyspark.sql import SparkSession

from scilens import cli

PROBES = 8


def where(_: int) -> dict:
    """Runs on an executor: its Python, prefix, working directory, environment, and where imports come from."""
    import os
    import sys

    import pyspark

    import scilens

    return {"executable": sys.executable, "prefix": sys.prefix, "cwd": os.getcwd(), "scilens": scilens.__file__,
            "pyspark": pyspark.__file__, "environ": dict(os.environ)}


def main(argv: list[str]) -> int:
    report, job_args = Path(argv[0]), argv[1:]
    code = cli.main(job_args)
    spark = SparkSession.getActiveSession()
    tasks = spark.sparkContext.parallelize(range(PROBES), PROBES).map(where).collect()
    report.write_text(json.dumps({"exit": code, "tasks": tasks}))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
