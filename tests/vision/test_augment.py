"""Training-time augmentation: identity when off, a small seeded transform otherwise."""

from __future__ import annotations

import numpy as np

from scilens.synth import retina
from scilens.vision.augment import AugmentConfig, augment


def test_augmentation_is_identity_when_switched_off_and_keeps_the_image_otherwise():
    image = retina.oct_volume("left", 0.0, np.random.default_rng(1), 1, 48, 48)[0].astype(np.float32) / 255
    rng = np.random.default_rng(0)
    assert augment(image, rng, AugmentConfig(enabled=False)) is image
    still = AugmentConfig(rotation_deg=0, scale=0, shift=0, elastic_alpha=0, gain=0, bias=0, gamma=0)
    assert np.allclose(augment(image, rng, still), image, atol=1e-6)
    out = augment(image, np.random.default_rng(1), AugmentConfig())
    assert out.shape == image.shape and out.dtype == image.dtype and 0 <= out.min() and out.max() <= 1
    assert not np.allclose(out, image)
    # Small transforms: the augmented scan still correlates with the original.
    assert np.corrcoef(out.ravel(), image.ravel())[0, 1] > 0.5
    again = augment(image, np.random.default_rng(1), AugmentConfig())
    assert np.array_equal(out, again)
