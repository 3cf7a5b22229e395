"""`scilens sample` through spark-submit on a real standalone cluster equals the local run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.cluster import standalone_cluster, submit

pytestmark = pytest.mark.integration


def test_sample_on_standalone_cluster_equals_local(spark, trained_digits, digits_with_bad_rows, sampled, tmp_path):
    out = tmp_path / "cluster"
    with standalone_cluster(tmp_path / "cluster-state") as master:
        done = submit(master, "sample", "--input", str(digits_with_bad_rows), "--output", str(out),
                      "--config", "conf/latent_sample.yaml", "--set", f"model={trained_digits.model_path}",
                      "--set", "techniques=[maxmargin,stratified_cm,uniform,eb_tree]",
                      "--set", "fractions=[0.05,0.2]")
        assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["spark_master"] == master  # executors on the cluster loaded the model and embedded
    assert manifest["counts"] == {"succeeded": 1797, "rejected": 3}
    ours = spark.read.parquet(str(sampled / "embeddings.parquet")).toPandas().sort_values("id")
    theirs = spark.read.parquet(str(out / "embeddings.parquet")).toPandas().sort_values("id")
    assert ours["id"].tolist() == theirs["id"].tolist()
    np.testing.assert_allclose(np.stack(theirs["latent"].to_numpy()), np.stack(ours["latent"].to_numpy()),
                               rtol=1e-5, atol=1e-5)
    local = spark.read.parquet(str(sampled / "samples")).toPandas()
    remote = spark.read.parquet(str(out / "samples")).toPandas()
    for technique in ("maxmargin", "stratified_cm", "uniform"):
        for fraction in (0.05, 0.2):
            def ids(frame, t=technique, f=fraction):
                return sorted(frame[(frame.technique == t) & np.isclose(frame.fraction, f)]["id"])
            assert ids(remote) == ids(local), (technique, fraction)
