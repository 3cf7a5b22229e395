"""`ingest` through spark-submit on a real standalone cluster equals the local-mode result."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from scilens import cli
from scilens.core import tensor
from scilens.io import fits as fits_io
from scilens.synth import sky
from tests.cluster import standalone_cluster, submit

pytestmark = pytest.mark.integration


def _table(spark, path):
    rows = spark.read.parquet(str(path)).collect()
    key = "volume" if "volume" in rows[0].asDict() else "image_id"
    return sorted(rows, key=lambda r: (r.path.rsplit("/", 1)[-1], r[key]))


def test_ingest_on_standalone_cluster_equals_local(spark, tmp_path, small_64d):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for f in small_64d:
        shutil.copy(f, inputs / f.name)
    image = sky.make_image(shape=(64, 64), n_sources=8, seed=5)
    fits_io.write_image(inputs / "ccd.fits", image.flux, image.variance, image.mask, image.wcs_header)
    (inputs / "broken.fits").write_bytes(b"SIMPLE  = not really")

    local_out = tmp_path / "local"
    assert cli.main(["ingest", "--input", str(inputs), "--output", str(local_out)]) == 0

    cluster_out = tmp_path / "cluster"
    with standalone_cluster(tmp_path / "cluster-state") as master:
        done = submit(master, "ingest", "--input", str(inputs), "--output", str(cluster_out),
                      "--config", "conf/ingest.yaml")
        assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((cluster_out / "manifest.json").read_text())
    assert manifest["spark_master"] == master  # it really ran there
    assert manifest["counts"] == {"succeeded": 2, "rejected": 1}

    for table in ("volumes.parquet", "images.parquet"):
        ours, theirs = _table(spark, local_out / table), _table(spark, cluster_out / table)
        assert len(ours) == len(theirs) > 0
        for a, b in zip(ours, theirs):
            for name, value in a.asDict().items():
                if isinstance(value, dict) or hasattr(value, "asDict"):
                    assert np.array_equal(tensor.decode(value), tensor.decode(b[name]))
                else:
                    assert value == b[name], name
    rejected = spark.read.parquet(str(cluster_out / "_rejected" / "rejected.parquet")).collect()
    assert [os.path.basename(r.path) for r in rejected] == ["broken.fits"]
