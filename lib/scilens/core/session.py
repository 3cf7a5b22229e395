"""The one SparkSession factory of scilens.

``get_spark(profile)`` reads a profile (``conf/spark/<profile>.yaml``: a
``master`` and a ``conf`` mapping) and layers it over the defaults every
scilens job needs:

* Arrow on, with small Arrow batches so a batch of image rows stays far
  below Spark's 2 GB record limit (see :func:`arrow_batch_rows`);
* native thread pools (OpenMP, MKL, OpenBLAS) pinned to one thread in every
  Python worker, because Spark already runs one task per core;
* Python workers running the driver's interpreter, and, in local mode,
  everything bound to 127.0.0.1;
* in local mode, a failed task is retried (``local[N]`` becomes
  ``local[N,4]``) as on a cluster, where ``spark.task.maxFailures`` is 4:
  Spark's local default of one attempt lets a single worker killed by the
  OS abort the whole run.

Under ``spark-submit`` (or when a session already exists) the master and
confs given there win: only defaults that are not set are added.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import yaml
from pyspark import SparkConf
from pyspark.sql import SparkSession

from scilens.core.config import ConfigError

__all__ = ["LOCAL_TASK_ATTEMPTS", "THREAD_ENV", "arrow_batch_bytes", "arrow_batch_rows", "cached_batch_rows",
           "conf_dirs", "get_spark", "restored_conf", "set_arrow_batch_bytes", "with_local_retries"]

log = logging.getLogger(__name__)

THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
}
"""Environment given to every Python worker: one native thread per task."""

ARROW_BATCH_BUDGET = 256 * 2**20
"""Upper bound, in bytes, for one Arrow batch of image rows."""

DEFAULT_CONF: dict[str, str] = {
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.pyspark.fallback.enabled": "false",
    # 16 rows of a 145x145x174 float32 volume (14.6 MB) is ~230 MB; jobs with
    # bigger rows lower it with set_arrow_batch_bytes.
    "spark.sql.execution.arrow.maxRecordsPerBatch": "16",
    "spark.python.worker.reuse": "true",
    # Cached blocks go through Java serialization, whose stream keeps every object it
    # wrote until a reset (default every 100): 100 cached batches of image volumes
    # (1.1 GB for 11 MB volumes) pinned in the heap while caching to disk. Reset after each.
    "spark.serializer.objectStreamReset": "1",
    "spark.sql.session.timeZone": "UTC",
    **{f"spark.executorEnv.{k}": v for k, v in THREAD_ENV.items()},
}


LOCAL_TASK_ATTEMPTS = 4
"""Attempts per task in local mode (Spark's cluster default for ``spark.task.maxFailures``)."""


def with_local_retries(master: str, attempts: int = LOCAL_TASK_ATTEMPTS) -> str:
    """``local`` / ``local[N]`` / ``local[*]`` with task retries; other masters (and ``local[N,F]``) unchanged."""
    match = re.fullmatch(r"local(?:\[(\d+|\*)\])?", master.strip())
    if match is None:
        return master
    return f"local[{match.group(1) or 1},{attempts}]"


def conf_dirs() -> list[Path]:
    """Where Spark profiles and job configs are looked up, in order.

    ``$SCILENS_CONF`` first, then ``./conf``, then the ``conf/`` of the source
    tree this package was installed from (an editable install).
    """
    dirs = []
    if os.environ.get("SCILENS_CONF"):
        dirs.append(Path(os.environ["SCILENS_CONF"]))
    dirs.append(Path.cwd() / "conf")
    dirs.append(Path(__file__).resolve().parents[3] / "conf")
    return dirs


def _load_profile(profile: str) -> dict:
    candidates = [Path(profile)] if profile.endswith((".yaml", ".yml")) else [
        d / "spark" / f"{profile}.yaml" for d in conf_dirs()
    ]
    for path in candidates:
        if path.is_file():
            try:
                data = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError as exc:
                raise ConfigError(f"Spark profile {path} is not valid YAML: {exc}") from None
            if not isinstance(data, dict):
                raise ConfigError(f"Spark profile {path} must be a mapping with master and conf")
            unknown = set(data) - {"master", "conf"}
            if unknown:
                raise ConfigError(f"Spark profile {path}: unknown keys {sorted(unknown)}; allowed: master, conf")
            if data.get("conf") is not None and not isinstance(data["conf"], dict):
                raise ConfigError(f"Spark profile {path}: conf must be a mapping of Spark settings")
            if data.get("master") is not None and not isinstance(data["master"], str):
                raise ConfigError(f"Spark profile {path}: master must be a string such as local[2]")
            return {"master": data.get("master"), "conf": {k: str(v) for k, v in (data.get("conf") or {}).items()}}
    if profile == "local":  # the package must run even when no conf/ is around
        return {"master": "local[*]", "conf": {}}
    raise ConfigError(f"Spark profile {profile!r} not found; looked in {', '.join(map(str, candidates))}")


def _under_spark_submit() -> bool:
    return "PYSPARK_GATEWAY_PORT" in os.environ or SparkSession.getActiveSession() is not None


def get_spark(
    profile: str = "local",
    app_name: str = "scilens",
    conf: Mapping[str, str] | None = None,
    master: str | None = None,
) -> SparkSession:
    """Get or create the SparkSession for a scilens job.

    Parameters
    ----------
    profile : str
        Name of a profile in ``conf/spark/`` (``local``, ``standalone``,
        ``cluster``) or a path to a profile YAML. Ignored under spark-submit.
    app_name : str
        Spark application name.
    conf : mapping, optional
        Extra Spark confs; they override the profile (but not spark-submit).
    master : str, optional
        Master URL overriding the profile's.
    """
    if _under_spark_submit():
        # spark-submit (or the caller) already decided master and confs:
        # only fill in what is missing.
        existing = SparkConf()
        builder = SparkSession.builder.appName(existing.get("spark.app.name", app_name))
        for key, value in {**DEFAULT_CONF, **(conf or {})}.items():
            if not existing.contains(key):
                builder = builder.config(key, value)
        spark = builder.getOrCreate()
    else:
        prof = _load_profile(profile)
        resolved_master = with_local_retries(master or prof["master"] or "local[*]")
        settings = {**DEFAULT_CONF, **prof["conf"], **(conf or {})}
        if resolved_master.startswith("local"):
            settings.setdefault("spark.driver.host", "127.0.0.1")
            settings.setdefault("spark.driver.bindAddress", "127.0.0.1")
        # Workers must import the same packages as the driver.
        settings.setdefault("spark.pyspark.python", sys.executable)
        settings.setdefault("spark.pyspark.driver.python", sys.executable)
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        if resolved_master.startswith(("local", "spark://127.0.0.1", "spark://localhost")):
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = SparkSession.builder.master(resolved_master).appName(app_name)
        for key, value in settings.items():
            builder = builder.config(key, value)
        spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("SCILENS_SPARK_LOG_LEVEL", "WARN"))
    log.debug("Spark %s master=%s", spark.version, spark.sparkContext.master)
    return spark


def arrow_batch_rows(row_bytes: int, budget_bytes: int = ARROW_BATCH_BUDGET) -> int:
    """How many rows of ``row_bytes`` each fit in one Arrow batch of ``budget_bytes``."""
    return max(1, int(budget_bytes // max(1, row_bytes)))


def set_arrow_batch_bytes(spark: SparkSession, row_bytes: int, budget_bytes: int = ARROW_BATCH_BUDGET,
                          raise_limit: bool = False) -> int:
    """Lower ``maxRecordsPerBatch`` so batches of rows of ``row_bytes`` fit the budget.

    Never raises it above what the session already has, unless ``raise_limit``:
    small tabular rows (a participant, an eye) want thousands per batch where the
    session default is sized for images. Returns the value set.
    """
    # pyspark annotates RuntimeConfig.get as Optional[str] even when given a str default (no overload).
    current = int(spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch", "10000"))  # type: ignore[arg-type]
    fit = arrow_batch_rows(row_bytes, budget_bytes)
    rows = fit if raise_limit else min(current, fit)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(rows))
    return rows


@contextlib.contextmanager
def arrow_batch_bytes(spark: SparkSession, row_bytes: int, budget_bytes: int = ARROW_BATCH_BUDGET,
                      raise_limit: bool = False) -> Iterator[int]:
    """:func:`set_arrow_batch_bytes` for the actions run inside the block, then the previous value again.

    Spark reads ``maxRecordsPerBatch`` when an action executes, so a job whose
    stages carry rows of very different sizes (whole volumes, then small
    blocks) sizes each stage's batches without leaving a tiny value behind
    for the rest of the session.
    """
    with restored_conf(spark, "spark.sql.execution.arrow.maxRecordsPerBatch"):
        yield set_arrow_batch_bytes(spark, row_bytes, budget_bytes, raise_limit)


@contextlib.contextmanager
def cached_batch_rows(spark: SparkSession, rows: int) -> Iterator[int]:
    """Rows per batch of Spark's in-memory columnar cache (``persist``) inside the block, then the previous value.

    Spark builds each cached batch whole in the JVM heap, 10,000 rows by default:
    with rows that are whole image volumes, that is a whole subject in one
    allocation. Hold the block around both the ``persist`` and the first action,
    which fills the cache.
    """
    key = "spark.sql.inMemoryColumnarStorage.batchSize"
    with restored_conf(spark, key):
        spark.conf.set(key, str(rows))
        yield rows


@contextlib.contextmanager
def restored_conf(spark: SparkSession, key: str, value: str | None = None) -> Iterator[None]:
    """Set ``key`` to ``value`` (if given) for the block; put the session's value (or its absence) back after."""
    previous = spark.conf.get(key, None)
    try:
        if value is not None:
            spark.conf.set(key, value)
        yield
    finally:
        if previous is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, previous)
