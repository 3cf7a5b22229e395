"""What a person looks at after ``sample`` or ``activations``: PNG plots and one small HTML page."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["bar_figure", "html_table", "latent_figure", "save_figure", "write_html"]


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
        values = np.asarray(values, dtype=np.float64)
        ax.bar(np.arange(len(names)), values, bottom=bottom, label=label)
        bottom += values
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
