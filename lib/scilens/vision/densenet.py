"""DenseNet for single OCT B-scans (Huang et al. 2017), as the glaucoma study built it.

Dense blocks of bottleneck layers (BN-ReLU-1x1 conv to ``4k`` channels,
BN-ReLU-3x3 conv to ``k``, concatenated to the block input), transition
layers (BN-ReLU-1x1 conv halving the channels, 2x2 average pooling) between
blocks, global average pooling and one sigmoid unit: P(glaucoma | scan).
Weights start from MSRA (He normal) initialisation, as in the paper.

Presets (:data:`PRESETS`): ``paper`` is the study's network, blocks of
6, 12, 48 and 32 layers (DenseNet-201's), growth rate 32, the ImageNet stem
(7x7/2 convolution, 3x3/2 max pooling) for 224-px inputs; ``tiny`` has two
blocks of three layers, growth rate 8 and a 3x3/1 stem, for 32-64 px
scans in tests and demos. ``custom`` takes the fields given.

The model takes raw pixel values (0-255) and rescales them itself, so the
same saved model serves training and :mod:`scilens.vision.inference`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scilens.core.config import Config, ConfigError, field

__all__ = ["PRESETS", "DenseNetConfig", "build_densenet"]

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"blocks": [6, 12, 48, 32], "growth_rate": 32, "stem": "imagenet"},
    "tiny": {"blocks": [3, 3], "growth_rate": 8, "stem": "small"},
}


@dataclass
class DenseNetConfig(Config):
    """Architecture of the OCT DenseNet."""

    preset: str = field("paper", "Architecture preset: paper (blocks 6, 12, 48, 32), tiny (for tests and "
                        "demos), or custom (the fields below).", choices=("paper", "tiny", "custom"))
    blocks: list[int] | None = field(None, "Layers per dense block (preset custom only).", min=1)
    growth_rate: int | None = field(None, "Channels each layer adds, k (preset custom only).", min=1)
    stem: str | None = field(None, "imagenet (7x7/2 conv + 3x3/2 max pool) or small (3x3/1 conv) "
                             "(preset custom only).", choices=("imagenet", "small"))
    compression: float = field(0.5, "Channel reduction of transition layers, theta.", min=0.1, max=1.0)
    batchnorm_momentum: float = field(0.99, "Momentum of the BatchNorm moving statistics used at inference (Keras' "
                                      "0.99; lower tracks fast-changing weights of short, high-rate runs).",
                                      min=0.0, max=1.0)
    seed: int = field(0, "Seed of the MSRA weight initialisation.")

    def validate(self) -> None:
        """Check that blocks, growth rate and stem are given with preset custom, and only then."""
        given = [n for n in ("blocks", "growth_rate", "stem") if getattr(self, n) is not None]
        if self.preset == "custom" and len(given) < 3:
            missing = sorted({"blocks", "growth_rate", "stem"} - set(given))
            raise ConfigError(f"preset custom needs {', '.join(missing)}")
        if self.preset != "custom" and given:
            raise ConfigError(f"{', '.join(given)}: set only with preset custom (preset {self.preset} fixes them)")

    def architecture(self) -> dict[str, Any]:
        """Blocks, growth rate and stem this config builds."""
        if self.preset == "custom":
            return {"blocks": list(self.blocks or []), "growth_rate": self.growth_rate, "stem": self.stem}
        return dict(PRESETS[self.preset])


def build_densenet(input_shape: tuple[int, ...], config: DenseNetConfig | None = None) -> Any:
    """A compiled-ready (uncompiled) Keras DenseNet with one sigmoid output.

    Parameters
    ----------
    input_shape : tuple of int
        ``(height, width, channels)`` of a scan, raw pixel values.
    config : DenseNetConfig, optional
        Defaults to the paper's network.
    """
    from tensorflow import keras
    from tensorflow.keras import layers

    config = config or DenseNetConfig()
    arch = config.architecture()
    k = int(arch["growth_rate"])
    init = keras.initializers.HeNormal(seed=config.seed)
    counter = iter(range(10**6))

    def conv(x: Any, filters: int, size: int, stride: int = 1) -> Any:
        return layers.Conv2D(filters, size, strides=stride, padding="same", use_bias=False, kernel_initializer=init,
                             name=f"conv{next(counter)}")(x)

    def bn_relu(x: Any) -> Any:
        return layers.Activation("relu")(layers.BatchNormalization(momentum=config.batchnorm_momentum,
                                                                   epsilon=1.001e-5)(x))

    inputs = keras.Input(shape=tuple(input_shape), name="scan")
    x = layers.Rescaling(1 / 255.0, name="rescale")(inputs)
    if arch["stem"] == "imagenet":
        x = bn_relu(conv(x, 2 * k, 7, 2))
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
    else:
        x = bn_relu(conv(x, 2 * k, 3, 1))
    channels = 2 * k
    for b, n_layers in enumerate(arch["blocks"]):
        for _ in range(n_layers):
            y = conv(bn_relu(x), 4 * k, 1)
            y = conv(bn_relu(y), k, 3)
            x = layers.Concatenate()([x, y])
            channels += k
        if b < len(arch["blocks"]) - 1:
            channels = max(1, int(channels * config.compression))
            x = conv(bn_relu(x), channels, 1)
            x = layers.AveragePooling2D(2, strides=2, padding="same")(x)
    x = bn_relu(x)
    x = layers.GlobalAveragePooling2D(name="features")(x)
    outputs = layers.Dense(1, activation="sigmoid", kernel_initializer=init, name="glaucoma")(x)
    return keras.Model(inputs, outputs, name="oct_densenet")
