"""The local standalone cluster of deploy/local-cluster.sh, as a test helper."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def standalone_cluster(state_dir: Path, scrubbed: bool = False) -> Iterator[str]:
    """Start a master and two one-core workers on free ports; yield the master URL; stop them.

    ``scrubbed``: the nodes start with an emptied environment and Spark copied out of the venv, so they
    cannot find this Python (``SCILENS_SCRUB_ENV`` of deploy/local-cluster.sh).
    """
    env = {**os.environ, "SCILENS_MASTER_PORT": str(free_port()), "SCILENS_MASTER_UI_PORT": str(free_port()),
           "SCILENS_CLUSTER_DIR": str(state_dir), "PYTHON": sys.executable, "SCILENS_SCRUB_ENV": str(int(scrubbed))}
    script = str(ROOT / "deploy" / "local-cluster.sh")
    subprocess.run([script, "start"], env=env, check=True, timeout=180)
    try:
        yield f"spark://127.0.0.1:{env['SCILENS_MASTER_PORT']}"
    finally:
        subprocess.run([script, "stop"], env=env, check=True, timeout=120)


def submit(master: str, job: str, *args: str, timeout: int = 900, env_archive: Path | None = None,
           conf: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``deploy/submit.sh --master M [--env-archive A] [--conf k=v ...] <job> <args>``; the finished process."""
    env = {**os.environ, "PYTHON": sys.executable}
    options = ["--env-archive", str(env_archive)] if env_archive else []
    for key, value in (conf or {}).items():
        options += ["--conf", f"{key}={value}"]
    return subprocess.run([str(ROOT / "deploy" / "submit.sh"), "--master", master, *options, job, *args],
                          env=env, capture_output=True, text=True, timeout=timeout)
