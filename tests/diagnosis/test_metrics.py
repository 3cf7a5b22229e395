"""Query-set metrics: their definitions, and MaxMargin against uniform sampling on a trained LeNet (real digits)."""

from __future__ import annotations

import numpy as np
import pytest

from scilens.diagnosis import metrics
from scilens.diagnosis.sampling import draw_sample
from scilens.vision.lenet import HIDDEN_BLOCKS


def test_metric_definitions():
    assert metrics.precision_at_k(np.array([3, 2, 1, 0.0]), np.array([3, 1, 2, 0.0]), 2) == 0.5
    assert metrics.cosine_distance([1, 0], [0, 1]) == pytest.approx(1.0)
    assert metrics.cosine_distance([1, 2], [2, 4]) == pytest.approx(0.0, abs=1e-12)
    assert metrics.js_distance([1, 0], [0, 1]) == pytest.approx(1.0)  # disjoint supports: the maximum, base 2
    assert metrics.js_distance([5, 5], [1, 1]) == pytest.approx(0.0, abs=1e-12)
    assert list(metrics.top_k(np.array([0.0, 2.0, 2.0, 1.0]), 3)) == [1, 2, 3]  # ties: lower index first


def test_a_sample_of_everything_is_exact_and_a_missed_group_scores_worst():
    rng = np.random.default_rng(1)
    acts = rng.gamma(1.0, size=(300, 40))
    labels, correct = rng.integers(0, 3, 300), rng.random(300) < 0.9
    full = {"layer": metrics.group_statistics(acts, (labels, correct))}
    exact = metrics.query_set_accuracy(full, full, ks=(5, 10))
    assert exact == {"S1@5": 1.0, "S1@10": 1.0, "S2": pytest.approx(0.0, abs=1e-12), "S3": 0.0,
                     "groups": len(full["layer"])}
    only_correct = np.flatnonzero(correct)
    part = {"layer": metrics.group_statistics(acts, (labels, correct), index=only_correct)}
    wrong_groups = metrics.query_set_accuracy(full, part, where={1: False})
    assert wrong_groups["S1@10"] == 0.0 and wrong_groups["S2"] == 1.0 and wrong_groups["S3"] == 1.0


def test_maxmargin_s1_at_5_percent_at_least_uniform(keras_layer_activations, digits_latent):
    """The issue's check on real data: MaxMargin's S1 precision is at least uniform's, averaged over seeds."""
    acts, labels, predictions = keras_layer_activations
    latent = digits_latent[0]
    correct = labels == predictions
    argmax = {n: metrics.argmax_neurons(a) for n, a in acts.items()}
    full = {n: metrics.group_statistics(a, (labels, correct), argmax=argmax[n]) for n, a in acts.items()}

    def s1(index):
        sample = {n: metrics.group_statistics(a, (labels, correct), index=index, argmax=argmax[n])
                  for n, a in acts.items()}
        return metrics.query_set_accuracy(full, sample)["S1@10"]

    maxmargin = s1(draw_sample("maxmargin", 0.05, latent, labels, predictions).index)
    uniform = np.mean([s1(draw_sample("uniform", 0.05, latent, labels, predictions, seed=s).index)
                       for s in range(10)])
    assert maxmargin >= uniform


@pytest.fixture(scope="module")
def keras_layer_activations(trained_digits):
    from tensorflow import keras

    model = trained_digits.model
    layers = [*HIDDEN_BLOCKS, "logits"]
    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in layers] + [model.output])
    *outs, probabilities = probe.predict(trained_digits.digits.images.astype(np.float32), verbose=0)
    return ({n: o.reshape(len(o), -1) for n, o in zip(layers, outs)}, trained_digits.digits.labels,
            probabilities.argmax(axis=1))
