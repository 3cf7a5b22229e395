"""Shared fixtures: one real local SparkSession per test session, and small real data."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def spark():
    """A real local[2] SparkSession shared by every test (startup costs ~10 s)."""
    from scilens.core.session import get_spark

    session = get_spark("local", app_name="scilens-tests", master="local[2]",
                        conf={"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "4",
                              "spark.ui.showConsoleProgress": "false"})
    yield session
    session.stop()


@pytest.fixture(scope="session")
def small_64d() -> tuple[Path, Path, Path]:
    """dipy's real small_64D dataset: (nifti, bval, bvec)."""
    from dipy.data import get_fnames

    return tuple(Path(p) for p in get_fnames(name="small_64D"))


def pytest_report_header(config) -> str:
    import numpy
    import pyarrow
    import pyspark

    from scilens.core import compat

    return (f"scilens stack: {compat.stack()} (pyspark {pyspark.__version__}, numpy {numpy.__version__}, "
            f"pyarrow {pyarrow.__version__})")


def pytest_collection_modifyitems(config, items) -> None:
    """Skip tests marked ``stack(name)`` on the other stack, naming the stack and the libraries it lacks."""
    from scilens.core import compat

    here = compat.stack()
    for item in items:
        for mark in item.iter_markers("stack"):
            if len(mark.args) != 1 or mark.args[0] not in compat.STACKS:
                raise pytest.UsageError(f"{item.nodeid}: give one stack, one of {sorted(compat.STACKS)}: "
                                        f"@pytest.mark.stack('horovod')")
            name = mark.args[0]
            if name == here:
                continue
            missing = compat.missing_libraries(name)
            lacks = f": {', '.join(missing)} not installed" if missing else ""
            item.add_marker(pytest.mark.skip(reason=f"needs the {name} stack; this is the {here} stack{lacks}"))


@pytest.fixture(scope="session")
def standalone_master(tmp_path_factory):
    """A standalone cluster (deploy/local-cluster.sh: a master and two one-core workers on 127.0.0.1) shared by
    the integration tests that only submit jobs to it; tests that break or scrub a cluster start their own."""
    from tests.cluster import standalone_cluster

    with standalone_cluster(tmp_path_factory.mktemp("cluster-state")) as url:
        yield url


class _Log(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def job_log():
    """Messages of the scilens logger during a test (it does not propagate to pytest's capture)."""
    handler = _Log()
    logging.getLogger("scilens").addHandler(handler)
    yield handler.lines
    logging.getLogger("scilens").removeHandler(handler)
