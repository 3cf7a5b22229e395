"""Fixtures of the diagnosis tests: scikit-learn's real digits and a LeNet-5 trained on them once per session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from scilens.diagnosis import datasets


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
