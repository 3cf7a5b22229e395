"""The activation store holds Keras' activations; diagnosis queries Q1-Q7 on Spark equal numpy on what it holds.

Two facts, tested apart: the store's activations are Keras' (float32 inference in a Spark worker, so
equal to the test process's within float32 rounding), and each query is the numpy computation over the
arrays the store holds (read from its Parquet with pyarrow: same bits on both sides).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from scilens import cli
from scilens.diagnosis import metrics, queries
from scilens.diagnosis.activations import ActivationStore, directory_bytes
from scilens.diagnosis.queries import Group
from scilens.diagnosis.similarity import moments_of, svcca, svcca_from_moments
from tests.diagnosis.conftest import assert_inference_close, assert_same_predictions


@pytest.fixture(scope="module")
def keras_activations(trained_digits):
    """Every layer's activations of all digits by Keras directly, flattened, plus labels and predictions."""
    from tensorflow import keras

    model = trained_digits.model
    names = [layer.name for layer in model.layers[1:]]
    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    outs = probe.predict(trained_digits.digits.images.astype(np.float32), verbose=0)
    acts = {n: o.reshape(len(o), -1) for n, o in zip(names, outs)}
    prediction = acts["probabilities"].argmax(axis=1)
    return acts, trained_digits.digits.labels, prediction


@pytest.fixture(scope="module")
def stores(spark, trained_digits, sampled, tmp_path_factory):
    """The store of the MaxMargin 5 % sample (all layers) and of every digit."""
    root = tmp_path_factory.mktemp("stores")
    chosen = sampled / "samples" / "technique=maxmargin" / "fraction=0.05"
    base = ["activations", "--input", str(trained_digits.table), "--set", f"model={trained_digits.model_path}"]
    assert cli.main([*base, "--output", str(root / "sample"), "--set", f"ids_from={chosen}"]) == 0
    assert cli.main([*base, "--output", str(root / "full")]) == 0
    return ActivationStore.open(root / "sample"), ActivationStore.open(root / "full"), chosen


def test_store_holds_the_chosen_ids_and_layers(spark, stores, trained_digits):
    small, full, chosen = stores
    labels = trained_digits.digits.labels
    expected_ids = sorted(pd.read_parquet(chosen)["id"])
    assert small.rows == len(expected_ids) and full.rows == len(labels)
    assert "probabilities" not in small.layers and {"conv1", "conv2_bn", "fc2", "logits"} <= set(small.layers)
    assert "flatten" not in small.layers and small.layers["conv2"] == (4, 4, 16)
    rows = small.to_numpy(["id", "label", "prediction", "correct"])
    order = np.argsort(rows["id"])
    assert rows["id"][order].tolist() == expected_ids
    where = np.searchsorted(trained_digits.digits.ids, rows["id"][order])
    assert np.array_equal(rows["label"][order], labels[where])
    assert np.array_equal(rows["correct"][order], rows["label"][order] == rows["prediction"][order])
    # Bytes are reported, and they scale with the rows: per-file overheads are small next to the activations.
    manifest = json.loads((small.path / "manifest.json").read_text())
    step = next(s for s in manifest["steps"] if s["name"].startswith("compute"))
    assert step["counts"]["bytes"] == small.bytes == directory_bytes(small.table)
    assert full.bytes / small.bytes == pytest.approx(full.rows / small.rows, rel=0.25)


def test_stored_activations_equal_keras_within_float32_rounding(stores, keras_activations, trained_digits):
    """Inference equality: the workers' float32 outputs are Keras' in this process up to summation order."""
    acts, _, prediction = keras_activations
    for store in stores[:2]:
        rows = store.to_numpy(["id", "prediction", *store.layers])
        order = np.argsort(rows["id"])
        where = np.searchsorted(trained_digits.digits.ids, rows["id"][order])
        for layer in store.layers:
            assert_inference_close(rows[layer][order], acts[layer][where], err_msg=f"{store.path.name} {layer}")
        assert_same_predictions(rows["prediction"][order], acts["probabilities"][where], err_msg=store.path.name)
        assert np.mean(rows["prediction"][order] == prediction[where]) > 0.99


def test_absent_ids_are_named_before_inference(spark, trained_digits, tmp_path, job_log):
    code = cli.main(["activations", "--input", str(trained_digits.table), "--output", str(tmp_path / "o"),
                     "--set", f"model={trained_digits.model_path}", "--set", "ids=[3,77777,88888]"])
    assert code == 1 and not (tmp_path / "o").exists()
    assert any("ids absent from" in line and line.endswith(": 77777, 88888") for line in job_log)
    assert not any(line.startswith("activations: compute") for line in job_log)


@pytest.fixture(scope="module")
def store_frame(spark, stores):
    return stores[1].frame(spark).persist()


@pytest.fixture(scope="module")
def stored(stores):
    """(layer -> (items, neurons) float32, labels, predictions) as the full store's Parquet holds them.

    Read with pyarrow, not through the store's or the queries' code; items in any order (queries are
    order-free).
    """
    store = stores[1]
    table = pq.read_table(store.table)
    acts = {}
    for layer in store.layers:
        column = table.column(layer).combine_chunks()
        acts[layer] = column.flatten().to_numpy().reshape(len(column), -1)
        assert acts[layer].dtype == np.float32 and acts[layer].shape[1] == int(np.prod(store.layers[layer]))
    labels = table.column("label").to_numpy()
    prediction = table.column("prediction").to_numpy()
    assert np.array_equal(table.column("correct").to_numpy(), labels == prediction)
    return acts, labels, prediction


def _assert_same_mean(got, rows):
    """``got`` (Spark ML's Summarizer) is the mean of ``rows`` (float32) up to float64 summation order.

    Both sides add the same float32 values in float64, in different orders (Summarizer updates a
    running mean, numpy sums pairwise): each step rounds by at most 2**-53 of the magnitudes involved,
    so the two differ by at most about n * eps64 * max|x| per neuron (n items): 4e-13 of the scale
    for all 1,797 digits. Four times that still fails any real difference (another group, a missing
    item: 1e-4 of the scale or more).
    """
    rows = np.asarray(rows, np.float64)
    bound = 4 * len(rows) * np.finfo(np.float64).eps * np.abs(rows).max(axis=0)
    assert got.shape == bound.shape
    assert np.all(np.abs(got - rows.mean(0)) <= bound), np.max(np.abs(got - rows.mean(0)) - bound)


def test_q1_q2_q3_q5_equal_numpy(store_frame, stored):
    acts, labels, prediction = stored
    correct = labels == prediction
    conv2 = acts["conv2"].astype(np.float64)
    # Q1: mean of every neuron of conv2 over all items.
    _assert_same_mean(queries.mean_activation(store_frame, "conv2"), conv2)
    # Q2: top-10 neurons of conv2 over the misclassified.
    assert np.array_equal(queries.top_k_neurons(store_frame, "conv2", 10, Group(correct=False)),
                          metrics.top_k(conv2[~correct].mean(0), 10))
    # Q3: fc2 pattern of class a, incorrect vs correct.
    a = int(np.bincount(labels[~correct]).argmax())
    for ok in (False, True):
        mask = (labels == a) & (correct == ok)
        _assert_same_mean(queries.mean_activation(store_frame, "fc2", Group(label=a, correct=ok)), acts["fc2"][mask])
    # Q5: class a predicted as b: top neurons and the distribution of maximally activated ones.
    b = int(np.bincount(prediction[(labels == a) & ~correct]).argmax())
    mask = (labels == a) & (prediction == b)
    group = Group(label=a, prediction=b)
    assert np.array_equal(queries.top_k_neurons(store_frame, "conv2", 5, group),
                          metrics.top_k(conv2[mask].mean(0), 5))
    assert np.array_equal(queries.max_neuron_distribution(store_frame, "conv2", conv2.shape[1], group),
                          np.bincount(conv2[mask].argmax(1), minlength=conv2.shape[1]))


def test_query_set_statistics_equal_numpy(store_frame, stored):
    acts, labels, prediction = stored
    for layer in ("pool1", "fc1"):
        got = queries.group_statistics(store_frame, layer, acts[layer].shape[1])
        expected = metrics.group_statistics(acts[layer], (labels, labels == prediction))
        assert set(got) == set(expected)
        for key, stats in expected.items():
            assert got[key].count == stats.count
            members = (labels == key[0]) & ((labels == prediction) == key[1])
            _assert_same_mean(got[key].mean, acts[layer][members])
            assert np.array_equal(got[key].argmax_counts, stats.argmax_counts)


def test_q4_svcca_of_a_layer_and_the_logits(store_frame, stored):
    acts, labels, _ = stored
    a = 4
    mask = labels == a
    expected = svcca(acts["conv2"][mask], acts["logits"][mask])
    # The two algorithms (SVD of the rows; moments, as Spark sums them) give the same correlations.
    by_moments = svcca_from_moments(moments_of(acts["conv2"][mask], acts["logits"][mask]))
    assert by_moments.kept == expected.kept
    np.testing.assert_allclose(by_moments.correlations, expected.correlations, atol=1e-8)
    # Spark: a class (~180 items, fewer than conv2's 256 + 10 neurons) from its rows; all items via moments.
    got = queries.svcca(store_frame, "conv2", "logits", Group(label=a))
    assert got.kept == expected.kept
    np.testing.assert_allclose(got.correlations, expected.correlations, atol=1e-8)
    assert 0 < got.similarity < 1
    everything = queries.svcca(store_frame, "conv2", "logits")
    np.testing.assert_allclose(everything.correlations, svcca(acts["conv2"], acts["logits"]).correlations, atol=1e-8)
    assert queries.svcca(store_frame, "fc2", "fc2").similarity == pytest.approx(1.0, abs=1e-9)


def test_q6_q7_svcca_between_stores(spark, store_frame, stored):
    acts, _, _ = stored
    # Another "model" whose fc2 is a rotated and scaled copy of ours: the SVD step keeps the same subspace
    # and CCA is invariant to invertible maps, so SVCCA is 1 (a general linear map would change the
    # 99 % variance truncation).
    mix = 3.0 * np.linalg.qr(np.random.default_rng(0).normal(size=(84, 84)))[0]
    ids = store_frame.select("id", "fc2").toPandas()
    other = spark.createDataFrame(pd.DataFrame({
        "id": ids["id"], "hidden": list(np.stack(ids["fc2"].to_numpy()).astype(np.float64) @ mix)}))
    assert queries.svcca_between(store_frame, "fc2", other, "hidden").similarity == pytest.approx(1.0, abs=1e-6)
    got = queries.svcca_between(store_frame, "fc1", store_frame, "fc2")
    assert got.similarity == pytest.approx(svcca(acts["fc1"], acts["fc2"]).similarity, abs=1e-9)
