"""The images of top-k query answers, fetched by id (drawn by :func:`scilens.vision.figures.contact_sheet`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from pyspark.sql import functions as F

from scilens.diagnosis.image_table import ImageTable
from scilens.vision.inference import decode_images


def images_by_id(table: ImageTable, ids: Sequence[int]) -> dict[int, np.ndarray]:
    """Return the stored images of ``ids`` (only those rows reach the driver).

    Parameters
    ----------
    table : ImageTable
        The opened image table.
    ids : sequence of int
        Item ids wanted.

    Returns
    -------
    dict of int to numpy.ndarray
        Id to image, as stored; ids absent from the table are left out.
    """
    column = table.layout.column
    pdf: pd.DataFrame = table.frame.where(F.col("id").isin([int(i) for i in ids])).select("id", column).toPandas()
    images = decode_images(pdf[column], table.layout, table.shape, pdf["id"].tolist(), dtype=None)
    return {int(i): img for i, img in zip(pdf["id"], images)}
