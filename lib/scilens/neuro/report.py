"""What a person looks at after a run: a PNG per subject and one HTML page.

Each subject's PNG shows the middle sagittal, coronal and axial slices of the
mean b0 image, the brain mask drawn over it, and the FA map. The previews
arrive as small 2-D slices from the Spark stages; no image is read back.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["subject_figure", "write_html", "write_run_report"]


def _show(slice2d: np.ndarray) -> np.ndarray:
    # Voxel axes run (i, j) -> image (column, row upwards): transpose and flip for display.
    return np.flipud(np.asarray(slice2d, dtype=np.float64).T)


def subject_figure(path: str | Path, subject: str, mean_b0: Sequence[np.ndarray], mask: Sequence[np.ndarray],
                   fa: Sequence[np.ndarray]) -> Path:
    """Write a 3x3 PNG: rows mean b0, mask over mean b0, FA; columns sagittal, coronal, axial."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(3, 3, figsize=(9, 9), squeeze=False)
    vmax = max(float(np.percentile(s, 99.5)) for s in mean_b0) or 1.0
    for col, view in enumerate(("sagittal", "coronal", "axial")):
        b0 = _show(mean_b0[col])
        axes[0, col].imshow(b0, cmap="gray", vmin=0, vmax=vmax)
        axes[0, col].set_title(f"mean b0, {view}")
        axes[1, col].imshow(b0, cmap="gray", vmin=0, vmax=vmax)
        axes[1, col].imshow(np.ma.masked_equal(_show(mask[col]), 0), cmap="autumn", alpha=0.45, vmin=0, vmax=1)
        axes[1, col].set_title(f"brain mask, {view}")
        image = axes[2, col].imshow(_show(fa[col]), cmap="gray", vmin=0, vmax=1)
        axes[2, col].set_title(f"FA, {view}")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(image, ax=axes[2, :].tolist(), shrink=0.8, label="fractional anisotropy")
    fig.suptitle(subject)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def write_html(path: str | Path, subjects: Sequence[Mapping[str, Any]], rejected: Sequence[Mapping[str, Any]],
               steps: Sequence[tuple[str, float, Mapping[str, int]]]) -> Path:
    """Write the run report: one table row and picture per subject, the rejected subjects, step timings.

    ``subjects`` rows have ``subject``, ``volumes``, ``b0``, ``mask_voxels``,
    ``fa_mean``, ``md_mean`` and ``png`` (relative to the report); ``rejected``
    rows have ``record`` (the subject), ``path``, ``step`` and ``message``.
    """
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(s['subject'])}</td><td>{s['volumes']}</td><td>{s['b0']}</td><td>{s['mask_voxels']}</td>"
        f"<td>{s['fa_mean']:.3f}</td><td>{s['md_mean'] * 1e3:.3f}</td></tr>" for s in subjects)
    bad = "".join(f"<tr><td>{esc(r.get('record') or '')}</td><td>{esc(r['step'])}</td><td>{esc(r['message'])}</td></tr>"
                  for r in rejected) or "<tr><td colspan=3>none</td></tr>"
    timing = "".join(f"<tr><td>{esc(name)}</td><td>{seconds:.1f}</td>"
                     f"<td>{esc(', '.join(f'{k}={v}' for k, v in c.items()))}</td></tr>" for name, seconds, c in steps)
    pictures = "".join(f"<h3>{esc(s['subject'])}</h3><img src='{esc(s['png'])}' alt='{esc(s['subject'])}'>"
                       for s in subjects)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>scilens neuro report</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}} img{{max-width:720px}}</style></head><body>
<h1>scilens neuro: segmentation, denoising, tensor fit</h1>
<h2>Subjects</h2><table><tr><th>subject</th><th>volumes</th><th>b0 volumes</th><th>mask voxels</th>
<th>mean FA in mask</th><th>mean MD in mask (10<sup>-3</sup> mm²/s)</th></tr>{rows}</table>
<h2>Rejected</h2><table><tr><th>subject</th><th>step</th><th>reason</th></tr>{bad}</table>
<h2>Steps</h2><table><tr><th>step</th><th>seconds</th><th>counts</th></tr>{timing}</table>
<h2>Mid slices</h2><p>Rows: mean b0, brain mask over it, FA (0 to 1). Columns: sagittal, coronal, axial.</p>
{pictures}</body></html>
"""
    path = Path(path)
    path.write_text(page)
    return path


def write_run_report(output: Path, subjects: Mapping[str, Any], summaries: Mapping[str, Mapping[str, Any]],
                     rejected: Sequence[Mapping[str, Any]], steps: Sequence[tuple[str, float, Mapping[str, int]]]
                     ) -> Path:
    """Write each written subject's ``subjects/<subject>/report.png`` and the run's ``report.html``.

    Parameters
    ----------
    output : Path
        The run's output directory.
    subjects : mapping
        Subject name -> :class:`scilens.neuro.stages.SubjectInfo` (its previews and counts).
    summaries : mapping
        Subject name -> its maps' summary row (``fa_mean``, ``md_mean``, FA previews ``fa_<view>``).
    rejected : sequence of mapping
        Rejected records to list.
    steps : sequence of (name, seconds, counts)
        The run's steps so far.

    Returns
    -------
    Path
        ``report.html``.
    """
    from scilens.core import tensor
    from scilens.neuro.pipeline import VIEWS, subject_dir

    rows = []
    for name in sorted(summaries):
        info, summary = subjects[name], summaries[name]
        fa = [tensor.decode(summary[f"fa_{view}"]) for view in VIEWS]
        png = subject_figure(subject_dir(output, name) / "report.png", name, info.previews["mean_b0"],
                             info.previews["mask"], fa)
        rows.append({"subject": name, "volumes": info.shape[3], "b0": info.n_b0,
                     "mask_voxels": info.n_mask_voxels, "fa_mean": summary["fa_mean"],
                     "md_mean": summary["md_mean"], "png": str(png.relative_to(output))})
    return write_html(output / "report.html", rows, rejected, steps)
