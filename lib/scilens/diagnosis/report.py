"""What a person looks at after ``train-model``, ``sample`` or ``activations``: PNG plots and one small HTML page."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # only annotations: this module draws, it reads no tables
    import pandas as pd

    from scilens.diagnosis.activations import ActivationStore

__all__ = [
    "PLOT_ROWS",
    "bar_figure",
    "html_table",
    "latent_figure",
    "plot_history",
    "save_figure",
    "write_activations_report",
    "write_html",
    "write_sample_report",
]

PLOT_ROWS = 5000
"""Most items the latent figure of ``sample`` shows (a random share of about this many beyond)."""


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latent_figure(path: str | Path, latent: np.ndarray, labels: np.ndarray, predictions: np.ndarray,
                  chosen: np.ndarray | None = None, title: str = "") -> Path:
    """The latent vectors on their first two principal axes: colour = true class, x = misclassified, rings = chosen."""
    plt = _pyplot()
    x = np.asarray(latent, dtype=np.float64)
    x = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    xy = x @ vt[:2].T
    wrong = np.asarray(labels) != np.asarray(predictions)
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.scatter(xy[~wrong, 0], xy[~wrong, 1], c=np.asarray(labels)[~wrong], cmap="tab10", s=4, alpha=0.5,
               vmin=0, vmax=9)
    ax.scatter(xy[wrong, 0], xy[wrong, 1], c="k", marker="x", s=14, label="misclassified")
    if chosen is not None and len(chosen):
        ax.scatter(xy[chosen, 0], xy[chosen, 1], facecolors="none", edgecolors="r", s=30, linewidths=0.8,
                   label="in the sample")
    ax.set_xlabel("principal axis 1")
    ax.set_ylabel("principal axis 2")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="best", fontsize=8)
    return save_figure(fig, path)


def bar_figure(path: str | Path, names: Sequence[str], stacks: Mapping[str, Sequence[float]], ylabel: str,
               title: str = "") -> Path:
    """Stacked bars, one per name (e.g. a sample's correct and misclassified items)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(names) + 2), 4.5))
    bottom = np.zeros(len(names))
    for label, values in stacks.items():
        heights = np.asarray(values, dtype=np.float64)
        ax.bar(np.arange(len(names)), heights, bottom=bottom, label=label)
        bottom += heights
    ax.set_xticks(np.arange(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def save_figure(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Lay out, write as PNG (folders made) and close a matplotlib figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def html_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """An HTML table of ``rows`` (floats with 4 significant digits)."""
    if not rows:
        return "<p>(none)</p>"
    columns = list(rows[0])

    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else html.escape("" if v is None else str(v))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_html(path: str | Path, title: str, sections: Sequence[tuple[str, str]]) -> Path:
    """A page of (heading, HTML) sections; images are referenced relative to the page."""
    body = "".join(f"<h2>{html.escape(h)}</h2>{content}" for h, content in sections)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif;margin:2em} table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left} img{max-width:760px}</style></head>"
            f"<body><h1>{html.escape(title)}</h1>{body}</body></html>\n")
    path = Path(path)
    path.write_text(page)
    return path


def write_sample_report(output: Path, summary: Sequence[Mapping[str, Any]], items: pd.DataFrame, chosen: set[int],
                        model: str | None, layer: str, accuracy: float, path: str,
                        maxmargin: str | None = None) -> Path:
    """``report.html``, ``latent.png`` and ``composition.png`` of a ``sample`` run.

    Parameters
    ----------
    output : Path
        The run's output directory.
    summary : sequence of dict
        Per sample: ``technique``, ``fraction``, ``size``, ``misclassified``, ``rows``, ...
    items : pandas.DataFrame
        The plotted items: ``id``, ``label``, ``prediction``, ``latent``.
    chosen : set of int
        Ids of the first sample, ringed in the latent figure.
    model : str or None
        The model, as configured.
    layer : str
        Its latent layer.
    accuracy : float
        The model's accuracy on the table.
    path : str
        Where the samplers ran (``driver`` or ``spark``).
    maxmargin : str, optional
        The MaxMargin setting the samples were drawn with (``paper (C=1)``, ``spark-parity (C=0.01)``).

    Returns
    -------
    Path
        The page.
    """
    n = summary[0]["rows"] if summary else 0
    first = summary[0]
    positions = np.flatnonzero(items["id"].isin(chosen).to_numpy())
    latent_figure(output / "latent.png", np.stack(items["latent"].to_numpy()), items["label"].to_numpy(),
                  items["prediction"].to_numpy(), positions,
                  f"layer {layer}: {first['technique']} sample at {first['fraction']:g} (rings)")
    names = [f"{r['technique']} {r['fraction']:g}" for r in summary]
    bar_figure(output / "composition.png", names,
               {"correct": [r["size"] - r["misclassified"] for r in summary],
                "misclassified": [r["misclassified"] for r in summary]}, "items", "What each sample holds")
    return write_html(output / "report.html", "scilens sample", [
        ("Run", html_table([{"model": model, "layer": layer, "rows": n, "model accuracy": accuracy,
                             "samplers ran on": path, "MaxMargin setting": maxmargin or "(no MaxMargin sample)"}])),
        ("Samples", html_table(summary)),
        ("Latent space", "<img src='latent.png'><p>First two principal axes of the latent vectors "
                         f"({'all' if n <= PLOT_ROWS else f'{PLOT_ROWS} random'} rows).</p>"),
        ("Composition", "<img src='composition.png'>"),
    ])


def write_activations_report(output: Path, store: ActivationStore) -> Path:
    """``report.html`` and ``storage.png`` of an ``activations`` run: what each layer costs per item.

    Parameters
    ----------
    output : Path
        The run's output directory.
    store : ActivationStore
        The store it wrote.

    Returns
    -------
    Path
        The page.
    """
    names = list(store.layers)
    per_item = [4 * int(np.prod(store.layers[n])) for n in names]
    bar_figure(output / "storage.png", names, {"float32 bytes per item": per_item}, "bytes per item",
               f"Activations per item by layer ({store.rows} items, {store.bytes / 2**20:.1f} MiB on disk)")
    rows = [{"layer": n, "shape": "x".join(map(str, store.layers[n])), "neurons": b // 4,
             "raw MiB": b * store.rows / 2**20} for n, b in zip(names, per_item)]
    return write_html(output / "report.html", "scilens activations", [
        ("Store", html_table([{"model": store.model, "items": store.rows,
                               "Parquet bytes": store.bytes}])),
        ("Layers", html_table(rows)), ("Storage", "<img src='storage.png'>")])


def plot_history(history: Mapping[str, Sequence[float]], path: str | Path) -> Path:
    """Loss and accuracy per epoch (``train-model``): training, and validation where there is one.

    Parameters
    ----------
    history : mapping of str to sequence of float
        Keras' history: ``loss``, ``accuracy`` and optionally ``val_loss``, ``val_accuracy``.
    path : str or Path
        The PNG to write.

    Returns
    -------
    Path
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    epochs = range(1, len(history["loss"]) + 1)
    for ax, key in zip(axes, ("loss", "accuracy")):
        ax.plot(epochs, history[key], "o-", label="train")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], "s--", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.legend()
    return save_figure(fig, path)
