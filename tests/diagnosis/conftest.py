"""Fixtures of the diagnosis tests: scikit-learn's real digits and a LeNet-5 trained on them once per session."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scilens import cli
from scilens.core.tensor import ARROW_TENSOR_TYPE, encode
from scilens.diagnosis import datasets

SAMPLED_TECHNIQUES = ["maxmargin", "stratified_cm", "uniform", "eb_tree"]

FLOAT32_EPS = float(np.finfo(np.float32).eps)  # 1.19e-7
INFERENCE_TOLERANCE = 64 * FLOAT32_EPS
"""How far float32 inference of one model on the same inputs may differ between two processes.

A Spark worker and the test process run the same graph, but batch size and the kernel chosen for it
change the order of float32 sums: each output moves by a few ulps of the largest terms it accumulates,
and later layers carry earlier layers' rounding, so the bound is float32 epsilon (1.19e-7) times a small
factor, relative to the layer's scale (its largest value; an element that cancels to near zero keeps
the absolute error, up to 1.5e-4 of itself here). Measured on the digits' LeNet (workers against a
predict at batch sizes 32 and 256): at most 4.2 eps of the scale (fc2_bn). 64 eps (7.6e-6) leaves 15x
room for other CPUs' kernels and deeper sums, while any real difference (another model, other inputs, a
shifted row: >= 1e-3 of the scale) still fails. Comparisons made in one process, or of what a store
holds, stay exact."""


def assert_inference_close(got, expected, err_msg: str = "") -> None:
    """``got`` equals ``expected`` (float32 inference in another process) within :data:`INFERENCE_TOLERANCE`.

    The tolerance is relative to the array's largest magnitude: rounding in a sum scales with its
    terms, not with its result, so an element that cancels to near zero keeps the absolute error.
    """
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    assert got.shape == expected.shape, (got.shape, expected.shape, err_msg)
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    np.testing.assert_allclose(got, expected, rtol=0, atol=INFERENCE_TOLERANCE * max(scale, 1e-30), err_msg=err_msg)


def assert_same_predictions(predicted, scores, err_msg: str = "") -> None:
    """Each predicted class is a maximum of ``scores`` (another process's float32 outputs) up to rounding.

    Equal to ``scores.argmax(1)`` wherever the top two scores are further apart than
    :data:`INFERENCE_TOLERANCE` of the row's scale; at a closer tie either class is right.
    """
    predicted, scores = np.asarray(predicted), np.asarray(scores, np.float64)
    rows = np.arange(len(scores))
    slack = INFERENCE_TOLERANCE * np.abs(scores).max(axis=1)
    ok = scores[rows, predicted] >= scores.max(axis=1) - slack
    assert ok.all(), f"{err_msg}: items {np.flatnonzero(~ok)[:10].tolist()} predicted a class that is not the maximum"


@dataclass
class TrainedDigits:
    """A LeNet-5 trained on the digits' train split, and the digits as image tables."""

    model_path: Path
    model: object
    digits: datasets.ImageSet  # all 1,797 digits, the set diagnosed
    table: Path  # tensor layout
    array_table: Path  # flattened array<float> layout


@pytest.fixture(scope="session")
def trained_digits(tmp_path_factory) -> TrainedDigits:
    """Five epochs on 1,258 digits take a few seconds and reach ~97 % test accuracy."""
    from scilens.vision.training import ClassifierModel, TrainingConfig

    root = tmp_path_factory.mktemp("digits")
    train = datasets.digits("train")
    fit = ClassifierModel(TrainingConfig(epochs=5, batch_size=32, seed=0), n_classes=10).fit(
        train.images, train.labels)
    model_path = fit.save(root / "lenet_digits.keras")
    everything = datasets.digits("all")
    return TrainedDigits(
        model_path=model_path,
        model=fit.model,
        digits=everything,
        table=datasets.write_image_table(root / "digits", everything, rows_per_file=600),
        array_table=datasets.write_image_table(root / "digits_array", everything, layout="array",
                                               rows_per_file=600),
    )


@pytest.fixture(scope="session")
def digits_latent(trained_digits):
    """(latent fc2 activations, labels, model predictions) of all digits, by a direct Keras predict."""
    from tensorflow import keras

    model = trained_digits.model
    probe = keras.Model(model.inputs, [model.get_layer("fc2").output, model.output])
    latent, probabilities = probe.predict(trained_digits.digits.images.astype(np.float32), verbose=0)
    return latent, trained_digits.digits.labels, probabilities.argmax(axis=1)


@pytest.fixture(scope="session")
def digits_with_bad_rows(trained_digits, tmp_path_factory):
    """The digits table plus a file of three bad rows: a wrong-shaped image, a null label, label 12."""
    root = tmp_path_factory.mktemp("mixed")
    table = root / "digits"
    shutil.copytree(trained_digits.table, table)
    good = trained_digits.digits.images[0]
    bad = pa.table({"id": pa.array([9001, 9002, 9003], pa.int64()), "label": pa.array([1, None, 12], pa.int32()),
                    "image": pa.array([encode(np.zeros((8, 9, 1), np.uint8)), encode(good), encode(good)],
                                      type=ARROW_TENSOR_TYPE)})
    pq.write_table(bad, table / "part-bad.parquet")
    return table


@pytest.fixture(scope="session")
def sampled(spark, trained_digits, digits_with_bad_rows, tmp_path_factory):
    """`scilens sample` run once on the digits with bad rows: its output directory."""
    out = tmp_path_factory.mktemp("sample") / "out"
    code = cli.main(["sample", "--input", str(digits_with_bad_rows), "--output", str(out),
                     "--set", f"model={trained_digits.model_path}",
                     "--set", f"techniques=[{','.join(SAMPLED_TECHNIQUES)}]", "--set", "fractions=[0.05,0.2]"])
    assert code == 0
    return out


TOPK_LAYERS = ["fc2", "logits"]


@pytest.fixture(scope="session")
def topk_store(spark, trained_digits, tmp_path_factory):
    """An activation store of 300 digits (two small layers), written by the activations job."""
    from scilens import cli
    from scilens.diagnosis.activations import ActivationStore

    root = tmp_path_factory.mktemp("topk_store")
    assert cli.main(["activations", "--input", str(trained_digits.table), "--output", str(root / "store"),
                     "--set", f"model={trained_digits.model_path}", "--set", f"layers=[{','.join(TOPK_LAYERS)}]",
                     "--set", f"ids=[{','.join(map(str, range(300)))}]"]) == 0
    return ActivationStore.open(root / "store")


@pytest.fixture(scope="session")
def topk_index(spark, topk_store, tmp_path_factory):
    """The activation index (P=8, ratio=0.1) of ``topk_store``, built by the activation-index job."""
    from scilens import cli

    out = tmp_path_factory.mktemp("topk_index") / "index"
    assert cli.main(["activation-index", "--input", str(topk_store.path), "--output", str(out),
                     "--set", "partitions=8", "--set", "ratio=0.1"]) == 0
    return out
