"""The config of ``scilens astro``: one section per step, each the typed config of its kernel."""

from __future__ import annotations

from dataclasses import dataclass

from scilens.astro import coadd as coadd_step
from scilens.astro import detect as detect_step
from scilens.astro import preprocess as preprocess_step
from scilens.astro import psf as psf_step
from scilens.astro import warp as warp_step
from scilens.astro.skymap import SkyMapConfig
from scilens.core.config import Config, field
from scilens.core.job import JobConfig
from scilens.io import fits as fits_io

__all__ = ["AstroConfig", "ReportConfig"]


@dataclass
class ReportConfig(Config):
    """The run's report: PNGs and an HTML page."""

    enabled: bool = field(True, "Write report/ (co-add PNG with detections, completeness plot, index.html).")
    truth: str | None = field(None, "Truth catalog (Parquet: ra, dec, flux, mag, type) to mark and score against.")
    match_radius_arcsec: float = field(1.0, "Match radius between detections and truth, arcsec.", min=0.0)


@dataclass
class AstroConfig(JobConfig):
    """Config of ``scilens astro``: one section per step."""

    fits: fits_io.FitsLayout = field(fits_io.FitsLayout(), "HDU layout of the input images.")
    preprocess: preprocess_step.PreprocessConfig = field(preprocess_step.PreprocessConfig(),
                                                         "Step 1: background subtraction and weights.")
    psf: psf_step.PsfConfig = field(psf_step.PsfConfig(), "Step 1: each image's PSF, measured from its stars.")
    skymap: SkyMapConfig = field(SkyMapConfig(), "Step 2: the tract and its patches.")
    warp: warp_step.WarpConfig = field(warp_step.WarpConfig(), "Step 2: resampling onto patches.")
    coadd: coadd_step.CoaddConfig = field(coadd_step.CoaddConfig(), "Step 3: clipped co-addition.")
    detect: detect_step.DetectConfig = field(detect_step.DetectConfig(), "Step 4: source detection.")
    report: ReportConfig = field(ReportConfig(), "Plots and HTML report.")
