"""A small CNN for galaxy cutouts (69x69x3, face-on vs edge-on): the scientific model of the diagnosis study.

After Dieleman et al. / Domínguez Sánchez et al. (2018) as varied in
dissertation Ch. 4 Fig. 4.3: four convolutions (32@6x6, 64@5x5, 128@3x3,
128@3x3) with batch normalisation after each, one dropout layer and a
64-unit fully connected last hidden layer (``fc1``, the latent space of the
samplers) before two logits. The first convolution is strided and pooling
follows the first three, which keeps training on a CPU to minutes.
Block naming as in :mod:`scilens.vision.lenet`.
"""

from __future__ import annotations

from typing import Any

from scilens.vision.lenet import block

__all__ = ["HIDDEN_BLOCKS", "LATENT_LAYER", "build_galaxy_cnn"]

HIDDEN_BLOCKS = ("conv1", "pool1", "conv2", "pool2", "conv3", "pool3", "conv4", "fc1")
"""Layers whose outputs are the model's hidden representations, input to output."""

LATENT_LAYER = "fc1"


def build_galaxy_cnn(input_shape: tuple[int, ...] = (69, 69, 3), n_classes: int = 2,
                     pixel_scale: float = 1 / 255, dropout: float = 0.5) -> Any:
    """An untrained galaxy CNN as a Keras functional model.

    Parameters
    ----------
    input_shape : tuple of int
        (height, width, bands) of the stored cutouts.
    n_classes : int
        Number of classes (2: face-on, edge-on).
    pixel_scale : float
        Multiplies the stored pixel values (a ``Rescaling`` layer in the model).
    dropout : float
        Dropout rate before the last hidden layer (active in training only).
    """
    from tensorflow import keras

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = keras.layers.Rescaling(pixel_scale, name="rescale")(inputs)
    x = block(x, "conv", "conv1", 32, kernel=6, strides=2, padding="valid")
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = block(x, "conv", "conv2", 64, kernel=5, padding="valid")
    x = keras.layers.MaxPooling2D(2, name="pool2")(x)
    x = block(x, "conv", "conv3", 128, kernel=3)
    x = keras.layers.MaxPooling2D(2, name="pool3")(x)
    x = block(x, "conv", "conv4", 128, kernel=3)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    x = block(x, "dense", LATENT_LAYER, 64)
    logits = keras.layers.Dense(n_classes, name="logits")(x)
    probabilities = keras.layers.Activation("softmax", name="probabilities")(logits)
    return keras.Model(inputs, probabilities, name="galaxy_cnn")
