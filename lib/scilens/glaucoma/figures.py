"""Figures of the glaucoma imaging work, as PNG (matplotlib, Agg backend).

Each function takes in-memory data (a handful of images, per-epoch or per-scan
numbers) and a path, writes the figure and returns the path. They mirror the
dissertation's figures: preprocessing examples (Fig. 3.11), excluded OCT
volumes (Fig. 3.8), learning curves, AUC per scan position and SHAP per scan
(Fig. 3.4), saliency overlays (Fig. 3.5).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["excluded_oct", "eye_saliency_figures", "fundus_examples", "learning_curves", "oct_examples",
           "saliency_overlays", "scan_auc", "scan_shap"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def oct_examples(examples: Sequence[tuple[str, int, str, np.ndarray]], path: str | Path) -> Path:
    """Raw B-scan (top) and model input (bottom) for each (file, scan, title, preprocessed scan)."""
    from scilens.io.retina import read_oct

    plt = _pyplot()
    fig, axes = plt.subplots(2, len(examples), figsize=(3 * len(examples), 5.5), squeeze=False)
    for k, (file, scan, title, processed) in enumerate(examples):
        axes[0, k].imshow(read_oct(file)[scan], cmap="gray", aspect="auto")
        axes[0, k].set_title(title, fontsize=9)
        axes[1, k].imshow(processed, cmap="gray")
        for ax in axes[:, k]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel(f"raw B-scan {examples[0][1]}")
    axes[1, 0].set_ylabel("aligned, flipped, cropped, resized")
    return _save(fig, path)


def excluded_oct(volumes: Sequence[tuple[str, str]], path: str | Path) -> Path:
    """The first two B-scans and the reason of each excluded volume (Fig. 3.8)."""
    import textwrap

    from scilens.io.retina import read_oct

    plt = _pyplot()
    fig, axes = plt.subplots(len(volumes), 2, figsize=(7, 2.6 * len(volumes)), squeeze=False)
    for k, (file, reason) in enumerate(volumes):
        volume = read_oct(file)
        # Show the pair the reason names when it names one, else the first two scans.
        pair = [int(s) for s in reason.split("B-scans ")[1].split()[0].rstrip(":").split("-")] \
            if "B-scans " in reason else [0, 1]
        for j, scan in enumerate(pair[:2]):
            axes[k, j].imshow(volume[min(scan, len(volume) - 1)], cmap="gray", aspect="auto")
            axes[k, j].set_xticks([])
            axes[k, j].set_yticks([])
            axes[k, j].set_title(f"{Path(file).name} scan {scan}", fontsize=8)
        axes[k, 0].set_ylabel("\n".join(textwrap.wrap(reason.split(": ", 1)[-1], 40)), fontsize=7)
    return _save(fig, path)


def fundus_examples(examples: Sequence[tuple[str, str, np.ndarray]], path: str | Path) -> Path:
    """Original photo (top) and model input (bottom) for each (file, title, preprocessed photo) (Fig. 3.11)."""
    from scilens.io.retina import read_fundus

    plt = _pyplot()
    fig, axes = plt.subplots(2, len(examples), figsize=(3 * len(examples), 6), squeeze=False)
    for k, (file, title, processed) in enumerate(examples):
        axes[0, k].imshow(read_fundus(file))
        axes[0, k].set_title(title, fontsize=9)
        axes[1, k].imshow(processed)
        for ax in axes[:, k]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("original")
    axes[1, 0].set_ylabel("local colour removed, disc crop")
    return _save(fig, path)


def learning_curves(history: Sequence[dict[str, float]], path: str | Path, title: str = "") -> Path:
    """Training and validation loss, and validation AUC, per epoch."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(epochs, [h["loss"] for h in history], "o-", label="training (label-smoothed)")
    left.plot(epochs, [h["val_loss"] for h in history], "s-", label="validation")
    left.set_xlabel("epoch")
    left.set_ylabel("cross-entropy")
    left.legend()
    right.plot(epochs, [h["val_auc"] for h in history], "o-", color="C2")
    right.set_xlabel("epoch")
    right.set_ylabel("validation AUC")
    right.set_ylim(0.4, 1.01)
    fig.suptitle(title)
    return _save(fig, path)


def scan_auc(auc: np.ndarray, path: str | Path, lower: np.ndarray | None = None, upper: np.ndarray | None = None,
             title: str = "AUC per scan position") -> Path:
    """AUC of single-scan predictions at each scan position, superior to inferior (Fig. 3.4A)."""
    plt = _pyplot()
    scans = np.arange(len(auc))
    fig, ax = plt.subplots(figsize=(4, 6))
    if lower is not None and upper is not None:
        ax.fill_betweenx(scans, lower, upper, color="C0", alpha=0.2, label="95% CI")
    ax.plot(auc, scans, "o-", ms=3, color="C0")
    ax.axhline((len(auc) - 1) / 2, ls="--", color="gray", label="central scan")
    ax.invert_yaxis()
    ax.set_xlabel("AUC")
    ax.set_ylabel("scan (0 = superior)")
    ax.set_title(title)
    ax.legend(loc="lower left", fontsize=8)
    return _save(fig, path)


def scan_shap(shap: np.ndarray, labels: Sequence[str], path: str | Path) -> Path:
    """Mean |SHAP| per scan (Fig. 3.4B) and the per-retina SHAP heat map, retinas clustered (Fig. 3.4C).

    ``shap`` is (retinas, scans); ``labels`` the retinas' labels.
    """
    from scipy.cluster.hierarchy import leaves_list, linkage

    plt = _pyplot()
    n_scans = shap.shape[1]
    order = leaves_list(linkage(shap, "ward")) if len(shap) > 2 else np.arange(len(shap))
    fig, (bar, heat) = plt.subplots(1, 2, figsize=(10, 6), gridspec_kw={"width_ratios": [1, 3]})
    bar.barh(np.arange(n_scans), np.abs(shap).mean(axis=0), color="C1")
    bar.axhline((n_scans - 1) / 2, ls="--", color="gray")
    bar.invert_yaxis()
    bar.set_xlabel("mean |SHAP|")
    bar.set_ylabel("scan (0 = superior)")
    limit = np.abs(shap).max() or 1.0
    image = heat.imshow(shap[order].T, aspect="auto", cmap="coolwarm", vmin=-limit, vmax=limit,
                        interpolation="nearest")
    heat.axhline((n_scans - 1) / 2, ls="--", color="gray")
    ticks = np.array(labels)[order]
    heat.set_xticks(np.arange(len(order)))
    heat.set_xticklabels(["G" if t == "glaucoma" else "H" for t in ticks], fontsize=5)
    heat.set_xlabel("retinas, clustered by SHAP (G glaucoma, H healthy)")
    fig.colorbar(image, ax=heat, label="SHAP value (log-odds)")
    return _save(fig, path)


def saliency_overlays(panels: Sequence[tuple[str, np.ndarray, dict[str, np.ndarray]]], path: str | Path) -> Path:
    """Each row: an input image and its saliency masks overlaid (Fig. 3.5).

    ``panels`` are (title, image (h, w) or (h, w, 3) uint8, {method: mask (h, w)}).
    """
    plt = _pyplot()
    methods = list(panels[0][2])
    fig, axes = plt.subplots(len(panels), 1 + len(methods), figsize=(3 * (1 + len(methods)), 3 * len(panels)),
                             squeeze=False)
    for k, (title, image, masks) in enumerate(panels):
        cmap = "gray" if image.ndim == 2 else None
        axes[k, 0].imshow(image, cmap=cmap)
        axes[k, 0].set_title(title, fontsize=8)
        for j, method in enumerate(methods, start=1):
            mask = np.abs(masks[method])
            top = np.percentile(mask, 99) or 1.0
            axes[k, j].imshow(image, cmap=cmap)
            axes[k, j].imshow(np.clip(mask / top, 0, 1), cmap="inferno", alpha=0.6)
            axes[k, j].set_title(method, fontsize=8)
        for ax in axes[k]:
            ax.set_xticks([])
            ax.set_yticks([])
    return _save(fig, path)


def eye_saliency_figures(masks: pd.DataFrame, folder: str | Path) -> int:
    """One PNG per eye, ``<eid>_<eye>.png``: each of its images with every method's mask overlaid.

    Parameters
    ----------
    masks : DataFrame
        Rows of ``saliency.parquet`` (``eid``, ``eye``, ``label``, ``modality``, ``scan``, ``method``,
        ``probability``, ``image`` and ``mask`` tensors).
    folder : str or Path
        Where the figures go.

    Returns
    -------
    int
        Figures written.
    """
    from scilens.core import tensor

    count = 0
    for (eid, eye), group in masks.groupby(["eid", "eye"]):
        panels = []
        for (modality, scan), part in group.groupby(["modality", "scan"]):
            image = tensor.decode(part.iloc[0]["image"])
            title = (f"{eid} {eye} ({part.iloc[0]['label']}) {modality.upper()}"
                     + (f" scan {scan}" if modality == "oct" else "") + f", p={part.iloc[0]['probability']:.2f}")
            panels.append((title, image, {r.method: tensor.decode(r.mask) for r in part.itertuples()}))
        saliency_overlays(panels, Path(folder) / f"{eid}_{eye}.png")
        count += 1
    return count
