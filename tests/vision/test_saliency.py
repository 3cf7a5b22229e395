"""Saliency masks: integrated gradients are complete, SmoothGrad finds where the model looks."""

from __future__ import annotations

import numpy as np
import pytest

from scilens.glaucoma.preprocess import OctPreprocessConfig, preprocess_oct
from scilens.synth import retina
from scilens.vision import densenet, saliency


@pytest.fixture(scope="module")
def model_and_scan():
    model = densenet.build_densenet((32, 32, 1), densenet.DenseNetConfig(preset="tiny", seed=3))
    volume = retina.oct_volume("left", 0.5, np.random.default_rng(0), 2, 64, 80)
    scan = preprocess_oct(volume, "left", OctPreprocessConfig(image_size=32))[0][0]
    return model, scan[..., None].astype(np.float64)


def test_integrated_gradients_add_up_to_the_output_difference(model_and_scan):
    model, x = model_and_scan
    difference = float(model(x[None].astype(np.float32))[0, 0] - model(np.zeros_like(x)[None].astype(np.float32))[0, 0])
    coarse, coarse_gap = saliency.integrated_gradients(model, x, steps=8)
    fine, fine_gap = saliency.integrated_gradients(model, x, steps=128)
    assert coarse.shape == fine.shape == x.shape
    # Completeness: sum of attributions = F(x) - F(0), up to the quadrature error, which falls with the steps.
    assert fine.sum() == pytest.approx(difference, rel=0.01, abs=1e-5)
    assert abs(fine_gap) == pytest.approx(abs(fine.sum() - difference), abs=1e-6)
    assert abs(fine_gap) < abs(coarse_gap)
    # The step keeps completeness in the stored (h, w) mask: channels are summed, nothing is rescaled.
    masks = saliency.saliency_masks(model, x, saliency.SaliencyConfig(ig_steps=128, smoothgrad_samples=4))
    ig_mask, gap = masks["integrated_gradients"]
    assert ig_mask.shape == x.shape[:2] and ig_mask.sum() == pytest.approx(difference, rel=0.01, abs=1e-5)
    assert gap == pytest.approx(fine_gap, abs=1e-6)
    sg_mask, _ = masks["smoothgrad"]
    assert sg_mask.shape == x.shape[:2] and np.all(sg_mask >= 0)


def test_smoothgrad_finds_the_only_pixels_a_model_uses():
    from tensorflow import keras

    # A model that reads only a 4x4 patch: its gradient, noisy or not, lives there alone.
    inputs = keras.Input((16, 16, 1))
    patch = keras.layers.Cropping2D(((2, 10), (6, 6)))(inputs)
    outputs = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Flatten()(patch))
    model = keras.Model(inputs, outputs)
    image = np.random.default_rng(0).uniform(0, 1, (16, 16, 1))
    mask = np.abs(saliency.smoothgrad(model, image, samples=8))[..., 0]
    assert mask[2:6, 6:10].min() > 0 and mask.sum() == pytest.approx(mask[2:6, 6:10].sum())
