"""LeNet-5 with batch normalisation after every layer: the MNIST-family model of the diagnosis study.

Dissertation Ch. 4 Fig. 4.2: two 5x5 convolutions (6 and 16 channels, each
followed by 2x2 max pooling) and two fully connected layers (120 and 84
units) before the class logits. With ``same`` padding on 28x28 inputs these
are the layer sizes behind the 107,786 parameters of Table 4.1; here the
batch normalisation after each hidden layer carries its offset instead of a
bias, for 108,464 parameters in all.

Each hidden layer is a block ``<name>_conv``/``<name>_dense`` (no bias: the
batch normalisation that follows has one) -> ``<name>_bn`` -> ``<name>``
(ReLU), so a block's name is its non-negative output, the activations
diagnosis queries rank. The logits layer is ``logits`` and the softmax
``probabilities``; the last hidden layer (the latent space of the samplers)
is ``fc2``, 84 units.
"""

from __future__ import annotations

from typing import Any

__all__ = ["HIDDEN_BLOCKS", "LATENT_LAYER", "block", "build_lenet5"]

HIDDEN_BLOCKS = ("conv1", "pool1", "conv2", "pool2", "fc1", "fc2")
"""Layers whose outputs are the model's hidden representations, input to output."""

LATENT_LAYER = "fc2"


def block(x: Any, kind: str, name: str, units: int, kernel: int = 3, strides: int = 1,
          padding: str = "same") -> Any:
    """A hidden layer followed by batch normalisation and ReLU.

    Parameters
    ----------
    x : keras tensor
    kind : {"conv", "dense"}
    name : str
        Name of the block's output (the ReLU); the inner layers are
        ``<name>_conv``/``<name>_dense`` and ``<name>_bn``.
    units : int
        Channels of a convolution or units of a dense layer.
    kernel, strides, padding
        Convolution geometry (ignored for dense layers).
    """
    from tensorflow import keras

    if kind == "conv":
        x = keras.layers.Conv2D(units, kernel, strides=strides, padding=padding, use_bias=False,
                                name=f"{name}_conv")(x)
    elif kind == "dense":
        x = keras.layers.Dense(units, use_bias=False, name=f"{name}_dense")(x)
    else:
        raise ValueError(f"block kind must be 'conv' or 'dense', not {kind!r}")
    # Momentum 0.9 (Keras: 0.99) so the inference-time statistics settle within a few hundred steps.
    x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return keras.layers.Activation("relu", name=name)(x)


def build_lenet5(input_shape: tuple[int, ...] = (28, 28, 1), n_classes: int = 10,
                 pixel_scale: float = 1 / 255) -> Any:
    """An untrained LeNet-5 (BN after every layer) as a Keras functional model.

    Parameters
    ----------
    input_shape : tuple of int
        (height, width, channels) of the stored images; 8x8 (scikit-learn's
        digits) works too, the pools then leave 2x2 maps.
    n_classes : int
        Number of classes (logits).
    pixel_scale : float
        Multiplies the stored pixel values (a ``Rescaling`` layer inside the
        model), so the model takes images as they are stored, e.g. uint8.
    """
    from tensorflow import keras

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = keras.layers.Rescaling(pixel_scale, name="rescale")(inputs)
    x = block(x, "conv", "conv1", 6, kernel=5)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = block(x, "conv", "conv2", 16, kernel=5)
    x = keras.layers.MaxPooling2D(2, name="pool2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = block(x, "dense", "fc1", 120)
    x = block(x, "dense", LATENT_LAYER, 84)
    logits = keras.layers.Dense(n_classes, name="logits")(x)
    probabilities = keras.layers.Activation("softmax", name="probabilities")(logits)
    return keras.Model(inputs, probabilities, name="lenet5_bn")
