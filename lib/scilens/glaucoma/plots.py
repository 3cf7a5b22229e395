"""Figures of the glaucoma study (dissertation Figs. 3.1-3.3, 3.7), as PNG bytes.

Each function draws one figure with matplotlib (Agg) and returns the PNG; the caller writes it
or puts it in the report (:mod:`scilens.glaucoma.report`).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["auc_bars", "dependence", "distributions", "importance_bars", "interaction", "roc_curves"]

_COLORS = {"healthy": "#4c72b0", "glaucoma": "#c44e52", "ptg": "#dd8452", "ptg_post": "#8172b3"}


def _figure(width: float = 5.0, height: float = 4.0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height), dpi=100)


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def roc_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray, float, float, float]], title: str) -> bytes:
    """ROC curves; ``curves[name] = (fpr, tpr, auc, ci_low, ci_high)`` (Fig. 3.1 A/B)."""
    fig, ax = _figure()
    for name, (fpr, tpr, auc, low, high) in curves.items():
        ax.plot(fpr, tpr, label=f"{name}: AUC {auc:.2f} ({low:.2f}-{high:.2f})")
    ax.plot([0, 1], [0, 1], color="gray", linestyle=":", linewidth=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def auc_bars(values: Mapping[str, tuple[float, float, float]], baseline: str | None, ylabel: str,
             title: str) -> bytes:
    """Estimates with 95% CIs per model; the baseline's CI as a gray band (Figs. 3.1 D, 3.7 A)."""
    fig, ax = _figure()
    names = list(values)
    est = np.array([values[n][0] for n in names])
    low = np.array([values[n][1] for n in names])
    high = np.array([values[n][2] for n in names])
    if baseline in values:
        b = values[baseline]
        ax.axhspan(b[1], b[2], color="gray", alpha=0.2)
        ax.axhline(b[0], color="gray", linestyle="--", linewidth=1)
    ax.errorbar(range(len(names)), est, yerr=[est - low, high - est], fmt="o", capsize=4, color="black")
    ax.set_xticks(range(len(names)), names)
    ax.set(ylabel=ylabel, title=title, ylim=(0, 1.02))
    return _png(fig)


def importance_bars(names: Sequence[str], values: Sequence[float], title: str) -> bytes:
    """Mean |SHAP| per feature, largest on top (Fig. 3.2 A)."""
    fig, ax = _figure(5, 0.35 * len(names) + 1.2)
    ax.barh(range(len(names))[::-1], values, color="#4c72b0")
    ax.set_yticks(range(len(names))[::-1], names)
    ax.set(xlabel="mean |SHAP value| (log-odds)", title=title)
    return _png(fig)


def dependence(x: np.ndarray, shap: np.ndarray, color: np.ndarray, feature: str, color_label: str,
               categorical: bool = False) -> bytes:
    """SHAP value vs feature value, coloured by label or by another feature (Fig. 3.2 B-H)."""
    fig, ax = _figure(4.5, 3.5)
    if categorical:
        for label in sorted(set(color)):
            mask = color == label
            ax.scatter(x[mask], shap[mask], s=6, alpha=0.6, color=_COLORS.get(label), label=label)
        ax.legend(fontsize=8)
    else:
        points = ax.scatter(x, shap, s=6, alpha=0.6, c=color, cmap="viridis")
        fig.colorbar(points, ax=ax, label=color_label)
    ax.axhline(0, color="gray", linewidth=0.5)
    ax.set(xlabel=feature, ylabel=f"SHAP value of {feature}", title=f"{feature} ({color_label})")
    return _png(fig)


def interaction(x: np.ndarray, values: np.ndarray, color: np.ndarray, feature: str, other: str) -> bytes:
    """SHAP interaction value of (other, feature) vs the feature, coloured by ``other`` (Fig. 3.3)."""
    fig, ax = _figure(4.5, 3.5)
    points = ax.scatter(x, values, s=6, alpha=0.6, c=color, cmap="viridis")
    fig.colorbar(points, ax=ax, label=other)
    ax.axhline(0, color="gray", linewidth=0.5)
    ax.set(xlabel=feature, ylabel=f"SHAP interaction {other} x {feature}", title=f"{other} x {feature}")
    return _png(fig)


def distributions(groups: Mapping[str, np.ndarray], variable: str, unit: str) -> bytes:
    """Box plots of a variable per group (Fig. 3.7 B-E)."""
    fig, ax = _figure(4.5, 3.5)
    names = [g for g in groups if len(groups[g])]
    box = ax.boxplot([groups[g] for g in names], patch_artist=True, showfliers=False)
    for patch, name in zip(box["boxes"], names):
        patch.set_facecolor(_COLORS.get(name, "#cccccc"))
    ax.set_xticks(range(1, len(names) + 1), [f"{n}\n(n={len(groups[n])})" for n in names], fontsize=8)
    ax.set(ylabel=f"{variable} ({unit})" if unit else variable, title=variable)
    return _png(fig)
