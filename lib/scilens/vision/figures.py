"""Figures of images: a contact sheet of images (with optional mask overlays), titled by id and score."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["contact_sheet"]


def contact_sheet(path: str | Path, images: Sequence[np.ndarray], ids: Sequence[int], scores: Sequence[float],
                  title: str, columns: int = 5, overlays: Sequence[np.ndarray | None] | None = None,
                  captions: Sequence[str] | None = None) -> Path:
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
    overlays : sequence of numpy.ndarray or None, optional
        A mask per image ((h, w), any scale), drawn over it as a translucent
        heat map, scaled per panel; None for a panel without one.
    captions : sequence of str, optional
        Panel titles (default: ``id <id>`` and the score on a second line).

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
    masks = list(overlays) if overlays is not None else [None] * n
    titles = list(captions) if captions is not None else [f"id {int(i)}\n{float(s):.4g}" for i, s in zip(ids, scores)]
    for ax, image, mask, caption in zip(axes.ravel(), images, masks, titles):
        pixels = np.squeeze(np.asarray(image, dtype=np.float32))
        ax.imshow(pixels, cmap="gray" if pixels.ndim == 2 else None)
        if mask is not None:
            ax.imshow(np.asarray(mask, dtype=np.float32), cmap="inferno", alpha=0.55)
        ax.set_title(caption, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    # the panel count and order, so that a reader (or a test) need not parse the picture
    path.with_suffix(".json").write_text(json.dumps(
        {"panels": n, "ids": [int(i) for i in ids], "scores": [float(s) for s in scores]}, indent=2) + "\n")
    return path
