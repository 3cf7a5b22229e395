"""`ingest` through spark-submit on a real standalone cluster equals the local-mode result."""

from __future__ import annotations

import json
import os

import pytest

from scilens import cli
from tests.cluster import assert_same_ingest, ingest_inputs, submit

pytestmark = pytest.mark.integration


def test_ingest_on_standalone_cluster_equals_local(spark, tmp_path, small_64d, standalone_master):
    inputs = ingest_inputs(tmp_path / "inputs", small_64d)

    local_out = tmp_path / "local"
    assert cli.main(["ingest", "--input", str(inputs), "--output", str(local_out)]) == 0

    cluster_out = tmp_path / "cluster"
    master = standalone_master
    done = submit(master, "ingest", "--input", str(inputs), "--output", str(cluster_out),
                  "--config", "conf/ingest.yaml")
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((cluster_out / "manifest.json").read_text())
    assert manifest["spark_master"] == master  # it really ran there
    assert manifest["counts"] == {"succeeded": 2, "rejected": 1}

    assert_same_ingest(spark, local_out, cluster_out)
    rejected = spark.read.parquet(str(cluster_out / "_rejected" / "rejected.parquet")).collect()
    assert [os.path.basename(r.path) for r in rejected] == ["broken.fits"]
