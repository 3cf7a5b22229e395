"""Opening an image table for a job: columns checked, bad rows quarantined, nothing heavy done yet.

``train-model``, ``sample`` and ``activations`` read the same kind of table
(:mod:`scilens.diagnosis.datasets`): ``id``, ``label`` and an image column.
:func:`open_image_table` checks what can be checked cheaply -- columns,
duplicate ids, labels against the model's classes, every class present,
stored image shapes against the model's input -- raising
:class:`~scilens.core.inputs.InputError` for a problem of the whole table,
and splits off rows that cannot be used (null or out-of-range label, null
id, wrong image shape or size) as ``_rejected`` records naming file and id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from scilens.core.config import ConfigError
from scilens.core.inputs import InputError, list_files
from scilens.core.quarantine import REJECTED_TYPE
from scilens.diagnosis.config import ImageTableConfig
from scilens.vision.inference import (
    ImageLayout,
    ModelInfo,
    check_model_input,
    decode_images,
    describe_model,
    image_layout,
    invalid_image_reason,
)

__all__ = ["ImageTable", "ImageTableConfig", "collect_images", "model_info", "open_image_table"]


@dataclass
class ImageTable:
    """The usable rows of an image table and what was learnt opening it.

    Attributes
    ----------
    frame : DataFrame
        Valid rows: ``id`` (long), ``label`` (int), the image column as stored.
    rejected : DataFrame
        Rows of :data:`~scilens.core.quarantine.REJECTED_TYPE` for the bad rows.
    layout : ImageLayout
    shape : tuple of int
        The stored image shape the valid rows have.
    class_counts : dict
        Label -> rows with that label (before image checks).
    source : str
        The input, for messages.
    """

    frame: DataFrame
    rejected: DataFrame
    layout: ImageLayout
    shape: tuple[int, ...]
    class_counts: dict[int, int]
    source: str


def model_info(model: str | None) -> ModelInfo:
    """The job's ``model`` field, checked and described (ConfigError if unset, InputError if unusable)."""
    if model is None:
        raise ConfigError("model: give the saved Keras model, e.g. --set model=path/model.keras")
    return describe_model(model)


def open_image_table(spark: SparkSession, inputs: Sequence[str], columns: ImageTableConfig,
                     model: ModelInfo | None = None, n_classes: int | None = None,
                     step: str = "validate") -> ImageTable:
    """Open and check the Parquet image table at ``inputs`` (files, directories or globs).

    Parameters
    ----------
    model : ModelInfo, optional
        The model the images are for: its input shape and number of classes
        are checked. Without one, the table's (single) stored shape is used.
    n_classes : int, optional
        Number of classes when there is no model; by default ``max(label) + 1``.
    step : str
        Step name recorded with rejected rows.
    """
    source = ", ".join(inputs)
    files = list_files(list(inputs), (".parquet",))
    raw = spark.read.parquet(*files).withColumn("_path", F.input_file_name())
    wanted = [columns.id_column, columns.label_column, columns.image_column]
    missing = [c for c in wanted if c not in raw.columns]
    if missing:
        raise InputError(f"{source}: no column {', '.join(map(repr, missing))}; columns are "
                         f"{', '.join(c for c in raw.columns if c != '_path')}")
    df = raw.select(F.col(columns.id_column).cast("long").alias("id"),
                    F.col(columns.label_column).cast("int").alias("label"),
                    F.col(columns.image_column).alias(columns.image_column), "_path")
    dupes = df.where(F.col("id").isNotNull()).groupBy("id").count().where(F.col("count") > 1).limit(5).collect()
    if dupes:
        shown = ", ".join(f"id {r['id']} ({r['count']} rows)" for r in dupes)
        raise InputError(f"{source}: ids must be unique; found {shown}")
    counts = {r["label"]: r["count"] for r in df.groupBy("label").count().collect() if r["label"] is not None}
    if n_classes is None:
        n_classes = model.n_classes if model is not None else (max(counts) + 1 if counts else 0)
    in_range = {k: v for k, v in counts.items() if 0 <= k < n_classes}
    empty = [k for k in range(n_classes) if k not in in_range]
    if not in_range:
        raise InputError(f"{source}: no rows with a label in 0..{n_classes - 1}")
    if empty:
        raise InputError(f"{source}: class {', '.join(map(str, empty))} has no rows; every one of the "
                         f"{n_classes} classes{' of the model' if model is not None else ''} needs items")
    layout = image_layout(df, columns.image_column, columns.image_shape)
    if model is not None:
        shape = check_model_input(model, layout, source)
    elif len(layout.shapes) == 1:
        shape = layout.shapes[0]
    else:
        found = ", ".join("x".join(map(str, s)) for s in layout.shapes)
        raise InputError(f"{source}: images of several shapes ({found}); keep one shape per table")
    label = F.col("label")
    outside = F.concat(F.lit("label "), label.cast("string"), F.lit(f" is outside the classes 0..{n_classes - 1}"))
    reason = (F.when(F.col("id").isNull(), F.lit("id is null"))
               .when(label.isNull(), F.lit("label is null"))
               .when((label < 0) | (label >= n_classes), outside)
               .otherwise(invalid_image_reason(layout, shape)))
    checked = df.withColumn("_reason", reason)
    good = checked.where(F.col("_reason").isNull()).drop("_reason", "_path")
    record = F.concat(F.lit("id="), F.coalesce(F.col("id").cast("string"), F.lit("null")))
    rejected = checked.where(F.col("_reason").isNotNull()).select(
        F.col("_path").alias("path"), record.alias("record"), F.lit(step).alias("step"),
        F.lit("InvalidInput").alias("error_type"),
        F.concat(F.col("_path"), F.lit(": "), record, F.lit(": "), F.col("_reason")).alias("message"),
    ).select(*[F.col(f.name).cast(f.dataType) for f in REJECTED_TYPE.fields])
    return ImageTable(good, rejected, layout, tuple(shape), in_range, source)


def collect_images(table: ImageTable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, labels, images) of the valid rows on the driver, images (n, *shape) as stored (sorted by id)."""
    column = table.layout.column
    pdf: pd.DataFrame = table.frame.select("id", "label", column).orderBy("id").toPandas()
    images = (np.stack(decode_images(pdf[column], table.layout, table.shape, pdf["id"].tolist(), dtype=None))
              if len(pdf) else np.empty((0, *table.shape)))
    return pdf["id"].to_numpy(np.int64), pdf["label"].to_numpy(np.int64), images


