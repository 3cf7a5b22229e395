"""What a run may replace, and what a killed, failed or concurrent run leaves: the output directory's guards.

The jobs here are small real jobs over text files (real Spark, real Parquet), so the guards are tested
through ``run_job`` exactly as every scilens job uses them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from scilens.core.job import Job, JobContext, run_job
from scilens.core.output import MARKER, AtomicOutput, OutputError
from scilens.core.quarantine import rejection

ROOT = Path(__file__).resolve().parents[1]


class LinesJob(Job):
    """Reads ``*.txt`` files: a file whose text starts with ``bad`` is rejected, the others become rows."""

    name = "lines"
    summary = "test job"

    def run(self, ctx: JobContext) -> int:
        paths = ctx.list_inputs((".txt",))
        good = [(p, Path(p).read_text()) for p in paths if not Path(p).read_text().startswith("bad")]
        bad = [rejection(p, "read", "starts with bad") for p in paths if Path(p).read_text().startswith("bad")]
        ctx.reject_records(bad)
        if good:
            ctx.spark.createDataFrame(pd.DataFrame(good, columns=["path", "text"])).write.parquet(
                str(ctx.output / "lines.parquet"))
        hold = os.environ.get("SCILENS_TEST_HOLD")
        if hold:  # for the kill tests: say we are mid-run, then wait to be killed (bounded)
            (ctx.output / "partial").write_text("mid-run")
            Path(hold).write_text(str(ctx.output))
            time.sleep(300)
        return len(good)


def _inputs(root: Path, texts: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (root / name).write_text(text)
    return root


def _table(out: Path) -> list[tuple[str, str]]:
    return sorted(map(tuple, pd.read_parquet(out / "lines.parquet")[["path", "text"]].to_numpy().tolist()))


def test_output_that_holds_an_input_is_refused_even_with_overwrite(spark, tmp_path):
    data = _inputs(tmp_path / "data", {"a.txt": "alpha", "b.txt": "beta"})
    for output in (data, tmp_path, data / "sub" / ".."):  # the input itself, its parent, the same via ..
        for overwrite in (False, True):
            assert run_job(LinesJob(), LinesJob.config_class(), [str(data)], str(output), overwrite=overwrite) == 2
            assert sorted(p.name for p in data.iterdir()) == ["a.txt", "b.txt"]
    # a glob input inside the output is refused too
    assert run_job(LinesJob(), LinesJob.config_class(), [str(data / "*.txt")], str(data), overwrite=True) == 2
    assert (data / "a.txt").read_text() == "alpha"


def test_foreign_directory_needs_overwrite_and_scilens_output_is_replaced(spark, tmp_path):
    data = _inputs(tmp_path / "data", {"a.txt": "alpha"})
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "chapter1.tex").write_text("years of work")
    assert run_job(LinesJob(), LinesJob.config_class(), [str(data)], str(foreign)) == 2
    assert (foreign / "chapter1.tex").read_text() == "years of work"
    # an empty directory is fine; a scilens output is replaced by a rerun; --overwrite replaces a foreign one
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_job(LinesJob(), LinesJob.config_class(), [str(data)], str(empty)) == 0
    assert (empty / MARKER).is_file()
    assert run_job(LinesJob(), LinesJob.config_class(), [str(data)], str(empty)) == 0
    assert run_job(LinesJob(), LinesJob.config_class(), [str(data)], str(foreign), overwrite=True) == 0
    assert not (foreign / "chapter1.tex").exists() and _table(foreign) == [(str(data / "a.txt"), "alpha")]
    assert not list(tmp_path.glob(".*staging*")) and not list(tmp_path.glob(".*old-*"))
    assert not list(tmp_path.glob(".*.lock"))


def test_failed_run_leaves_previous_output(spark, tmp_path):
    data = _inputs(tmp_path / "data", {"a.txt": "alpha", "b.txt": "beta"})
    out = tmp_path / "out"
    assert run_job(LinesJob(), LinesJob.config_class(), [str(data)], str(out)) == 0
    before = _table(out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"succeeded": 2, "rejected": 0} and manifest["input_files"] == 2
    for name in ("a.txt", "b.txt"):
        (data / name).write_text("bad now")
    assert run_job(LinesJob(), LinesJob.config_class(), [str(data)], str(out)) == 1
    assert _table(out) == before
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert not list(tmp_path.glob(".out.*"))


def test_second_writer_is_refused_while_the_first_holds_the_output(spark, tmp_path):
    data = _inputs(tmp_path / "data", {"a.txt": "alpha"})
    out = tmp_path / "out"
    with AtomicOutput(out, inputs=[str(data)], job="other"):
        assert run_job(LinesJob(), LinesJob.config_class(), [str(data)], str(out)) == 2
        with pytest.raises(OutputError, match="being written by another scilens run"):
            AtomicOutput(out).__enter__()
    assert not out.exists()  # the holder never committed
    assert run_job(LinesJob(), LinesJob.config_class(), [str(data)], str(out)) == 0  # the lock was released


def test_unreadable_directory_is_rejected_not_skipped(spark, tmp_path):
    """Listed as a user without rights would: root reads anything, so the listing runs in a child as nobody."""
    from scilens.core.inputs import list_files

    base = Path(tempfile.mkdtemp(prefix="scilens-perm-"))
    try:
        os.chmod(base, 0o755)
        _inputs(base / "open", {"a.txt": "alpha"})
        _inputs(base / "closed", {"b.txt": "beta"})
        os.chmod(base / "open", 0o755)
        os.chmod(base / "open" / "a.txt", 0o644)
        os.chmod(base / "closed", 0o000)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                os.setgid(65534)
                os.setuid(65534)
                problems: list = []
                found = list_files([str(base)], (".txt",), problems=problems)
                try:
                    list_files([str(base)], (".txt",))
                    raised = ""
                except Exception as exc:
                    raised = str(exc)
                os.write(write, json.dumps([found, problems, raised]).encode())
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read) as pipe:
            found, problems, raised = json.loads(pipe.read())
        os.waitpid(pid, 0)
    finally:
        os.chmod(base / "closed", 0o755)
        import shutil
        shutil.rmtree(base)
    assert found == [str(base / "open" / "a.txt")]
    assert problems == [[str(base / "closed"), "cannot list directory: Permission denied"]]
    assert str(base / "closed") in raised and "Permission denied" in raised


def test_manifest_counts_inputs_and_rejections_and_redacts_secrets(spark, tmp_path):
    data = _inputs(tmp_path / "data", {"a.txt": "alpha", "b.txt": "bad", "c.txt": "gamma"})
    config = LinesJob.config_class.from_dict({"spark": {"conf": {
        "spark.hadoop.fs.s3a.secret.key": "AKIAverysecret", "spark.ssl.keyPassword": "hunter2",
        "spark.hadoop.fs.azure.sas.token": "sv=2020&sig=abc", "spark.sql.shuffle.partitions": "4"}}})
    out = tmp_path / "out"
    assert run_job(LinesJob(), config, [str(data)], str(out)) == 0
    text = (out / "manifest.json").read_text()
    for secret in ("AKIAverysecret", "hunter2", "sig=abc"):
        assert secret not in text
    manifest = json.loads(text)
    assert manifest["config"]["spark"]["conf"]["spark.sql.shuffle.partitions"] == "4"
    assert manifest["counts"] == {"succeeded": 2, "rejected": 1} and manifest["input_files"] == 3
    assert pd.read_parquet(out / "_rejected" / "rejected.parquet")["path"].tolist() == [str(data / "b.txt")]


@pytest.mark.parametrize(("setting", "message"), [
    ("spark.master=bogus://nowhere", "cannot start Spark"),
    ("spark.profile={profile}", "not valid YAML"),
])
def test_bad_spark_profile_or_master_is_a_clear_error(tmp_path, setting, message):
    """A fresh process, since in this one a session already exists and would be reused."""
    broken = tmp_path / "broken.yaml"
    broken.write_text("master: [local\n")
    data = _inputs(tmp_path / "data", {"a.txt": "alpha"})
    code = ("import sys; from tests.test_outputs import LinesJob; from scilens.core.job import run_job; "
            "from scilens.core.config import load_config; "
            "sys.exit(run_job(LinesJob(), load_config(LinesJob.config_class, None, [sys.argv[3]]), [sys.argv[1]], "
            "sys.argv[2]))")
    proc = subprocess.run([sys.executable, "-c", code, str(data), str(tmp_path / "out"),
                           setting.format(profile=broken)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_local_master_retries_a_task_whose_worker_died(spark):
    """A Python worker killed mid-task (as by the OS) costs a retry, not the run."""
    from pyspark import TaskContext

    from scilens.core.session import with_local_retries

    assert with_local_retries("local[2]") == "local[2,4]"
    assert with_local_retries("local[*]") == "local[*,4]" and with_local_retries("local") == "local[1,4]"
    assert with_local_retries("local[2,1]") == "local[2,1]" and with_local_retries("yarn") == "yarn"
    assert spark.sparkContext.master == "local[2,4]"

    def die_first(frames):
        context = TaskContext.get()
        if context.partitionId() == 1 and context.attemptNumber() == 0:
            os._exit(137)
        for frame in frames:
            yield frame.assign(attempt=context.attemptNumber())

    rows = spark.range(0, 40, numPartitions=2).mapInPandas(die_first, "id long, attempt int").collect()
    assert sorted(r.id for r in rows) == list(range(40))
    assert {r.attempt for r in rows if r.id >= 20} == {1}


def _start_held_run(data: Path, out: Path, hold: Path) -> subprocess.Popen:
    code = ("import sys; from tests.test_outputs import LinesJob; from scilens.core.job import run_job; "
            "sys.exit(run_job(LinesJob(), LinesJob.config_class.from_dict({'spark': {'master': 'local[1]', "
            "'conf': {'spark.ui.enabled': 'false'}}}), [sys.argv[1]], sys.argv[2]))")
    env = {**os.environ, "SCILENS_TEST_HOLD": str(hold), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", code, str(data), str(out)], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 240  # a JVM start on a loaded 2-core machine; bounded, not a fixed sleep
    while not hold.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the held run never reached mid-run: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.2)
    return proc


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_run_leaves_previous_output_and_rerun_equals_clean_run(spark, tmp_path, sig):
    data = _inputs(tmp_path / "data", {"a.txt": "alpha", "b.txt": "beta"})
    out = tmp_path / "out"
    assert run_job(LinesJob(), LinesJob.config_class(), [str(data)], str(out)) == 0
    previous = _table(out)
    (data / "c.txt").write_text("gamma")
    proc = _start_held_run(data, out, tmp_path / "held")
    os.kill(proc.pid, sig)
    code = proc.wait(timeout=120)
    with contextlib.suppress(ProcessLookupError):  # the run's JVM, if it outlived its driver
        os.killpg(proc.pid, signal.SIGKILL)
    assert _table(out) == previous and not (out / "partial").exists()
    staging = list(tmp_path.glob(".out.staging-*"))
    if sig == signal.SIGTERM:
        assert code == 128 + signal.SIGTERM
        assert staging == [] and not (tmp_path / ".out.lock").exists()
    else:
        assert len(staging) == 1 and (staging[0] / "partial").exists()  # what SIGKILL leaves
    # a later run cleans up after the killed one and equals a clean run
    clean = tmp_path / "clean"
    assert run_job(LinesJob(), LinesJob.config_class(), [str(data)], str(clean)) == 0
    assert run_job(LinesJob(), LinesJob.config_class(), [str(data)], str(out)) == 0
    assert _table(out) == _table(clean) and len(_table(out)) == 3
    assert not list(tmp_path.glob(".out.*"))


def test_interrupted_commit_restores_the_previous_output(spark, tmp_path):
    """A kill between the two renames of a commit leaves the old output retired: the next run puts it back."""
    data = _inputs(tmp_path / "data", {"a.txt": "alpha"})
    out = tmp_path / "out"
    assert run_job(LinesJob(), LinesJob.config_class(), [str(data)], str(out)) == 0
    previous = _table(out)
    os.rename(out, tmp_path / ".out.old-deadbeef")  # the state right after the first rename
    with AtomicOutput(out, inputs=[str(data)]):
        assert _table(out) == previous
    assert not list(tmp_path.glob(".out.old-*"))
