"""Synthetic sky surveys with known truth, written as DECam-instcal-like FITS.

A survey is a patch of sky (RA/Dec) with stars and galaxies, observed in
several *visits*; each visit points the camera with a dither and a small
rotation, has its own seeing (a Moffat or Gaussian PSF), sky level and
artifacts, and splits into a mosaic of CCD images, each with a TAN WCS.
Pixel values are electrons above bias: sky with a gradient, the sources
rendered by :mod:`scilens.synth.profiles`, Poisson and read noise. Each image
has a variance plane (the expected variance of every pixel) and a mask plane
(bad columns, saturated cores). Single-visit artifacts -- cosmic rays and a
satellite trail -- are not masked: co-addition has to clip them.

* :func:`make_survey_truth` draws the sources; :func:`observe` renders the
  images of every visit one at a time; :func:`write_survey` writes them as
  FITS (HDU 1 image, 2 mask, 3 variance; EXPNUM/CCDNUM/SEEING in the primary
  header) plus ``truth.parquet``, ``artifacts.parquet`` and
  ``images.parquet`` (one row per CCD: visit, seeing, sky, ...).
* :func:`make_image` renders one stand-alone CCD image of point sources, for
  readers and writers that need just an image.

Everything is deterministic by seed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.wcs import WCS

from scilens.core.config import Config
from scilens.core.config import field as cfield
from scilens.synth import profiles

__all__ = [
    "BAD_COLUMN",
    "SATURATED",
    "SURVEY_PRESETS",
    "SkyImage",
    "Survey",
    "SurveyConfig",
    "make_image",
    "make_survey_truth",
    "observe",
    "survey_preset",
    "tan_wcs",
    "write_survey",
]

BAD_COLUMN = 1
"""Mask bit of a bad detector column."""
SATURATED = 2
"""Mask bit of a saturated pixel (its value is clipped at the saturation level)."""


@dataclass
class SkyImage:
    """One observed CCD image and its truth (sources inside it, with pixel positions)."""

    flux: np.ndarray
    variance: np.ndarray
    mask: np.ndarray
    wcs: WCS
    truth: pd.DataFrame
    header: dict = field(default_factory=dict)
    """Primary-header cards of the exposure (EXPNUM, CCDNUM, SEEING, ...)."""

    @property
    def wcs_header(self) -> fits.Header:
        """The image's WCS as a FITS header."""
        return self.wcs.to_header()


def tan_wcs(shape: tuple[int, int], ra: float, dec: float, pixel_scale_arcsec: float = 0.263,
            rotation_deg: float = 0.0) -> WCS:
    """A TAN WCS centred on (ra, dec) degrees for an image of ``shape`` (ny, nx).

    North is up and east left at zero rotation; ``rotation_deg`` turns the
    pixel grid counter-clockwise on the sky.
    """
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = [(shape[1] + 1) / 2, (shape[0] + 1) / 2]
    scale = pixel_scale_arcsec / 3600.0
    theta = np.deg2rad(rotation_deg)
    wcs.wcs.cd = scale * np.array([[-np.cos(theta), np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return wcs


def _add_stamp(image: np.ndarray, stamp: np.ndarray, x0: int, y0: int) -> None:
    """Add ``stamp`` with its (0, 0) pixel at image pixel (y0, x0), clipped to the image."""
    ny, nx = image.shape
    sy, sx = stamp.shape
    ya, xa = max(y0, 0), max(x0, 0)
    yb, xb = min(y0 + sy, ny), min(x0 + sx, nx)
    if ya < yb and xa < xb:
        image[ya:yb, xa:xb] += stamp[ya - y0:yb - y0, xa - x0:xb - x0]


def _observe_noise(model: np.ndarray, gain: float, read_noise: float,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Poisson + read noise on an expected image (electrons); returns (image, variance)."""
    image = rng.poisson(np.clip(model, 0, None) * gain) / gain + rng.normal(0.0, read_noise, model.shape)
    return image, model / gain + read_noise**2


def make_image(shape: tuple[int, int] = (256, 256), n_sources: int = 40, seed: int = 0,
               ra: float = 150.0, dec: float = 2.2, sky: float = 100.0, gain: float = 1.0,
               read_noise: float = 5.0, fwhm_px: float = 3.0) -> SkyImage:
    """Render one image with ``n_sources`` Gaussian stars of known position and flux.

    Pixel values are in electrons above bias: star flux plus sky (with a 10 %
    gradient across the image), Poisson noise, and Gaussian read noise. The
    variance plane is the expected variance ``model / gain + read_noise**2``.
    """
    rng = np.random.default_rng(seed)
    ny, nx = shape
    xx = np.arange(nx, dtype=np.float64)[None, :]
    model = np.broadcast_to(sky * (1.0 + 0.1 * (xx / max(nx - 1, 1) - 0.5)), shape).copy()
    margin = 4 * fwhm_px * profiles.FWHM_TO_SIGMA
    x = rng.uniform(margin, nx - 1 - margin, n_sources)
    y = rng.uniform(margin, ny - 1 - margin, n_sources)
    flux = 10 ** rng.uniform(3.0, 5.0, n_sources)
    half = int(np.ceil(4 * fwhm_px))
    for xi, yi, fi in zip(x, y, flux):
        cx, cy = round(xi), round(yi)
        stamp = profiles.gaussian_psf((2 * half + 1, 2 * half + 1), fwhm_px, x0=half + xi - cx, y0=half + yi - cy,
                                      flux=fi)
        _add_stamp(model, stamp, cx - half, cy - half)
    image, variance = _observe_noise(model, gain, read_noise, rng)
    mask = np.zeros(shape, dtype=np.int32)
    mask[:, int(rng.integers(0, nx))] |= BAD_COLUMN
    wcs = tan_wcs(shape, ra, dec)
    world = wcs.pixel_to_world_values(x, y)
    truth = pd.DataFrame({"id": np.arange(n_sources), "x": x, "y": y, "ra": world[0], "dec": world[1],
                          "flux": flux, "type": "star"})
    return SkyImage(image.astype(np.float32), variance.astype(np.float32), mask, wcs, truth)


# --------------------------------------------------------------------------- surveys

def _range(lo_hi: list[float]) -> bool:
    return len(lo_hi) == 2 and lo_hi[0] <= lo_hi[1]


@dataclass
class SurveyConfig(Config):
    """A generated survey: field, camera, visits, sources and artifacts."""

    seed: int = cfield(0, "Random seed; the same seed gives the same survey, bit for bit.")
    ra: float = cfield(150.1, "Field centre right ascension, degrees.", min=0.0, max=360.0)
    dec: float = cfield(2.2, "Field centre declination, degrees.", min=-89.0, max=89.0)
    visits: int = cfield(4, "Number of visits (exposures) of the field.", min=1)
    mosaic: list[int] = cfield([2, 2], "CCDs per visit as [rows, columns].", min=1,
                               check=lambda v: len(v) == 2, check_doc="two entries")
    ccd_shape: list[int] = cfield([1000, 1000], "CCD size in pixels as [ny, nx].", min=16,
                                  check=lambda v: len(v) == 2, check_doc="two entries")
    ccd_gap_px: int = cfield(30, "Gap between neighbouring CCDs of the mosaic, pixels.", min=0)
    pixel_scale_arcsec: float = cfield(0.263, "Detector pixel scale, arcsec per pixel (DECam: 0.263).", min=0.01)
    dither_arcsec: float = cfield(30.0, "Largest pointing offset of a visit from the field centre, per axis, arcsec.",
                                  min=0.0)
    rotation_deg: float = cfield(1.0, "Largest rotation of a visit's camera, degrees.", min=0.0, max=180.0)
    seeing_fwhm_arcsec: list[float] = cfield([0.8, 1.3], "Range [min, max] of a visit's PSF FWHM, arcsec.", min=0.01,
                                             check=_range, check_doc="[min, max]")
    psf: str = cfield("mixed", "PSF profile: moffat, gaussian, or mixed (visits alternate, Moffat first).",
                      choices=("moffat", "gaussian", "mixed"))
    moffat_beta: float = cfield(3.5, "Moffat beta (atmospheric seeing: 2.5-4.5).", min=1.1)
    sky_electrons: list[float] = cfield([900.0, 1100.0], "Range of a visit's sky level, electrons per pixel.",
                                        min=0.0, check=_range, check_doc="[min, max]")
    sky_gradient: float = cfield(0.05, "Sky gradient: fractional change across a CCD along x.", min=0.0, max=1.0)
    gain: float = cfield(1.0, "Gain, electrons per ADU (pixel values are ADU above bias).", min=0.01)
    read_noise: float = cfield(6.0, "Read noise, electrons.", min=0.0)
    saturation: float = cfield(60000.0, "Saturation level, ADU: brighter pixels are clipped and masked.", min=1.0)
    zero_point: float = cfield(30.0, "Magnitude of a source giving 1 ADU per visit.")
    star_density: float = cfield(12.0, "Stars per square arcminute.", min=0.0)
    galaxy_density: float = cfield(8.0, "Galaxies per square arcminute.", min=0.0)
    star_mag: list[float] = cfield([17.0, 25.0], "Star magnitude range.", check=_range, check_doc="[min, max]")
    galaxy_mag: list[float] = cfield([18.0, 24.5], "Galaxy magnitude range.", check=_range, check_doc="[min, max]")
    count_slope: float = cfield(0.2, "Number counts dN/dm ∝ 10^(slope·m) within the magnitude ranges.")
    bright_stars: int = cfield(1, "Extra bright stars (magnitudes in bright_mag) whose cores saturate.", min=0)
    bright_mag: list[float] = cfield([13.5, 14.5], "Bright star magnitude range.", check=_range,
                                     check_doc="[min, max]")
    galaxy_r_eff_arcsec: list[float] = cfield([0.3, 1.2], "Range of galaxy half-light radii, arcsec.", min=0.05,
                                              check=_range, check_doc="[min, max]")
    min_separation_arcsec: float = cfield(4.0, "No two sources closer than this (blends are not the test here).",
                                          min=0.0)
    bad_columns_per_ccd: int = cfield(1, "Bad (masked) columns per CCD.", min=0)
    cosmic_rays_per_mpix: float = cfield(60.0, "Cosmic-ray hits per million pixels per image.", min=0.0)
    cosmic_ray_electrons: list[float] = cfield([800.0, 8000.0], "Range of a cosmic-ray hit's charge per pixel, e-.",
                                               min=0.0, check=_range, check_doc="[min, max]")
    trail_visits: list[int] = cfield([1], "Visits (0-based) crossed by a satellite trail.", min=0)
    trail_electrons: float = cfield(150.0, "Peak surface brightness of a satellite trail, electrons per pixel.",
                                    min=0.0)


SURVEY_PRESETS: dict[str, dict] = {
    "tiny": {"visits": 6, "ccd_shape": [320, 320], "ccd_gap_px": 12, "dither_arcsec": 12.0,
             "star_density": 25.0, "galaxy_density": 12.0, "star_mag": [17.0, 24.0], "galaxy_mag": [18.0, 23.5]},
    "bench": {"ccd_shape": [2048, 2048], "ccd_gap_px": 40, "dither_arcsec": 40.0},
    "space": {"visits": 4, "mosaic": [1, 1], "ccd_shape": [500, 500], "ccd_gap_px": 0, "pixel_scale_arcsec": 0.04,
              "dither_arcsec": 0.3, "rotation_deg": 0.05, "seeing_fwhm_arcsec": [0.078, 0.084], "psf": "moffat",
              "moffat_beta": 2.5, "sky_electrons": [30.0, 40.0], "sky_gradient": 0.02, "read_noise": 4.0,
              "star_density": 18000.0, "galaxy_density": 0.0, "star_mag": [19.0, 27.0], "bright_mag": [14.0, 15.0],
              "min_separation_arcsec": 0.24, "cosmic_rays_per_mpix": 2000.0,
              "cosmic_ray_electrons": [300.0, 5000.0], "trail_visits": []},
}
"""Named surveys: ``tiny`` (a 2x2 mosaic of 320x320 px CCDs with a dense, bright
source population, for tests and the demo), ``bench`` (2x2 CCDs of 2048x2048 px: one visit covers about
18'x18', so a patch of 2000 px at 0.333"/px takes parts of several CCDs) and ``space`` (a space telescope's
crowded stellar field, like HST ACS or WFC3 on a globular cluster: 4 dithered visits of one 500x500 px CCD at
0.04"/px, a diffraction-limited PSF of 0.08" -- 2 pixels -- FWHM with broad Moffat wings, about 2,000 stars per
frame no closer than 3 FWHM, a dark sky, and 2,000 cosmic-ray hits per Mpix per exposure)."""


def survey_preset(name: str, **overrides) -> SurveyConfig:
    """A :class:`SurveyConfig` from :data:`SURVEY_PRESETS` with ``overrides`` on top."""
    if name not in SURVEY_PRESETS:
        raise KeyError(f"unknown survey preset {name!r}; choose one of {', '.join(SURVEY_PRESETS)}")
    return SurveyConfig(**{**SURVEY_PRESETS[name], **overrides})


@dataclass
class Visit:
    """How one visit observed the field."""

    visit: int
    ra: float
    dec: float
    rotation_deg: float
    seeing_fwhm_arcsec: float
    psf: str
    sky: float
    mjd: float


@dataclass
class Survey:
    """A generated survey: its config, the true sources and the visits."""

    config: SurveyConfig
    truth: pd.DataFrame
    visits: list[Visit]


def _field_size_arcsec(cfg: SurveyConfig) -> tuple[float, float]:
    """Width and height of the mosaic's footprint, arcsec."""
    rows, cols = cfg.mosaic
    ny, nx = cfg.ccd_shape
    return ((cols * nx + (cols - 1) * cfg.ccd_gap_px) * cfg.pixel_scale_arcsec,
            (rows * ny + (rows - 1) * cfg.ccd_gap_px) * cfg.pixel_scale_arcsec)


def _field_wcs(cfg: SurveyConfig) -> WCS:
    """Tangent-plane coordinates of the field in arcsec: pixel (0, 0) is the centre, x east-west, y north."""
    wcs = tan_wcs((1, 1), cfg.ra, cfg.dec, pixel_scale_arcsec=1.0)
    wcs.wcs.crpix = [1.0, 1.0]
    return wcs


def _magnitudes(rng: np.random.Generator, n: int, lo_hi: list[float], slope: float) -> np.ndarray:
    """Magnitudes with dN/dm ∝ 10^(slope·m) on [lo, hi] (inverse-CDF draw)."""
    lo, hi = lo_hi
    u = rng.uniform(0.0, 1.0, n)
    if abs(slope) < 1e-9 or hi == lo:
        return lo + u * (hi - lo)
    a, b = 10 ** (slope * lo), 10 ** (slope * hi)
    return np.log10(a + u * (b - a)) / slope


def _positions(rng: np.random.Generator, n: int, width: float, height: float,
               min_sep: float) -> np.ndarray:
    """``n`` positions (arcsec, centred) on a width x height box, no two closer than ``min_sep``."""
    kept = np.empty((0, 2))
    attempts = 0
    while len(kept) < n and attempts < 50:
        attempts += 1
        cand = np.column_stack([rng.uniform(-width / 2, width / 2, 2 * n),
                                rng.uniform(-height / 2, height / 2, 2 * n)])
        for point in cand:
            if len(kept) >= n:
                break
            if len(kept) == 0 or np.min(np.sum((kept - point) ** 2, axis=1)) >= min_sep**2:
                kept = np.vstack([kept, point])
    return kept


def make_survey_truth(cfg: SurveyConfig) -> Survey:
    """Draw the sources and the visits of a survey (no pixels yet).

    The truth table has one row per source: ``id``, ``type`` (star, galaxy),
    ``ra``, ``dec`` (degrees), ``flux`` (ADU per visit: all visits share one
    photometric zero point), ``mag``, and for galaxies ``r_eff_arcsec``,
    ``sersic_n``, ``axis_ratio``, ``inclination_deg`` and ``pa_deg`` (major
    axis, degrees east of north).
    """
    rng = np.random.default_rng([cfg.seed, 1])
    width, height = _field_size_arcsec(cfg)
    area_arcmin2 = width * height / 3600.0
    n_star = round(cfg.star_density * area_arcmin2) + cfg.bright_stars
    n_gal = round(cfg.galaxy_density * area_arcmin2)
    xy = _positions(rng, n_star + n_gal, width, height, cfg.min_separation_arcsec)
    n = len(xy)
    kind = np.array(["star"] * n_star + ["galaxy"] * n_gal)[:n]
    mag = np.where(kind == "star", _magnitudes(rng, n, cfg.star_mag, cfg.count_slope),
                   _magnitudes(rng, n, cfg.galaxy_mag, cfg.count_slope))
    bright_lo, bright_hi = cfg.bright_mag
    mag[: min(cfg.bright_stars, n)] = rng.uniform(bright_lo, bright_hi, min(cfg.bright_stars, n))
    is_gal = kind == "galaxy"
    lo, hi = np.log(cfg.galaxy_r_eff_arcsec)
    r_eff = np.where(is_gal, np.exp(rng.uniform(lo, hi, n)), np.nan)
    # Mostly exponential disks, some rounder n=2 systems; both keep >99 % of their light within 8 r_eff.
    sersic_n = np.where(is_gal, np.where(rng.uniform(size=n) < 0.7, 1.0, 2.0), np.nan)
    inclination = np.where(is_gal, np.degrees(np.arccos(rng.uniform(0.0, 1.0, n))), np.nan)  # isotropic spins
    axis_ratio = np.array([profiles.disk_axis_ratio(i) if g else np.nan for i, g in zip(inclination, is_gal)])
    axis_ratio = np.where(sersic_n == 2.0, np.maximum(axis_ratio, 0.6), axis_ratio)
    pa = np.where(is_gal, rng.uniform(0.0, 180.0, n), np.nan)
    ra, dec = _field_wcs(cfg).pixel_to_world_values(xy[:, 0], xy[:, 1])
    truth = pd.DataFrame({
        "id": np.arange(n, dtype=np.int64), "type": kind, "ra": ra, "dec": dec,
        "flux": 10 ** (-0.4 * (mag - cfg.zero_point)), "mag": mag, "r_eff_arcsec": r_eff,
        "sersic_n": sersic_n, "axis_ratio": axis_ratio, "inclination_deg": inclination, "pa_deg": pa,
    })
    vrng = np.random.default_rng([cfg.seed, 2])
    offsets = vrng.uniform(-cfg.dither_arcsec, cfg.dither_arcsec, (cfg.visits, 2))
    pra, pdec = _field_wcs(cfg).pixel_to_world_values(offsets[:, 0], offsets[:, 1])
    visits = []
    seeing_lo, seeing_hi = cfg.seeing_fwhm_arcsec
    sky_lo, sky_hi = cfg.sky_electrons
    for v in range(cfg.visits):
        psf = cfg.psf if cfg.psf != "mixed" else ("moffat" if v % 2 == 0 else "gaussian")
        visits.append(Visit(
            visit=v, ra=float(pra[v]), dec=float(pdec[v]),
            rotation_deg=float(vrng.uniform(-cfg.rotation_deg, cfg.rotation_deg)),
            seeing_fwhm_arcsec=float(vrng.uniform(seeing_lo, seeing_hi)), psf=psf,
            sky=float(vrng.uniform(sky_lo, sky_hi)), mjd=60000.0 + 0.01 * v))
    return Survey(cfg, truth, visits)


def ccd_wcs(cfg: SurveyConfig, visit: Visit, ccd: int) -> WCS:
    """TAN WCS of CCD ``ccd`` (row-major in the mosaic) in ``visit``: all CCDs share the visit's tangent point."""
    rows, cols = cfg.mosaic
    ny, nx = cfg.ccd_shape
    r, c = divmod(ccd, cols)
    wcs = tan_wcs((ny, nx), visit.ra, visit.dec, cfg.pixel_scale_arcsec, visit.rotation_deg)
    # The tangent point sits at the mosaic centre; this CCD is offset from it in the focal plane.
    off_x = (c - (cols - 1) / 2) * (nx + cfg.ccd_gap_px)
    off_y = (r - (rows - 1) / 2) * (ny + cfg.ccd_gap_px)
    wcs.wcs.crpix = [(nx + 1) / 2 - off_x, (ny + 1) / 2 - off_y]
    return wcs


def _psf_stamp(visit: Visit, cfg: SurveyConfig, half: int, x0: float, y0: float, flux: float,
               oversample: int = 5) -> np.ndarray:
    fwhm_px = visit.seeing_fwhm_arcsec / cfg.pixel_scale_arcsec
    shape = (2 * half + 1, 2 * half + 1)
    if visit.psf == "moffat":
        return profiles.moffat_psf(shape, fwhm_px, cfg.moffat_beta, x0=x0, y0=y0, flux=flux, oversample=oversample)
    return profiles.gaussian_psf(shape, fwhm_px, x0=x0, y0=y0, flux=flux, oversample=oversample)


def _pixel_angle(wcs: WCS, pa_deg: float) -> float:
    """Angle in the pixel grid (counter-clockwise from +x) of a direction at position angle ``pa_deg`` on the sky."""
    pa = np.deg2rad(pa_deg)
    east_north = np.array([np.sin(pa), np.cos(pa)])  # intermediate world coords: +x east, +y north
    d = np.linalg.solve(wcs.wcs.cd, east_north)
    return float(np.degrees(np.arctan2(d[1], d[0])))


def _render_sources(model: np.ndarray, wcs: WCS, truth: pd.DataFrame, visit: Visit, cfg: SurveyConfig) -> pd.DataFrame:
    """Add every source landing on this CCD to ``model`` (electrons); returns their rows with pixel x, y."""
    ny, nx = model.shape
    fwhm_px = visit.seeing_fwhm_arcsec / cfg.pixel_scale_arcsec
    x, y = wcs.all_world2pix(truth["ra"].to_numpy(), truth["dec"].to_numpy(), 0)
    r_eff_px = truth["r_eff_arcsec"].to_numpy() / cfg.pixel_scale_arcsec
    bright = truth["mag"].to_numpy() < cfg.star_mag[0]
    half = np.where(truth["type"].to_numpy() == "galaxy", np.ceil(8 * np.nan_to_num(r_eff_px) + 3 * fwhm_px),
                    np.ceil(np.where(bright, 12, 5) * fwhm_px)).astype(int)
    on = (x > -half) & (x < nx - 1 + half) & (y > -half) & (y < ny - 1 + half)
    psf_half = int(np.ceil(3 * fwhm_px))
    psf = _psf_stamp(visit, cfg, psf_half, psf_half, psf_half, 1.0)
    for i in np.flatnonzero(on):
        src = truth.iloc[i]
        cx, cy, h = round(x[i]), round(y[i]), int(half[i])
        x0, y0 = h + x[i] - cx, h + y[i] - cy
        if src["type"] == "star":
            stamp = _psf_stamp(visit, cfg, h, x0, y0, float(src["flux"]) * cfg.gain)
        else:
            oversample = 3 if r_eff_px[i] > 2 else 5  # a smooth profile needs fewer sub-samples
            galaxy = profiles.sersic((2 * h + 1, 2 * h + 1), x0, y0, float(src["flux"]) * cfg.gain,
                                     float(r_eff_px[i]),
                                     n=float(src["sersic_n"]), axis_ratio=float(src["axis_ratio"]),
                                     angle_deg=_pixel_angle(wcs, float(src["pa_deg"])), oversample=oversample)
            stamp = profiles.convolve(galaxy, psf)
        _add_stamp(model, stamp, cx - h, cy - h)
    rows = truth[on].copy()
    rows["x"], rows["y"] = x[on], y[on]
    return rows


def _cosmic_rays(shape: tuple[int, int], cfg: SurveyConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sharp cosmic-ray tracks (1-6 px, not PSF-shaped); returns (image of deposited charge, centres (n, 2) x, y)."""
    ny, nx = shape
    n = rng.poisson(cfg.cosmic_rays_per_mpix * ny * nx / 1e6)
    deposit = np.zeros(shape)
    centres = np.empty((n, 2))
    for k in range(n):
        length = int(rng.integers(1, 7))
        angle = rng.uniform(0, np.pi)
        x0, y0 = rng.uniform(0, nx - 1), rng.uniform(0, ny - 1)
        charge = rng.uniform(cfg.cosmic_ray_electrons[0], cfg.cosmic_ray_electrons[1])
        steps = np.arange(length)
        xs = np.clip(np.round(x0 + steps * np.cos(angle)).astype(int), 0, nx - 1)
        ys = np.clip(np.round(y0 + steps * np.sin(angle)).astype(int), 0, ny - 1)
        deposit[ys, xs] += charge
        centres[k] = (xs.mean(), ys.mean())
    return deposit, centres


def _trail(shape: tuple[int, int], wcs: WCS, line: tuple[float, float, float, float], fwhm_px: float,
           amplitude: float) -> tuple[np.ndarray, np.ndarray]:
    """A satellite trail: the great circle through two sky points (a straight line on a TAN CCD).

    Returns the trail's surface brightness (a Gaussian profile of the PSF
    width across the line) and pixel points sampled along it on the CCD.
    """
    ny, nx = shape
    (xa, xb), (ya, yb) = wcs.all_world2pix([line[0], line[2]], [line[1], line[3]], 0)
    d = np.array([xb - xa, yb - ya])
    d /= np.hypot(*d)
    yy, xx = np.mgrid[0:ny, 0:nx]
    distance = (xx - xa) * d[1] - (yy - ya) * d[0]
    sigma = fwhm_px * profiles.FWHM_TO_SIGMA
    brightness = amplitude * np.exp(-0.5 * (distance / sigma) ** 2)
    t = np.arange(-4 * max(nx, ny), 4 * max(nx, ny), 10.0)
    px, py = xa + t * d[0], ya + t * d[1]
    inside = (px >= 0) & (px <= nx - 1) & (py >= 0) & (py <= ny - 1)
    return brightness, np.column_stack([px[inside], py[inside]])


def observe(survey: Survey) -> Iterator[tuple[Visit, int, SkyImage, pd.DataFrame]]:
    """Render every CCD image of every visit, one at a time.

    Yields ``(visit, ccd, image, artifacts)``; ``artifacts`` lists the cosmic
    rays and satellite-trail points on that image (kind, x, y, ra, dec).
    """
    cfg = survey.config
    ny, nx = cfg.ccd_shape
    n_ccd = cfg.mosaic[0] * cfg.mosaic[1]
    width, height = _field_size_arcsec(cfg)
    for visit in survey.visits:
        vrng = np.random.default_rng([cfg.seed, 3, visit.visit])
        # One trail per trailed visit, crossing near the field centre at a random angle.
        angle = vrng.uniform(0, np.pi)
        cx, cy = vrng.uniform(-0.2, 0.2, 2) * (width, height)
        far = 2 * max(width, height)
        ends = _field_wcs(cfg).pixel_to_world_values([cx - far * np.cos(angle), cx + far * np.cos(angle)],
                                                     [cy - far * np.sin(angle), cy + far * np.sin(angle)])
        line = (ends[0][0], ends[1][0], ends[0][1], ends[1][1])
        fwhm_px = visit.seeing_fwhm_arcsec / cfg.pixel_scale_arcsec
        for ccd in range(n_ccd):
            rng = np.random.default_rng([cfg.seed, 4, visit.visit, ccd])
            wcs = ccd_wcs(cfg, visit, ccd)
            xx = np.arange(nx, dtype=np.float64)[None, :]
            model = np.broadcast_to(visit.sky * (1 + cfg.sky_gradient * (xx / max(nx - 1, 1) - 0.5)), (ny, nx)).copy()
            rows = _render_sources(model, wcs, survey.truth, visit, cfg)
            deposit, cr_xy = _cosmic_rays((ny, nx), cfg, rng)
            model += deposit
            art = [pd.DataFrame({"kind": "cosmic_ray", "x": cr_xy[:, 0], "y": cr_xy[:, 1]})]
            if visit.visit in cfg.trail_visits:
                trail, trail_xy = _trail((ny, nx), wcs, line, fwhm_px, cfg.trail_electrons)
                model += trail
                art.append(pd.DataFrame({"kind": "trail", "x": trail_xy[:, 0], "y": trail_xy[:, 1]}))
            image, variance = _observe_noise(model, 1.0, cfg.read_noise, rng)  # electrons
            image /= cfg.gain  # ADU
            variance /= cfg.gain**2
            mask = np.zeros((ny, nx), dtype=np.int32)
            saturated = image >= cfg.saturation
            image[saturated] = cfg.saturation
            mask[saturated] |= SATURATED
            for col in rng.choice(nx, size=min(cfg.bad_columns_per_ccd, nx), replace=False):
                image[:, col] += rng.uniform(200, 2000)  # a hot column: wrong values the mask must hide
                mask[:, col] |= BAD_COLUMN
            artifacts = pd.concat(art, ignore_index=True)
            if len(artifacts):
                artifacts["ra"], artifacts["dec"] = wcs.all_pix2world(artifacts["x"], artifacts["y"], 0)
            else:
                artifacts["ra"], artifacts["dec"] = np.empty(0), np.empty(0)
            header = {"EXPNUM": visit.visit, "CCDNUM": ccd + 1, "MJD-OBS": visit.mjd, "EXPTIME": 90.0,
                      "FILTER": "i", "SEEING": round(visit.seeing_fwhm_arcsec, 4), "PSFMODEL": visit.psf,
                      "SKYLEVEL": round(visit.sky, 3), "GAIN": cfg.gain, "RDNOISE": cfg.read_noise,
                      "SATURATE": cfg.saturation, "MAGZERO": cfg.zero_point, "BUNIT": "ADU"}
            yield visit, ccd, SkyImage(image.astype(np.float32), variance.astype(np.float32), mask, wcs, rows,
                                       header), artifacts


def image_name(visit: int, ccd: int) -> str:
    """File stem of a survey image: ``v<visit>_c<ccd>``."""
    return f"v{visit:04d}_c{ccd:02d}"


def write_survey(cfg: SurveyConfig, root: str | Path) -> Survey:
    """Generate a survey and write it under ``root``.

    Writes ``root/images/<v####_c##>.fits`` (DECam-instcal-like: HDU 1 image,
    2 mask, 3 variance, the WCS in each, exposure cards in the primary
    header), ``root/truth.parquet`` (sources), ``root/artifacts.parquet``
    (cosmic rays and trail points: image_id, kind, ra, dec) and
    ``root/images.parquet`` (image_id, visit, ccd, seeing, psf, sky).
    """
    from scilens.io.fits import write_image

    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    survey = make_survey_truth(cfg)
    artifacts, images = [], []
    for visit, ccd, image, art in observe(survey):
        name = image_name(visit.visit, ccd)
        write_image(root / "images" / f"{name}.fits", image.flux, image.variance, image.mask,
                    image.wcs_header, primary_header=image.header)
        artifacts.append(art.assign(image_id=name, visit=visit.visit))
        images.append({"image_id": name, "visit": visit.visit, "ccd": ccd, "seeing_fwhm_arcsec":
                       visit.seeing_fwhm_arcsec, "psf": visit.psf, "sky": visit.sky,
                       "rotation_deg": visit.rotation_deg, "sources": len(image.truth)})
    survey.truth.to_parquet(root / "truth.parquet", index=False)
    pd.concat(artifacts, ignore_index=True).to_parquet(root / "artifacts.parquet", index=False)
    pd.DataFrame(images).to_parquet(root / "images.parquet", index=False)
    return survey
