"""A job shipped with its packed environment (deploy/pack.sh + deploy/submit.sh --env-archive) runs on nodes
that cannot see this machine's venv, and gives the local-mode result; a mismatched archive is refused first."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from scilens import cli
from tests.cluster import ROOT, assert_same_ingest, ingest_inputs, standalone_cluster, submit

ENVMETA = ROOT / "deploy" / "envmeta.py"


def _stack() -> str:
    """The stack of the interpreter running the tests."""
    done = subprocess.run([sys.executable, str(ENVMETA), "stack"], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def _meta() -> dict:
    done = subprocess.run([sys.executable, str(ENVMETA), "describe", "--stack", _stack()], capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout)


@pytest.fixture(scope="session")
def env_archive(tmp_path_factory) -> Path:
    """This test run's own stack packed once per session by deploy/pack.sh (2.2 GiB, 90-130 s on 2 loaded cores).

    ``SCILENS_TEST_ENV_ARCHIVE`` names an archive built before, to skip packing while working on the tests.
    """
    if os.environ.get("SCILENS_TEST_ENV_ARCHIVE"):
        yield Path(os.environ["SCILENS_TEST_ENV_ARCHIVE"])
        return
    out = tmp_path_factory.mktemp("env-archive")
    started = time.perf_counter()
    done = subprocess.run([str(ROOT / "deploy" / "pack.sh"), "--venv", sys.prefix, "--output-dir", str(out), _stack()],
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    archive = Path(done.stdout.strip().splitlines()[-1])
    print(f"\n{archive.name}: {archive.stat().st_size / 2**20:.0f} MiB packed in "
          f"{time.perf_counter() - started:.0f} s")
    yield archive
    shutil.rmtree(out, ignore_errors=True)  # a GiB per session: not left for pytest's last three runs


def _fake_archive(path: Path, meta: dict | None) -> Path:
    """A tar.gz holding only a metadata file: enough for the refusal, which must not read further."""
    with tarfile.open(path, "w:gz") as tar:
        if meta is not None:
            data = json.dumps(meta).encode()
            info = tarfile.TarInfo("environment-meta.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("bin/python")
        info.type, info.linkname = tarfile.SYMTYPE, "python3"
        tar.addfile(info)
    return path


def _submit_refused(archive: Path, tmp_path: Path) -> str:
    started = time.perf_counter()
    done = submit("spark://127.0.0.1:1", "ingest", "--input", str(tmp_path), "--output", str(tmp_path / "out"),
                  env_archive=archive, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "SparkContext" not in done.stderr and not (tmp_path / "out").exists()  # refused before Spark
    assert time.perf_counter() - started < 30
    return done.stderr


def test_archive_for_another_stack_is_refused_naming_both(tmp_path):
    here = _meta()
    other = "horovod" if here["stack"] != "horovod" else "current"
    archive = _fake_archive(tmp_path / "other-stack.tar.gz", {**here, "stack": other})
    stderr = _submit_refused(archive, tmp_path)
    assert f"built for stack {other}, Python {here['python']}" in stderr
    assert f"is stack {here['stack']}, Python {here['python']}" in stderr
    assert "another stack" in stderr


def test_archive_for_another_python_is_refused_naming_both(tmp_path):
    here = _meta()
    archive = _fake_archive(tmp_path / "py310.tar.gz", {**here, "python": "3.10.14", "python_abi": "3.10"})
    stderr = _submit_refused(archive, tmp_path)
    assert f"built for stack {here['stack']}, Python 3.10.14" in stderr
    assert f"is stack {here['stack']}, Python {here['python']}" in stderr
    assert "another Python version" in stderr


def test_archive_without_metadata_or_missing_is_refused(tmp_path):
    stderr = _submit_refused(_fake_archive(tmp_path / "plain.tar.gz", None), tmp_path)
    assert "holds no environment-meta.json" in stderr and "plain.tar.gz" in stderr
    assert "does not exist" in _submit_refused(tmp_path / "absent.tar.gz", tmp_path)


def test_pack_refuses_an_unknown_stack_or_a_venv_of_another_stack(tmp_path):
    done = subprocess.run([str(ROOT / "deploy" / "pack.sh"), "newest"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "unknown stack 'newest'; the stacks are current and horovod" in done.stderr
    other = "horovod" if _stack() != "horovod" else "current"
    done = subprocess.run([str(ROOT / "deploy" / "pack.sh"), "--venv", sys.prefix, "--output-dir", str(tmp_path),
                           other], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and f"is the {_stack()} stack, not {other}" in done.stderr
    assert not list(tmp_path.glob("*.tar.gz"))


def _environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        return dict(item.decode().split("=", 1) for item in f.read().split(b"\0") if b"=" in item)


@pytest.mark.integration
def test_job_with_env_archive_runs_the_archives_python_and_equals_local(spark, tmp_path, small_64d, env_archive):
    inputs = ingest_inputs(tmp_path / "inputs", small_64d)
    local_out = tmp_path / "local"
    assert cli.main(["ingest", "--input", str(inputs), "--output", str(local_out)]) == 0

    venv = sys.prefix  # the stack the driver runs; the nodes must not see it
    state, cluster_out, report = tmp_path / "cluster-state", tmp_path / "cluster", tmp_path / "report.json"
    started = time.perf_counter()
    try:
        with standalone_cluster(state, scrubbed=True) as master:
            print(f"\ncluster up: {time.perf_counter() - started:.0f} s")
            for node in ("master", "worker1", "worker2"):
                environ = _environ(int((state / f"{node}.pid").read_text()))
                assert "PYSPARK_PYTHON" not in environ and "PYTHONPATH" not in environ, node
                assert not [k for k, v in environ.items() if venv in v], (node, environ)
            started = time.perf_counter()
            # One executor: each unpacks its own 2.2 GiB copy, minutes on this shared 2-core machine.
            done = submit(master, str(ROOT / "tests" / "archive_probe.py"), str(report), "ingest",
                          "--input", str(inputs), "--output", str(cluster_out), "--config", "conf/ingest.yaml",
                          env_archive=env_archive, conf={"spark.cores.max": "1"})
            print(f"submitted with the archive: {time.perf_counter() - started:.0f} s")
            assert done.returncode == 0, done.stderr[-3000:]
        probe = json.loads(report.read_text())
        assert probe["exit"] == 0
        for task in probe["tasks"]:
            unpacked = Path(task["cwd"]) / "environment"
            assert Path(task["cwd"]).is_relative_to(state)  # an executor's work dir on a node
            assert os.path.normpath(task["executable"]) == str(unpacked / "bin" / "python")
            assert os.path.normpath(task["prefix"]) == str(unpacked)
            for module in ("scilens", "pyspark"):  # imported from the archive, not this checkout or the venv
                assert Path(task[module]).is_relative_to(unpacked), (module, task[module])
            assert not [k for k, v in task["environ"].items() if venv in v], task["environ"]
        manifest = json.loads((cluster_out / "manifest.json").read_text())
        assert manifest["spark_master"] == master and manifest["counts"] == {"succeeded": 2, "rejected": 1}
        assert_same_ingest(spark, local_out, cluster_out)
    finally:
        started = time.perf_counter()
        for work in state.glob("work*"):  # the unpacked environment: 2.2 GiB
            subprocess.run(["rm", "-rf", str(work)], check=False)
        print(f"unpacked environments removed: {time.perf_counter() - started:.0f} s")
