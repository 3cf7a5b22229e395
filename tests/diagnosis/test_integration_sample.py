"""`scilens sample` and `scilens activation-index` via spark-submit on a standalone cluster equal the local runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scilens.diagnosis.sampling import sample_latent
from scilens.diagnosis.topk_index import read_layer_index
from tests.cluster import submit
from tests.diagnosis.conftest import assert_inference_close, assert_same_predictions

pytestmark = pytest.mark.integration


def test_sample_on_standalone_cluster_equals_local(spark, standalone_master, trained_digits, digits_with_bad_rows,
                                                   sampled, tmp_path):
    out, master = tmp_path / "cluster", standalone_master
    done = submit(master, "sample", "--input", str(digits_with_bad_rows), "--output", str(out),
                  "--config", "conf/sample.yaml", "--set", f"model={trained_digits.model_path}",
                  "--set", "techniques=[maxmargin,stratified_cm,uniform,eb_tree]",
                  "--set", "fractions=[0.05,0.2]")
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["spark_master"] == master  # executors on the cluster loaded the model and embedded
    assert manifest["counts"] == {"succeeded": 1797, "rejected": 3}
    ours = spark.read.parquet(str(sampled / "embeddings.parquet")).toPandas().sort_values("id")
    theirs = spark.read.parquet(str(out / "embeddings.parquet")).toPandas().sort_values("id")
    assert ours["id"].tolist() == theirs["id"].tolist()
    # Inference on the cluster's executors and on local[2]'s workers: float32, equal up to summation order.
    assert_inference_close(np.stack(theirs["latent"].to_numpy()), np.stack(ours["latent"].to_numpy()),
                           err_msg="latent")
    assert_same_predictions(theirs["prediction"].to_numpy(), np.stack(ours["logits"].to_numpy()))
    # The cluster's samples are the pure samplers on the cluster's own embeddings (the samplers are
    # deterministic functions of those bits) ...
    latent = np.stack(theirs["latent"].to_numpy()).astype(np.float64)
    ids, labels, predictions = theirs["id"].to_numpy(), theirs["label"].to_numpy(), theirs["prediction"].to_numpy()
    local = spark.read.parquet(str(sampled / "samples")).toPandas()
    remote = spark.read.parquet(str(out / "samples")).toPandas()

    def drawn(frame, technique, fraction):
        return sorted(frame[(frame.technique == technique) & np.isclose(frame.fraction, fraction)]["id"])

    for technique in ("maxmargin", "stratified_cm", "uniform"):
        expected = sample_latent(technique, latent, labels, predictions, [0.05, 0.2])
        for fraction, sample in expected.items():
            assert drawn(remote, technique, fraction) == sorted(ids[sample.index]), (technique, fraction)
            # ... and the local run's: rounding differences between the two inferences can only move an
            # item that ties another at a ranking or class boundary, so nearly all items are shared.
            mine, yours = set(drawn(local, technique, fraction)), set(drawn(remote, technique, fraction))
            assert len(mine & yours) >= 0.95 * max(len(mine), len(yours)), (technique, fraction)


def test_activation_index_on_standalone_cluster_equals_local(standalone_master, topk_store, topk_index, tmp_path):
    out, master = tmp_path / "index", standalone_master
    done = submit(master, "activation-index", "--input", str(topk_store.path), "--output", str(out),
                  "--set", "partitions=8", "--set", "ratio=0.1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "manifest.json").read_text())["spark_master"] == master
    local, remote = json.loads((topk_index / "index.json").read_text()), json.loads((out / "index.json").read_text())
    assert remote["source"] == local["source"] and remote["N"] == local["N"] == topk_store.rows
    # The same store, so the same index to the bit: per-neuron tasks on the cluster's executors run the
    # same kernel on the same column whatever the partitioning of the transpose.
    for layer in local["layers"]:
        got, want = read_layer_index(out, layer), read_layer_index(topk_index, layer)
        assert np.array_equal(got.ids, want.ids) and np.array_equal(got.neurons, want.neurons)
        assert np.array_equal(got.mai_pos, want.mai_pos) and np.array_equal(got.mai_act, want.mai_act)
        assert got.packed == want.packed and np.array_equal(got.count, want.count)
        assert np.array_equal(got.lo, want.lo, equal_nan=True) and np.array_equal(got.hi, want.hi, equal_nan=True)
