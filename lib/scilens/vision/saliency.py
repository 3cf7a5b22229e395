"""Pixel saliency of a single-output image classifier: integrated gradients and SmoothGrad.

Integrated gradients (Sundararajan et al. 2017) attribute ``F(x) - F(x')``
to the pixels by integrating the gradient along the straight path from a
baseline ``x'`` (here a black image) to ``x``::

    IG_i(x) = (x_i - x'_i) * integral_0^1 dF(x' + a (x - x'))/dx_i da

approximated by the trapezoidal rule over ``steps`` points. Completeness --
the attributions sum to ``F(x) - F(x')`` -- holds up to the quadrature
error, and :func:`integrated_gradients` returns that sum's gap so callers can
check it. SmoothGrad (Smilkov et al. 2017) averages the gradient over
``samples`` copies of the image with Gaussian noise of ``noise`` times the
image's value range, and reports its magnitude.

Masks have the image's spatial shape ``(h, w)``: channels are summed for IG
(keeping completeness) and their absolute gradients summed for SmoothGrad.
``F`` is the model's output probability of the ``target`` class (output 0 of
a single-output model such as the scilens retina models; any class of a
softmax classifier), in whatever units the model takes its input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from scilens.core.config import Config, field

__all__ = ["METHODS", "SaliencyConfig", "integrated_gradients", "saliency_masks", "smoothgrad"]

METHODS = ("integrated_gradients", "smoothgrad")


@dataclass
class SaliencyConfig(Config):
    """Saliency methods and their parameters."""

    methods: list[str] = field(list(METHODS), "Methods to compute.", choices=METHODS)
    ig_steps: int = field(64, "Points of the integrated-gradients path (trapezoidal rule).", min=2)
    smoothgrad_samples: int = field(25, "Noisy copies averaged by SmoothGrad.", min=1)
    smoothgrad_noise: float = field(0.15, "SmoothGrad noise standard deviation, as a fraction of the image's "
                                    "value range.", min=0.0)
    batch_size: int = field(32, "Images per gradient evaluation.", min=1)
    seed: int = field(0, "Seed of the SmoothGrad noise.")


def _gradients(model: Any, images: np.ndarray, batch_size: int, target: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(outputs (n,), gradients of output ``target`` w.r.t. the input (n, ...)) in float64."""
    import tensorflow as tf

    outputs, grads = [], []
    for start in range(0, len(images), batch_size):
        x = tf.convert_to_tensor(images[start:start + batch_size], dtype=tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reshape(model(x, training=False), (len(x), -1))[:, target]
        grads.append(tape.gradient(y, x).numpy().astype(np.float64))
        outputs.append(y.numpy().astype(np.float64))
    return np.concatenate(outputs), np.concatenate(grads)


def integrated_gradients(model: Any, image: np.ndarray, baseline: np.ndarray | None = None, steps: int = 64,
                         batch_size: int = 32, target: int = 0) -> tuple[np.ndarray, float]:
    """Integrated-gradients attributions of ``image`` (same shape) to output ``target``, and the completeness gap.

    Returns
    -------
    attributions : ndarray
        Per input element (pixel and channel), float64.
    gap : float
        ``attributions.sum() - (F(image) - F(baseline))``; small when ``steps`` suffice.
    """
    image = np.asarray(image, dtype=np.float64)
    baseline = np.zeros_like(image) if baseline is None else np.asarray(baseline, dtype=np.float64)
    alphas = np.linspace(0.0, 1.0, steps)
    path = baseline[None] + alphas.reshape(-1, *([1] * image.ndim)) * (image - baseline)[None]
    outputs, grads = _gradients(model, path, batch_size, target)
    weights = np.full(steps, 1.0 / (steps - 1))
    weights[[0, -1]] /= 2  # trapezoidal rule
    mean_grad = np.tensordot(weights, grads, axes=1)
    attributions = (image - baseline) * mean_grad
    return attributions, float(attributions.sum() - (outputs[-1] - outputs[0]))


def smoothgrad(model: Any, image: np.ndarray, samples: int = 25, noise: float = 0.15, seed: int = 0,
               batch_size: int = 32, target: int = 0) -> np.ndarray:
    """SmoothGrad: mean gradient of output ``target`` over noisy copies of ``image`` (same shape as the image)."""
    image = np.asarray(image, dtype=np.float64)
    rng = np.random.default_rng(seed)
    sigma = noise * (float(image.max() - image.min()) or 1.0)
    noisy = image[None] + rng.normal(0.0, sigma, (samples, *image.shape))
    return _gradients(model, noisy, batch_size, target)[1].mean(axis=0)


def saliency_masks(model: Any, image: np.ndarray, config: SaliencyConfig | None = None,
                   target: int = 0) -> dict[str, tuple[np.ndarray, float]]:
    """Saliency masks of one image for every configured method.

    Parameters
    ----------
    model
        A Keras image classifier (probability outputs).
    image
        The model input, (h, w, c).
    config
        Methods and their parameters; the defaults when None.
    target
        The output explained: 0 for a single-output model, the class for a softmax classifier.

    Returns
    -------
    dict
        ``{method: (mask (h, w) float32, completeness gap or NaN)}``; the gap is integrated
        gradients' completeness error, NaN for SmoothGrad.
    """
    cfg = config or SaliencyConfig()
    out: dict[str, tuple[np.ndarray, float]] = {}
    if "integrated_gradients" in cfg.methods:
        attributions, gap = integrated_gradients(model, image, steps=cfg.ig_steps, batch_size=cfg.batch_size,
                                                  target=target)
        out["integrated_gradients"] = (attributions.sum(axis=-1).astype(np.float32), gap)
    if "smoothgrad" in cfg.methods:
        grad = smoothgrad(model, image, cfg.smoothgrad_samples, cfg.smoothgrad_noise, cfg.seed, cfg.batch_size,
                          target)
        out["smoothgrad"] = (np.abs(grad).sum(axis=-1).astype(np.float32), float("nan"))
    return out
