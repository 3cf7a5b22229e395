"""The run report: a co-add patch with its detections (and truth), completeness against magnitude, an HTML page.

Runs on the driver after the catalog is written; it reads the co-add FITS
files back, so it shows what was delivered.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits

from scilens.astro import validate
from scilens.astro.coadd import FEW_INPUTS, INPUT_BITS_SHIFT, NO_DATA
from scilens.astro.config import AstroConfig
from scilens.astro.pipeline import coadd_path, median_psf_fwhm
from scilens.astro.skymap import SkyMap

__all__ = ["plot_completeness", "plot_patch", "write_report"]

SATURATED_INPUT = 2 << INPUT_BITS_SHIFT
"""Co-add flag of a footprint holding saturated input pixels (the generator's and DECam's bit 2)."""
UNRELIABLE = NO_DATA | FEW_INPUTS | SATURATED_INPUT
"""Flags that keep a detection out of purity, astrometry and photometry scores."""


def plot_patch(image: np.ndarray, catalog: pd.DataFrame, truth_xy: np.ndarray | None, path: Path,
               title: str, border: int = 0) -> Path:
    """PNG of a co-add (asinh stretch) with detections circled, true positions crossed, the inner region framed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = np.nan_to_num(image)
    scale = 1.4826 * np.median(np.abs(data[data != 0])) if np.any(data != 0) else 1.0
    fig, ax = plt.subplots(figsize=(9, 9))
    ax.imshow(np.arcsinh(data / (3 * scale)), origin="lower", cmap="gray_r", vmin=-1, vmax=6)
    if truth_xy is not None and len(truth_xy):
        ax.plot(truth_xy[:, 0], truth_xy[:, 1], "+", color="tab:red", ms=7, mew=1, label="truth")
    ax.scatter(catalog["x"], catalog["y"], s=90, facecolors="none", edgecolors="tab:blue", linewidths=1,
               label="detections")
    if border:
        ny, nx = image.shape
        ax.add_patch(plt.Rectangle((border - 0.5, border - 0.5), nx - 2 * border, ny - 2 * border, fill=False,
                                   ls="--", color="tab:green", label="inner region"))
    ax.set_xlim(-0.5, image.shape[1] - 0.5)
    ax.set_ylim(-0.5, image.shape[0] - 0.5)
    ax.set_title(title)
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_completeness(truth: pd.DataFrame, matched: np.ndarray, path: Path, snr_min: float = 10.0) -> Path:
    """PNG of the matched fraction of true sources against magnitude, stars and galaxies apart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    edges = np.arange(np.floor(truth["mag"].min() * 2) / 2, truth["mag"].max() + 0.5, 0.5)
    centres = (edges[:-1] + edges[1:]) / 2
    for kind, label, colour in (("star", "stars", "tab:blue"), ("galaxy", "galaxies", "tab:orange")):
        sel = (truth["type"] == kind).to_numpy()
        total, _ = np.histogram(truth["mag"][sel], edges)
        found, _ = np.histogram(truth["mag"][sel & matched], edges)
        with np.errstate(invalid="ignore", divide="ignore"):
            ax.plot(centres[total > 0], (found / total)[total > 0], "o-", color=colour, label=label)
    snr = truth["expected_snr"].to_numpy()
    faint = truth["mag"].to_numpy()[(snr >= snr_min * 0.8) & (snr <= snr_min * 1.25)]
    if faint.size:
        ax.axvline(float(np.median(faint)), color="grey", ls="--", label=f"expected S/N = {snr_min:g}")
    ax.set_xlabel("true magnitude")
    ax.set_ylabel("completeness (matched fraction)")
    ax.set_ylim(-0.02, 1.05)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _table(rows: dict) -> str:
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows.items())
    return f"<table>{cells}</table>"


def write_report(root: Path, skymap: SkyMap, catalog: pd.DataFrame, config: AstroConfig,
                 summary: dict) -> dict:
    """Write ``root/report/``: the PNGs and ``index.html``. Returns the truth scores (empty without truth)."""
    out = Path(root) / "report"
    out.mkdir(parents=True, exist_ok=True)
    patches = sorted(p.stem.split("_", 1)[1] for p in (Path(root) / "coadds").glob("*.fits"))
    if not patches:
        return {}
    scores: dict = {}
    truth = None
    if config.report.truth:
        truth = pd.read_parquet(config.report.truth)
        variances = {p: fits.getdata(coadd_path(root, skymap, p), "VARIANCE").astype(np.float64) for p in patches}
        fwhm = median_psf_fwhm(root, skymap, patches, config)
        truth = validate.truth_in_patches(truth, skymap, variances, fwhm)
        pairs = validate.match(catalog, truth, config.report.match_radius_arcsec)
        scores = validate.score(catalog, truth, pairs, skymap.pixel_scale_arcsec,
                                exclude_flags=UNRELIABLE).as_dict()
        matched = np.zeros(len(truth), bool)
        matched[pairs["true"].to_numpy()] = True
        covered = truth["patch"].notna().to_numpy()
        plot_completeness(truth[covered], matched[covered], out / "completeness.png")
    counts = catalog["patch"].value_counts()
    best = max(patches, key=lambda p: (counts.get(p, 0), p))
    image = fits.getdata(coadd_path(root, skymap, best), "IMAGE")
    truth_xy = None
    if truth is not None:
        x, y = skymap.patch_wcs(best).all_world2pix(truth["ra"], truth["dec"], 0)
        truth_xy = np.column_stack([x, y])
    plot_patch(image, catalog[catalog["patch"] == best], truth_xy, out / "coadd.png",
               f"tract {skymap.config.tract} patch {best}: {int(counts.get(best, 0))} sources",
               border=skymap.config.patch_border_px)
    figures = ["coadd.png"] + (["completeness.png"] if truth is not None else [])
    page = ["<html><head><meta charset='utf-8'><title>scilens astro</title>",
            "<style>body{font-family:sans-serif;max-width:1000px;margin:auto}th{text-align:left;padding-right:1em}"
            "img{max-width:100%}</style></head><body>",
            "<h1>scilens astro</h1>", "<h2>Run</h2>", _table(summary)]
    if scores:
        page += ["<h2>Against truth (S/N &ge; 10)</h2>",
                 _table({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in scores.items()})]
    page += [f"<h2>{html.escape(f)}</h2><img src='{f}'>" for f in figures]
    page.append("</body></html>")
    (out / "index.html").write_text("\n".join(page))
    return scores
