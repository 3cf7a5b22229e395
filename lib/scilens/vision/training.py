"""Single-process Keras training of the small classifiers of the diagnosis study.

:class:`ClassifierModel` (an architecture and a :class:`TrainingConfig`) is
fitted to in-memory images and labels and gives a :class:`ClassifierFit`: the
trained Keras model, its per-epoch history and optional per-epoch checkpoints
(the model "at checkpoint t" that query Q6 compares). Models small enough to
train on one machine in minutes (LeNet-5, the galaxy CNN) do not need
Horovod; the images come from Spark (the ``train-model`` job collects them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any

import numpy as np

from scilens.core.config import Config, field
from scilens.vision.galaxy_cnn import build_galaxy_cnn
from scilens.vision.lenet import build_lenet5

__all__ = ["ARCHITECTURES", "ClassifierFit", "ClassifierModel", "TrainingConfig", "default_pixel_scale"]

ARCHITECTURES: dict[str, Callable[..., Any]] = {"lenet5": build_lenet5, "galaxy_cnn": build_galaxy_cnn}
"""Architecture name -> builder ``(input_shape, n_classes, pixel_scale) -> keras.Model``."""


@dataclass
class TrainingConfig(Config):
    """How to train a classifier."""

    architecture: str = field("lenet5", "Model to build.", choices=tuple(ARCHITECTURES))
    epochs: int = field(5, "Passes over the training images.", min=1)
    batch_size: int = field(128, "Images per gradient step.", min=1)
    learning_rate: float = field(1e-3, "Adam learning rate.", check=lambda v: v > 0, check_doc="must be > 0")
    validation_fraction: float = field(0.1, "Share of the training images held out to report validation "
                                       "accuracy per epoch (0: none).", min=0.0, max=0.5)
    pixel_scale: float | None = field(None, "Factor from stored pixel values to the model's input range "
                                      "(a Rescaling layer in the model); null: 1/255 for uint8 images, "
                                      "else 1/max|pixel| of the training images.")
    seed: int = field(0, "Seed of weight initialisation, shuffling and the validation split.")
    checkpoints: bool = field(False, "Keep the model after every epoch (model checkpoints for query Q6).")
    keep_best: bool = field(True, "Return the weights of the epoch with the lowest validation loss, not the last "
                            "epoch's (with validation_fraction > 0): BatchNorm networks on small batches can swing "
                            "from epoch to epoch.")


def default_pixel_scale(images: np.ndarray) -> float:
    """1/255 for uint8 images, else one over the largest absolute pixel value."""
    if images.dtype == np.uint8:
        return 1 / 255
    peak = float(np.max(np.abs(images))) if images.size else 0.0
    return 1.0 / peak if peak > 0 else 1.0


@dataclass
class ClassifierFit:
    """A trained classifier: the Keras model, its history and checkpoints."""

    model: Any
    history: dict[str, list[float]]
    checkpoints: list[Path] = dc_field(default_factory=list)
    best_epoch: int | None = None
    """1-based epoch whose weights the model holds (None: the last)."""

    def predict(self, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """Class probabilities, shape (n, classes)."""
        return np.asarray(self.model.predict(images.astype(np.float32), batch_size=batch_size, verbose=0))

    def accuracy(self, images: np.ndarray, labels: np.ndarray) -> float:
        """Share of ``images`` whose most probable class is their label."""
        return float(np.mean(self.predict(images).argmax(axis=1) == np.asarray(labels)))

    def save(self, path: str | Path) -> Path:
        """Save in Keras format (the path should end in ``.keras``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.model.save(path)
        return path


class ClassifierModel:
    """An image classifier to train: architecture plus training config.

    Parameters
    ----------
    config : TrainingConfig
    n_classes : int
        Number of classes; labels must be ``0 .. n_classes-1``.
    """

    def __init__(self, config: TrainingConfig, n_classes: int):
        self.config = config
        self.n_classes = int(n_classes)

    def fit(self, images: np.ndarray, labels: np.ndarray, checkpoint_dir: str | Path | None = None) -> ClassifierFit:
        """Train on ``images`` (n, height, width, channels) and integer ``labels`` (n,).

        With ``config.checkpoints`` the model after epoch ``e`` is saved as
        ``<checkpoint_dir>/epoch=<e>.keras`` (1-based).
        """
        import tensorflow as tf
        from tensorflow import keras

        cfg = self.config
        labels = np.asarray(labels, dtype=np.int64)
        if images.ndim == 3:  # (n, h, w): one band
            images = images[..., None]
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if labels.size and (labels.min() < 0 or labels.max() >= self.n_classes):
            raise ValueError(f"labels must lie in 0..{self.n_classes - 1}, found {labels.min()}..{labels.max()}")
        keras.utils.set_random_seed(cfg.seed)
        scale = cfg.pixel_scale if cfg.pixel_scale is not None else default_pixel_scale(images)
        model = ARCHITECTURES[cfg.architecture](input_shape=images.shape[1:], n_classes=self.n_classes,
                                                pixel_scale=scale)
        model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate),
                      loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
        order = np.random.default_rng(cfg.seed).permutation(len(labels))
        n_val = round(cfg.validation_fraction * len(labels))
        val, train = order[:n_val], order[n_val:]
        x = images.astype(np.float32)
        callbacks: list[Any] = []
        saved: list[Path] = []
        if cfg.checkpoints:
            if checkpoint_dir is None:
                raise ValueError("checkpoints=true needs a checkpoint_dir")
            folder = Path(checkpoint_dir)
            folder.mkdir(parents=True, exist_ok=True)

            def keep(epoch: int, logs: dict | None = None) -> None:
                path = folder / f"epoch={epoch + 1}.keras"
                model.save(path)
                saved.append(path)

            callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=keep))
        best: dict[str, Any] = {"loss": np.inf, "epoch": None, "weights": None}

        def remember(epoch: int, logs: dict | None = None) -> None:
            loss = (logs or {}).get("val_loss")
            if loss is not None and loss < best["loss"]:
                best.update(loss=loss, epoch=epoch + 1, weights=model.get_weights())

        if cfg.keep_best and n_val:
            callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=remember))
        history = model.fit(
            tf.constant(x[train]), tf.constant(labels[train]), epochs=cfg.epochs, batch_size=cfg.batch_size,
            validation_data=(x[val], labels[val]) if n_val else None, shuffle=True, verbose=0,
            callbacks=callbacks,
        )
        if best["weights"] is not None:
            model.set_weights(best["weights"])
        return ClassifierFit(model, {k: [float(v) for v in vs] for k, vs in history.history.items()}, saved,
                             best["epoch"])
