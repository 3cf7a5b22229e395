"""An executor killed on a real standalone cluster changes nothing in the output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from tests.cluster import ROOT, standalone_cluster
from tests.fault_job import ROWS

pytestmark = pytest.mark.integration


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


def _executor_jvm(python_worker: int) -> int:
    """The executor JVM above a Python worker (worker -> pyspark daemon -> JVM)."""
    pid = python_worker
    while pid > 1:
        pid = _parent(pid)
        with open(f"/proc/{pid}/cmdline", "rb") as cmd:
            if b"CoarseGrainedExecutorBackend" in cmd.read():
                return pid
    raise AssertionError(f"no executor JVM above Python worker {python_worker}")


def test_executor_killed_mid_task_changes_nothing_in_the_output(tmp_path):
    held = tmp_path / "held"
    held.mkdir()
    out = tmp_path / "out"
    spark_home = os.path.dirname(__import__("pyspark").__file__)
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYTHONPATH": str(ROOT), "SPARK_LOCAL_IP": "127.0.0.1"}
    with standalone_cluster(tmp_path / "cluster-state") as master:
        proc = subprocess.Popen(
            [f"{spark_home}/bin/spark-submit", "--master", master, "--conf", f"spark.pyspark.python={sys.executable}",
             "--conf", "spark.ui.enabled=false", str(ROOT / "tests" / "fault_job.py"), str(out), str(held)],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300  # bounded wait for the held attempt, not a fixed sleep
        while not (held / "held").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-3000:]
            time.sleep(0.5)
        os.kill(_executor_jvm(int((held / "held").read_text())), signal.SIGKILL)
        stderr = proc.communicate(timeout=600)[1]
    assert proc.returncode == 0, stderr[-3000:]
    table = pd.read_parquet(out / "squares.parquet").sort_values("id")
    assert table["id"].tolist() == list(range(ROWS))  # every row once: no loss, no duplicate from the lost attempt
    assert (table["square"] == table["id"] ** 2).all()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "ok" and manifest["spark_master"] == master
