"""The OCT DenseNet and the CFP transfer model are built as the paper describes."""

from __future__ import annotations

import numpy as np
import pytest

from scilens.core.config import ConfigError
from scilens.core.inputs import InputError
from scilens.vision import densenet, transfer


def test_paper_densenet_is_densenet_201():
    from tensorflow import keras

    model = densenet.build_densenet((224, 224, 1))
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    # Stem + 2 convolutions per layer of blocks 6+12+48+32 + 3 transitions + the output: 201 weighted layers.
    assert len(convs) == 1 + 2 * (6 + 12 + 48 + 32) + 3 and len(dense) == 1
    assert len(convs) + len(dense) == 201
    assert isinstance(convs[0].kernel_initializer, keras.initializers.HeNormal)  # MSRA initialisation
    assert model.output_shape == (None, 1) and model.layers[-1].activation.__name__ == "sigmoid"


def test_densenet_presets_and_config_errors():
    assert densenet.DenseNetConfig(preset="tiny").architecture()["blocks"] == [3, 3]
    custom = densenet.DenseNetConfig(preset="custom", blocks=[2], growth_rate=4, stem="small")
    model = densenet.build_densenet((16, 16, 1), custom)
    x = np.random.default_rng(0).uniform(0, 255, (3, 16, 16, 1)).astype(np.float32)
    p = model.predict(x, verbose=0)
    assert p.shape == (3, 1) and np.all((p > 0) & (p < 1))
    with pytest.raises(ConfigError, match="set only with preset custom"):
        densenet.DenseNetConfig(preset="tiny", blocks=[2, 2])
    with pytest.raises(ConfigError, match="preset custom needs growth_rate, stem"):
        densenet.DenseNetConfig(preset="custom", blocks=[2, 2])


def test_transfer_model_freezes_two_thirds_and_loads_local_weights(tmp_path):
    from tensorflow import keras

    config = transfer.TransferConfig(base="MobileNetV2", width_multiplier=0.35)
    model = transfer.build_transfer_model((32, 32, 3), config)
    base = [layer for layer in model.layers if layer.name not in ("photo", "rescale", "glaucoma")]
    frozen = [layer for layer in base if not layer.trainable]
    assert len(frozen) == round(len(base) * 2 / 3)
    assert all(not layer.trainable for layer in base[:len(frozen)])  # the first two thirds, from the input
    assert all(layer.trainable for layer in base[len(frozen):])

    # A local weights file of the base network (stand-in for ImageNet weights fetched elsewhere).
    donor = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3),
                                           pooling="avg", alpha=0.35)
    donor.get_layer("Conv1").set_weights([np.full_like(w, 0.01) for w in donor.get_layer("Conv1").get_weights()])
    # Keras 3 saves weights only to a name ending in .weights.h5; Keras 2 writes and reads that as HDF5 too.
    donor.save_weights(str(tmp_path / "base.weights.h5"))
    loaded = transfer.build_transfer_model((32, 32, 3), transfer.TransferConfig(
        base="MobileNetV2", width_multiplier=0.35, weights=str(tmp_path / "base.weights.h5")))
    assert np.all(loaded.get_layer("Conv1").get_weights()[0] == np.float32(0.01))
    with pytest.raises(InputError, match="no such file"):
        transfer.build_transfer_model((32, 32, 3), transfer.TransferConfig(base="MobileNetV2",
                                                                           weights=str(tmp_path / "none.weights.h5")))
    with pytest.raises(InputError, match="do not fit MobileNetV2"):
        transfer.build_transfer_model((32, 32, 3), transfer.TransferConfig(base="MobileNetV2",
                                                                           weights=str(tmp_path / "base.weights.h5")))
