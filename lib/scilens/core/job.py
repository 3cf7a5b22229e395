"""How every scilens job runs: config, session, steps, quarantine, manifest, atomic commit.

A job is a :class:`Job` subclass with a name, a config class (deriving
:class:`JobConfig`) and a ``run(ctx)`` that reads ``ctx.inputs``, writes into
``ctx.output`` (a staging directory), reports rejected records with
``ctx.reject`` and returns how many records succeeded. :func:`run_job` does
the rest, the same way for every job and for ``scilens <job>`` and
``spark-submit jobs/<job>.py`` alike.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar, cast

from pyspark.sql import DataFrame, SparkSession

from scilens.core.config import Config, ConfigError, field
from scilens.core.inputs import InputError, list_files
from scilens.core.manifest import Manifest, StepRecord
from scilens.core.output import AtomicOutput, OutputError
from scilens.core.quarantine import rejected_frame, rejection
from scilens.core.session import get_spark

__all__ = ["Job", "JobConfig", "JobContext", "JobFailed", "SparkSection", "run_job"]

log = logging.getLogger("scilens")

REJECTED_DIR = "_rejected"
REJECTED_TABLE = f"{REJECTED_DIR}/rejected.parquet"  # Spark skips input paths named _*, not their children
MAX_REJECTED_EXAMPLES = 20


@dataclass
class SparkSection(Config):
    """Which Spark to run on when not under spark-submit."""

    profile: str = field("local", "Spark profile in conf/spark/ (local, standalone, cluster) or a YAML path.")
    master: str | None = field(None, "Master URL overriding the profile's, e.g. local[2] or spark://host:7077.")
    conf: dict[str, str] = field({}, "Extra Spark confs, e.g. {spark.driver.memory: 8g}.")


@dataclass
class JobConfig(Config):
    """Fields every job has."""

    spark: SparkSection = field(SparkSection(), "Spark session settings.")


C = TypeVar("C", bound=JobConfig)
"""A job's config class: :class:`Job` and :class:`JobContext` are generic over it, so ``ctx.config`` has the
job's own type."""


class JobFailed(RuntimeError):
    """A job cannot go on; the message says why and what to do."""


@dataclass
class JobContext(Generic[C]):
    """What a running job gets: its session, config (of the job's config class ``C``), inputs, staging output."""

    job: str
    spark: SparkSession
    config: C
    inputs: list[str]
    output: Path
    manifest: Manifest
    rejected: list[DataFrame]

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[StepRecord]:
        """Time a step; set counts on the yielded record; logs one line at the end."""
        record = StepRecord(name)
        log.info("%s: %s ...", self.job, name)
        start = time.perf_counter()
        yield record
        record.seconds = round(time.perf_counter() - start, 3)
        self.manifest.steps.append(record)
        counts = ", ".join(f"{k}={v}" for k, v in record.counts.items())
        log.info("%s: %s done in %.1f s%s", self.job, name, record.seconds, f" ({counts})" if counts else "")

    def reject(self, rejected: DataFrame) -> None:
        """Add records (rows of ``REJECTED_TYPE``) to this run's ``_rejected`` table."""
        self.rejected.append(rejected)

    def reject_records(self, records: Sequence[Mapping[str, str]]) -> None:
        """Add rejections made on the driver (dicts from :func:`scilens.core.quarantine.rejection`)."""
        if records:
            self.reject(rejected_frame(self.spark, records))

    def list_inputs(self, suffixes: Sequence[str], inputs: Sequence[str] | None = None) -> list[str]:
        """The input files with ``suffixes`` (:func:`scilens.core.inputs.list_files`), counted in the manifest.

        A directory that cannot be listed is rejected (naming it and why) rather than skipped, so every
        input the driver saw ends in the output or in ``_rejected``.
        """
        problems: list[tuple[str, str]] = []
        paths = list_files(list(inputs if inputs is not None else self.inputs), suffixes, problems=problems)
        self.reject_records([rejection(path, "list inputs", message) for path, message in problems])
        self.manifest.input_files += len(paths) + len(problems)
        return paths


class Job(Generic[C]):
    """Base class of jobs; see the module doc.

    A job names its config class twice, as the type parameter and as ``config_class``
    (``class SampleJob(Job[SampleConfig]): config_class = SampleConfig``): the first types
    ``ctx.config`` in ``run``, the second is what the CLI loads and ``--help`` describes.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    # Not a ClassVar: type checkers refuse type variables in one. The cast is the one place the base
    # default meets the type parameter: a job without fields of its own (tests' minimal jobs) is a Job[JobConfig].
    config_class: type[C] = cast("type[C]", JobConfig)

    def run(self, ctx: JobContext[C]) -> int:  # pragma: no cover - abstract
        """Run the job in ``ctx``; returns the process exit code (0: success)."""
        raise NotImplementedError


def _setup_logging() -> None:
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[scilens %(asctime)s] %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def _write_rejected(ctx: JobContext[Any]) -> int:
    if not ctx.rejected:
        return 0
    frames = ctx.rejected
    union = frames[0]
    for frame in frames[1:]:
        union = union.unionByName(frame)
    path = ctx.output / REJECTED_TABLE
    union.coalesce(1).write.mode("overwrite").parquet(str(path))
    written = ctx.spark.read.parquet(str(path))
    ctx.manifest.rejected_examples = [r.asDict() for r in written.limit(MAX_REJECTED_EXAMPLES).collect()]
    count = written.count()
    if count == 0:
        shutil.rmtree(ctx.output / REJECTED_DIR)
    return count


def _start_spark(job: Job[Any], config: JobConfig) -> SparkSession:
    """The session for ``job``; a profile or master that cannot start Spark is the user's to fix, said plainly."""
    try:
        return get_spark(config.spark.profile, app_name=f"scilens-{job.name}", conf=config.spark.conf,
                         master=config.spark.master)
    except (ConfigError, JobFailed):
        raise
    except Exception as exc:  # py4j and Spark errors carry a JVM stack; keep its first line
        reason = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise JobFailed(f"cannot start Spark (profile {config.spark.profile!r}, master "
                        f"{config.spark.master or 'from the profile'}): {reason[:500]}") from None


class Terminated(SystemExit):
    """The process was asked to stop (SIGTERM); raised so outputs are cleaned up on the way out."""


@contextlib.contextmanager
def _terminate_cleanly() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` in the main thread, so ``with`` blocks unwind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_job(job: Job[C], config: C, inputs: list[str], output: str, strict: bool = False,
            overwrite: bool = False) -> int:
    """Run ``job`` and return the process exit code.

    0 on success; 1 when nothing succeeded, or with ``strict`` when any record
    was rejected, or on an error; 2 when the output cannot be used or Spark
    cannot start. Outputs are committed only when some record succeeded: a
    failed run leaves the previous output as it was.
    """
    _setup_logging()
    started = time.perf_counter()
    try:
        with _terminate_cleanly(), AtomicOutput(output, inputs=inputs, overwrite=overwrite, job=job.name) as out:
            spark = _start_spark(job, config)
            manifest = Manifest(job=job.name, inputs=inputs, config=config.to_dict(), output=str(output),
                                spark_master=spark.sparkContext.master or "", spark_version=spark.version,
                                application_id=spark.sparkContext.applicationId)
            ctx = JobContext(job.name, spark, config, inputs, out.staging, manifest, [])
            try:
                succeeded = job.run(ctx)
                with ctx.step("write _rejected") as rec:
                    rejected = rec.counts["rejected"] = _write_rejected(ctx)
            except (JobFailed, InputError, ConfigError) as exc:  # the user's to fix: say what, no traceback
                log.error("%s failed: %s", job.name, exc)
                return 1
            manifest.counts.update({"succeeded": int(succeeded), "rejected": rejected})
            if not succeeded:
                log.error("%s failed: nothing succeeded (%d rejected); the previous output, if any, is left "
                          "as it was", job.name, rejected)
                for example in manifest.rejected_examples[:5]:
                    log.error("  rejected: %s", example.get("message", ""))
                return 1
            status = "partial" if rejected else "ok"
            manifest.finish(status)
            manifest.write(out.staging / "manifest.json")
            final = out.commit()
    except (OutputError, ConfigError, JobFailed) as exc:  # before the job ran: bad output, profile or master
        log.error("%s: %s", job.name, exc)
        return 2
    elapsed = time.perf_counter() - started
    log.info("%s %s in %.1f s: %d succeeded, %d rejected; outputs in %s", job.name, status, elapsed,
             succeeded, rejected, final)
    if rejected:
        log.warning("%d rejected record(s), reasons in %s/%s; first: %s", rejected, final, REJECTED_TABLE,
                    manifest.rejected_examples[0]["message"] if manifest.rejected_examples else "")
    if strict and rejected:
        return 1
    return 0
