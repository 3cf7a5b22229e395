"""The local standalone cluster of deploy/local-cluster.sh, as a test helper."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def ingest_inputs(directory: Path, nifti_files: list[Path]) -> Path:
    """``directory`` filled with what the cluster tests ingest: the NIfTI files given, one FITS image and one
    broken FITS file (rejected). Ingesting it gives 2 succeeded, 1 rejected."""
    from scilens.io import fits as fits_io
    from scilens.synth import sky

    directory.mkdir(parents=True)
    for f in nifti_files:
        shutil.copy(f, directory / f.name)
    image = sky.make_image(shape=(64, 64), n_sources=8, seed=5)
    fits_io.write_image(directory / "ccd.fits", image.flux, image.variance, image.mask, image.wcs_header)
    (directory / "broken.fits").write_bytes(b"SIMPLE  = not really")
    return directory


def _sorted_rows(spark, path: Path) -> list:
    rows = spark.read.parquet(str(path)).collect()
    key = "volume" if "volume" in rows[0].asDict() else "image_id"
    return sorted(rows, key=lambda r: (r.path.rsplit("/", 1)[-1], r[key]))


def assert_same_ingest(spark, ours: Path, theirs: Path) -> None:
    """Two ingest outputs hold the same rows (tensors decoded and compared exactly): ingest only copies."""
    import numpy as np

    from scilens.core import tensor

    for table in ("volumes.parquet", "images.parquet"):
        a_rows, b_rows = _sorted_rows(spark, ours / table), _sorted_rows(spark, theirs / table)
        assert len(a_rows) == len(b_rows) > 0, table
        for a, b in zip(a_rows, b_rows):
            for name, value in a.asDict().items():
                if isinstance(value, dict) or hasattr(value, "asDict"):
                    assert np.array_equal(tensor.decode(value), tensor.decode(b[name])), (table, name)
                else:
                    assert value == b[name], (table, name)


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
