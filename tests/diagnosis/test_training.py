"""Training keeps the epoch that did best on the held-out images, not merely the last one."""

from __future__ import annotations

import numpy as np
import pytest

from scilens.diagnosis import datasets
from scilens.vision.training import ClassifierModel, TrainingConfig


def test_keep_best_returns_the_weights_of_the_lowest_validation_loss():
    train = datasets.digits("train")
    # A high learning rate makes the validation loss swing: with this seed it is lowest at epoch 2 of 4.
    config = TrainingConfig(epochs=4, batch_size=32, learning_rate=0.05, validation_fraction=0.2, seed=0)
    fit = ClassifierModel(config, n_classes=10).fit(train.images, train.labels)
    losses = fit.history["val_loss"]
    assert fit.best_epoch == int(np.argmin(losses)) + 1 < len(losses)
    # The returned model scores the held-out images exactly as that epoch did.
    held_out = np.random.default_rng(config.seed).permutation(len(train.labels))[:round(0.2 * len(train.labels))]
    images = train.images[held_out].astype(np.float32)
    images = images[..., None] if images.ndim == 3 else images
    loss = fit.model.evaluate(images, train.labels[held_out], verbose=0)[0]
    assert loss == pytest.approx(losses[fit.best_epoch - 1], rel=1e-4)

    last = ClassifierModel(TrainingConfig(epochs=1, batch_size=32, keep_best=False), n_classes=10).fit(
        train.images, train.labels)
    assert last.best_epoch is None
