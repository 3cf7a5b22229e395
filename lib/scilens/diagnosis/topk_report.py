"""Pictures of top-k query answers: the returned images with their id and score, as one contact sheet."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import functions as F

from scilens.core import tensor
from scilens.diagnosis.image_table import ImageTable


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
    if table.layout.kind == "tensor":
        images = list(tensor.decode_column(pdf[column])) if len(pdf) else []
    else:
        images = [np.asarray(v, dtype=np.float32).reshape(table.shape) for v in pdf[column]]
    return {int(i): np.asarray(img) for i, img in zip(pdf["id"], images)}


def contact_sheet(path: str | Path, images: Sequence[np.ndarray], ids: Sequence[int], scores: Sequence[float],
                  title: str, columns: int = 5) -> Path:
    """Draw ``images`` in a grid, each titled with its id and score, and a ``<name>.json`` side file.

    Parameters
    ----------
    path : path-like
        The PNG written.
    images : sequence of numpy.ndarray
        (h, w) or (h, w, c) images in rank order.
    ids, scores : sequence
        Each image's item id and score.
    title : str
        Figure title.
    columns : int, default 5
        Panels per row.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    n = len(images)
    cols = max(1, min(columns, n))
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.8 * cols, 2.0 * rows + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, item, score in zip(axes.ravel(), images, ids, scores):
        pixels = np.squeeze(np.asarray(image, dtype=np.float32))
        ax.imshow(pixels, cmap="gray" if pixels.ndim == 2 else None)
        ax.set_title(f"id {int(item)}\n{float(score):.4g}", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    # the panel count and order, so that a reader (or a test) need not parse the picture
    path.with_suffix(".json").write_text(json.dumps(
        {"panels": n, "ids": [int(i) for i in ids], "scores": [float(s) for s in scores]}, indent=2) + "\n")
    return path
