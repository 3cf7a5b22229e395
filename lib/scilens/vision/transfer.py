"""Transfer learning for colour fundus photos: a Keras application network, 2/3 of it frozen.

The glaucoma study fine-tuned an Inception-ResNet pre-trained on ImageNet,
keeping the first 2/3 of its layers frozen, with Adam at learning rate 1e-5.
**No pre-trained weights can be downloaded here**, so :func:`build_transfer_model`
takes the base network's weights from a local file (``weights``: a Keras
weights file of the base without its top, e.g. ImageNet weights fetched
elsewhere) and otherwise starts from random initialisation. With random
weights the frozen layers are fixed random features and only the last third
learns, so expect a much weaker CFP model than the paper's (AUC 0.74) unless
real weights are supplied.

The model takes raw pixel values (0-255) and applies the base network's own
input scaling, so the same saved model serves training and
:mod:`scilens.vision.inference`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scilens.core.config import Config, field
from scilens.core.inputs import InputError

__all__ = ["BASES", "TransferConfig", "build_transfer_model", "frozen_layer_count"]

BASES = ("InceptionResNetV2", "MobileNetV2")
"""Base networks offered: both scale inputs to [-1, 1] and name their layers with plain identifiers (which
:mod:`scilens.vision.inference` needs to expose them as columns)."""


@dataclass
class TransferConfig(Config):
    """The CFP transfer-learning model."""

    base: str = field("InceptionResNetV2", "Keras application network under the new head (the paper used an "
                      "Inception-ResNet; MobileNetV2 is small enough for tests).", choices=BASES)
    weights: str | None = field(None, "Local weights file of the base network without its top (e.g. ImageNet "
                                "weights); null: random initialisation, since nothing can be downloaded here.")
    frozen_fraction: float = field(2 / 3, "Share of the base network's layers, from the input on, whose weights "
                                   "stay frozen.", min=0.0, max=1.0)
    width_multiplier: float = field(1.0, "MobileNetV2 width multiplier alpha (other bases ignore it).",
                                    choices=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4))
    seed: int = field(0, "Seed of the random initialisation of the head (and of the base without weights).")


def frozen_layer_count(n_layers: int, fraction: float) -> int:
    """How many of ``n_layers`` base layers a ``fraction`` freezes (rounded)."""
    return round(n_layers * fraction)


def build_transfer_model(input_shape: tuple[int, ...], config: TransferConfig | None = None) -> Any:
    """Base network (weights from ``config.weights`` or random) + global pooling + one sigmoid unit.

    Raises
    ------
    InputError
        The weights file is missing or does not fit the base network.
    """
    import tensorflow as tf
    from tensorflow import keras
    from tensorflow.keras import layers

    config = config or TransferConfig()
    tf.keras.utils.set_random_seed(config.seed)
    inputs = keras.Input(shape=tuple(input_shape), name="photo")
    scaled = layers.Rescaling(1 / 127.5, offset=-1.0, name="rescale")(inputs)
    # Built on our input tensor, the base's layers join the model directly (no nested model), so each
    # layer keeps its own name for inference outputs.
    kwargs: dict[str, Any] = {"include_top": False, "weights": None, "input_tensor": scaled, "pooling": "avg"}
    if config.base == "MobileNetV2":
        kwargs["alpha"] = config.width_multiplier
    base = getattr(keras.applications, config.base)(**kwargs)
    if config.weights:
        path = Path(config.weights)
        if not path.is_file():
            raise InputError(f"weights {path}: no such file")
        try:
            base.load_weights(str(path))
        except Exception as exc:  # h5py/Keras raise several types for a file that does not fit
            raise InputError(f"weights {path}: do not fit {config.base} without top "
                             f"({type(exc).__name__}: {exc})") from None
    own = [layer for layer in base.layers if layer.name not in ("photo", "rescale")]
    for layer in own[:frozen_layer_count(len(own), config.frozen_fraction)]:
        layer.trainable = False
    outputs = layers.Dense(1, activation="sigmoid", name="glaucoma",
                           kernel_initializer=keras.initializers.GlorotUniform(seed=config.seed))(base.output)
    return keras.Model(inputs, outputs, name=f"cfp_{config.base.lower()}")
