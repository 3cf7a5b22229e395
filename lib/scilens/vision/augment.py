"""Training-time image augmentation (dissertation Ch. 3 §3.2), for any image CNN.

A random affine map (rotation, scale, shift), an elastic deformation (smoothed
random displacements) and an intensity change (gain, bias, gamma), applied in
one resampling, on float images in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from scilens.core.config import Config, field

__all__ = ["AugmentConfig", "augment"]


@dataclass
class AugmentConfig(Config):
    """Random training-time transformations (affine, elastic, intensity)."""

    enabled: bool = field(True, "Augment training images (never validation or test images).")
    rotation_deg: float = field(8.0, "Largest rotation, degrees.", min=0.0, max=180.0)
    scale: float = field(0.08, "Largest relative zoom in or out.", min=0.0, max=0.5)
    shift: float = field(0.05, "Largest shift, as a fraction of the image side.", min=0.0, max=0.5)
    elastic_alpha: float = field(0.02, "Elastic displacement amplitude, as a fraction of the image side.",
                                 min=0.0, max=0.5)
    elastic_sigma: float = field(0.08, "Smoothness of the elastic displacement, as a fraction of the side.",
                                 min=0.001, max=1.0)
    gain: float = field(0.1, "Standard deviation of the log intensity gain.", min=0.0)
    bias: float = field(0.03, "Standard deviation of the intensity offset (images in [0, 1]).", min=0.0)
    gamma: float = field(0.1, "Standard deviation of the log gamma.", min=0.0)


def augment(image: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """One random affine + elastic + intensity transform of ``image`` (h, w[, c]) in [0, 1].

    The geometric part maps every output pixel to a source position (affine
    about the centre plus a smooth displacement field) and samples bilinearly,
    edges extended; the intensity part is ``gain * x**gamma + bias``.
    """
    if not config.enabled:
        return image
    h, w = image.shape[:2]
    angle = np.deg2rad(rng.uniform(-config.rotation_deg, config.rotation_deg))
    zoom = 1.0 + rng.uniform(-config.scale, config.scale)
    shift = rng.uniform(-config.shift, config.shift, 2) * np.array([h, w])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
    src_y = cos * (yy - cy) - sin * (xx - cx) + cy - shift[0]
    src_x = sin * (yy - cy) + cos * (xx - cx) + cx - shift[1]
    if config.elastic_alpha > 0:
        sigma = config.elastic_sigma * max(h, w)
        for grid in (src_y, src_x):
            field_ = ndimage.gaussian_filter(rng.uniform(-1, 1, (h, w)), sigma)
            grid += field_ / (np.abs(field_).max() + 1e-12) * config.elastic_alpha * max(h, w)
    channels = image[..., None] if image.ndim == 2 else image
    out = np.stack([ndimage.map_coordinates(channels[..., c], [src_y, src_x], order=1, mode="nearest")
                    for c in range(channels.shape[-1])], axis=-1)
    out = np.clip(out, 0.0, 1.0) ** np.exp(rng.normal(0.0, config.gamma))
    out = np.exp(rng.normal(0.0, config.gain)) * out + rng.normal(0.0, config.bias)
    out = np.clip(out, 0.0, 1.0).astype(image.dtype, copy=False)
    return out[..., 0] if image.ndim == 2 else out
