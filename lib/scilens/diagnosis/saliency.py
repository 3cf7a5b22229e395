"""Saliency masks of any Keras image classifier over a scilens image table (``scilens saliency``).

The kernels are :mod:`scilens.vision.saliency` (integrated gradients and
SmoothGrad, the same code the glaucoma jobs use); this module adds the
choice of the explained output, the per-image record and the Spark stage.

Which output a mask explains (``target``): ``predicted`` (the model's class
for the image), ``label`` (the true class) or a class number. A
single-output model (a sigmoid probability) has one output to explain, so
its masks always explain output 0 whatever the rule; its prediction is
``probability >= 0.5``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from scilens.core import tensor
from scilens.vision.inference import ImageLayout, ModelInfo, decode_images
from scilens.vision.saliency import SaliencyConfig

__all__ = ["MASK_SCHEMA", "TARGET_RULES", "check_target", "image_saliency", "resolve_target", "saliency_frame"]

TARGET_RULES = ("predicted", "label")

MASK_SCHEMA = T.StructType([
    T.StructField("mask_id", T.LongType(), False),
    T.StructField("id", T.LongType(), False),
    T.StructField("label", T.IntegerType(), True),
    T.StructField("prediction", T.IntegerType(), False),
    T.StructField("method", T.StringType(), False),
    T.StructField("target", T.IntegerType(), False),
    T.StructField("probability", T.DoubleType(), False),
    T.StructField("completeness_gap", T.DoubleType(), True),
    T.StructField("mask", tensor.TENSOR_TYPE, False),
])
"""Rows of ``masks.parquet``: the mask's own id (``id x methods + the method's position`` in the config, unique,
what ``scilens mask-index`` fetches masks by), the item, the model's prediction, and one (h, w) float32 mask per
method."""


def check_target(target: str, n_classes: int) -> str | int:
    """The ``target`` setting checked: a rule of :data:`TARGET_RULES` or a class number below ``n_classes``.

    Parameters
    ----------
    target : str
        ``predicted``, ``label`` or a class number.
    n_classes : int
        Outputs of the model (1 for a single probability).

    Returns
    -------
    str or int

    Raises
    ------
    ValueError
        Naming the accepted values.
    """
    if target in TARGET_RULES:
        return target
    if str(target).isdigit() and int(target) < max(n_classes, 1):
        return int(target)
    raise ValueError(f"target must be predicted, label or a class in 0..{max(n_classes, 1) - 1}, got {target!r}")


def resolve_target(rule: str | int, label: int | None, probabilities: np.ndarray) -> int:
    """The output a mask explains for one image (see the module doc).

    Parameters
    ----------
    rule : str or int
        From :func:`check_target`.
    label : int or None
        The image's true class.
    probabilities : numpy.ndarray
        The model's outputs for the image, flattened.

    Returns
    -------
    int
    """
    if probabilities.size == 1:
        return 0
    if rule == "predicted":
        return int(np.argmax(probabilities))
    if rule == "label":
        if label is None or not 0 <= label < probabilities.size:
            raise ValueError(f"label {label} is not a class of a {probabilities.size}-output model")
        return int(label)
    return int(rule)


def image_saliency(model: Any, image: np.ndarray, label: int | None, target: str | int,
                   config: SaliencyConfig) -> Iterator[dict[str, Any]]:
    """Saliency masks of one image by every configured method: one record per method.

    Parameters
    ----------
    model : keras.Model
        The classifier, taking the image as stored (no rescaling).
    image : numpy.ndarray
        The model input, (h, w) or (h, w, c).
    label : int or None
        The image's true class.
    target : str or int
        From :func:`check_target`.
    config : SaliencyConfig
        Methods and their parameters.

    Returns
    -------
    Iterator of dict
        ``label``, ``prediction``, ``method``, ``target``, ``probability``
        (of the target output), ``completeness_gap`` and ``mask`` ((h, w) float32).
    """
    from scilens.vision.saliency import saliency_masks

    x = np.asarray(image, dtype=np.float32)
    x = x[..., None] if x.ndim == 2 else x
    probabilities = np.asarray(model(x[None], training=False), dtype=np.float64).ravel()
    prediction = int(probabilities[0] >= 0.5) if probabilities.size == 1 else int(np.argmax(probabilities))
    explained = resolve_target(target, label, probabilities)
    for method, (mask, gap) in saliency_masks(model, x, config, explained).items():
        yield {"label": label, "prediction": prediction, "method": method, "target": explained,
               "probability": float(probabilities[explained]), "completeness_gap": gap, "mask": mask}


def saliency_frame(frame: DataFrame, info: ModelInfo, layout: ImageLayout, config: SaliencyConfig,
                   target: str | int, tasks: int) -> DataFrame:
    """Saliency masks of every (valid) image of ``frame``, computed on the executors.

    Parameters
    ----------
    frame : pyspark.sql.DataFrame
        Valid image rows: ``id``, ``label`` and the image column of ``layout``.
    info : ModelInfo
        The model (loaded once per task, from ``info.path``).
    layout : ImageLayout
        How ``frame`` stores its images.
    config : SaliencyConfig
        Methods and their parameters.
    target : str or int
        From :func:`check_target`.
    tasks : int
        Tasks to spread the images over: the frame is range-partitioned by id
        into this many, so each task's masks come out in one id range.

    Returns
    -------
    pyspark.sql.DataFrame
        Rows of :data:`MASK_SCHEMA`, one per image and method.
    """
    path, shape = info.path, tuple(info.input_shape)
    position = {method: k for k, method in enumerate(config.methods)}

    def compute(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from scilens.vision.inference import with_model

        for model, batch in with_model(path, batches):
            rows = []
            images = decode_images(batch[layout.column], layout, shape, batch["id"].tolist())
            for item, label, image in zip(batch["id"], batch["label"], images):
                label = None if pd.isna(label) else int(label)
                for record in image_saliency(model, image, label, target, config):
                    rows.append({**record, "id": int(item), "mask": tensor.encode(record["mask"]),
                                 "mask_id": int(item) * len(position) + position[record["method"]]})
            yield pd.DataFrame(rows, columns=MASK_SCHEMA.fieldNames())

    return (frame.select(F.col("id").cast("long"), F.col("label").cast("int"), layout.column)
            .repartitionByRange(max(1, tasks), "id")
            .mapInPandas(compute, MASK_SCHEMA))
