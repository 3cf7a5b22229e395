"""Figures of the glaucoma study (dissertation Figs. 3.1-3.3, 3.7), as PNG bytes.

Each figure function draws one figure with matplotlib (Agg) and returns the PNG; the caller writes
it or puts it in the report (:mod:`scilens.glaucoma.report`). :func:`clinical_figures`,
:func:`final_figures` and :func:`group_distributions` draw a job's set of figures, keyed by file name.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["auc_bars", "clinical_figures", "dependence", "distributions", "final_figures", "group_distributions",
           "importance_bars", "interaction", "roc_curves"]

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
    if baseline is not None and baseline in values:
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


_CI_KEYS = {"auc": ("ci_low", "ci_high"), "ptg_accuracy": ("ptg_ci_low", "ptg_ci_high")}
"""Keys of the interval of ``auc`` and ``ptg_accuracy`` in a model's metrics."""


def _ci(result: Mapping, name: str) -> tuple[float, float, float]:
    """(estimate, CI low, CI high) of ``auc`` or ``ptg_accuracy`` in a model's metrics."""
    low, high = _CI_KEYS[name]
    return result[name], result[low], result[high]


def _roc(result: Mapping) -> tuple[np.ndarray, np.ndarray, float, float, float]:
    return np.array(result["roc"]["fpr"]), np.array(result["roc"]["tpr"]), *_ci(result, "auc")


def _top_features(result: Mapping, title: str) -> bytes:
    top = result["top_features"]
    return importance_bars([t[0] for t in top], [t[1] for t in top], title)


def clinical_figures(results: Mapping[str, Mapping], shap_table: pd.DataFrame, focus: str,
                     dependence_features: Sequence[str]) -> dict[str, bytes]:
    """The figures of ``glaucoma-clinical``: ROC, AUC and PTG accuracy bars, SHAP rankings and dependence plots.

    Parameters
    ----------
    results
        Per model its entry of ``metrics.json`` (:func:`scilens.glaucoma.evaluation.evaluate_model`).
    shap_table
        The SHAP rows of every model (``shap.parquet``).
    focus
        The model whose SHAP dependence plots are drawn.
    dependence_features
        Features with dependence plots (skipped when not in ``focus``).

    Returns
    -------
    dict
        PNG bytes by file name (``roc_baseline_models.png``, ``dependence_<model>_<feature>.png``, ...).
    """
    baseline = "BM1" if "BM1" in results else None
    figures = {
        "roc_baseline_models.png": roc_curves({n: _roc(r) for n, r in results.items()}, "Test set ROC"),
        "auc_baseline_models.png": auc_bars({n: _ci(r, "auc") for n, r in results.items()}, baseline,
                                            "test AUC (95% CI)", "Baseline models"),
    }
    if all(r["ptg_accuracy"] is not None for r in results.values()):
        figures["ptg_accuracy.png"] = auc_bars({n: _ci(r, "ptg_accuracy") for n, r in results.items()}, baseline,
                                               "accuracy on PTG eyes (95% CI)", "Progress-to-glaucoma")
    for name, result in results.items():
        figures[f"shap_top_{name}.png"] = _top_features(result, f"{name}: mean |SHAP|")
    figures.update(_dependence_figures(shap_table[shap_table["model"] == focus], focus, dependence_features))
    return figures


def _dependence_figures(table: pd.DataFrame, focus: str, features: Sequence[str]) -> dict[str, bytes]:
    """SHAP dependence plots of one model, coloured by label and (features other than age) by age."""
    figures = {}
    ages = table[table["feature"] == "age"].set_index(["eid", "eye"])["value"] \
        if (table["feature"] == "age").any() else None
    for feature in features:
        rows = table[table["feature"] == feature]
        if rows.empty:
            continue
        figures[f"dependence_{focus}_{feature}.png"] = dependence(
            rows["value"].to_numpy(), rows["shap"].to_numpy(), rows["label"].to_numpy(), feature, "label",
            categorical=True)
        if ages is not None and feature != "age":
            color = ages.reindex(pd.MultiIndex.from_frame(rows[["eid", "eye"]])).to_numpy()
            figures[f"dependence_{focus}_{feature}_by_age.png"] = dependence(
                rows["value"].to_numpy(), rows["shap"].to_numpy(), color, feature, "age")
    return figures


def final_figures(results: Mapping[str, Mapping], clinical: Mapping[str, Mapping]) -> dict[str, bytes]:
    """The figures of ``glaucoma-final``: ROC, AUC bars (with BM1-BM3 when given), PTG accuracy, SHAP top features.

    Parameters
    ----------
    results
        Per model of the final job (``final`` and the baseline on the same eyes) its metrics.
    clinical
        Per model of glaucoma-clinical its metrics (empty: none shown).

    Returns
    -------
    dict
        PNG bytes by file name (``roc_final.png``, ``auc_final.png``, ``ptg_accuracy_final.png``,
        ``shap_top_final.png``).
    """
    aucs = {n: _ci(r, "auc") for n, r in {**clinical, **results}.items()}
    figures = {"roc_final.png": roc_curves({n: _roc(r) for n, r in results.items()},
                                           "Test set ROC: final model vs clinical features"),
               "auc_final.png": auc_bars(aucs, "BM1" if "BM1" in aucs else None, "test AUC (95% CI)",
                                         "Clinical and final models")}
    ptg = {**{n: _ci(r, "ptg_accuracy") for n, r in clinical.items() if r.get("ptg_accuracy") is not None},
           **{n: _ci(r, "ptg_accuracy") for n, r in results.items() if r.get("ptg_accuracy") is not None}}
    if ptg:
        figures["ptg_accuracy_final.png"] = auc_bars(ptg, "BM1" if "BM1" in ptg else None,
                                                     "accuracy on PTG eyes (95% CI)", "Progress-to-glaucoma")
    figures["shap_top_final.png"] = _top_features(results["final"], "Final model: mean |SHAP|")
    return figures


def group_distributions(tables: Mapping[str, pd.DataFrame], groups: Sequence[str],
                        units: Mapping[str, str]) -> dict[str, bytes]:
    """Box plots per group of each measure (Fig. 3.7 B-E), for ``glaucoma-stats``.

    Parameters
    ----------
    tables
        Per measure the rows it is analysed on (``group`` column and the measure).
    groups
        Groups in the order drawn.
    units
        Unit of a measure (none when absent).

    Returns
    -------
    dict
        ``distribution_<measure>.png`` PNG bytes.
    """
    figures = {}
    for measure, data in tables.items():
        values = {g: data.loc[data["group"] == g, measure].dropna().to_numpy() for g in groups}
        figures[f"distribution_{measure}.png"] = distributions(values, measure.upper(), units.get(measure, ""))
    return figures
