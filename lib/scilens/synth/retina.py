"""Synthetic retinal images with known truth: macular OCT volumes and colour fundus photos (CFP).

No OCT data or cohort images can be had here, so the glaucoma pipeline is
developed and tested on images rendered from a small anatomical model whose
glaucoma signal is the one the clinic looks for:

* **OCT**: a volume of B-scans through the macula (128 by default, 512 x 650
  at full size). The retina is a stack of layers of typical thickness and
  reflectivity (nerve-fibre layer RNFL, ganglion-cell + inner plexiform layer
  GCL, inner nuclear, outer plexiform, outer nuclear, ellipsoid zone, outer
  segments, RPE, then choroid), resting on a smoothly curved RPE, with a
  foveal pit, an RNFL that thickens towards the optic nerve (nasally) and in
  the superior/inferior arcades, retinal-vessel shadows, axial blur,
  multiplicative speckle and log compression. Glaucoma thins the RNFL and GCL
  by a per-eye fraction ``thinning`` weighted by :func:`thinning_weight`, so
  the damage is strongest in the superior and inferior scans (as in Fig. 3.4
  of the dissertation). Every volume has small scan-to-scan motion that
  translation corrects; a few (``misaligned_fraction``) get a large axial jump
  or a blink (lost signal) that it cannot, which the exclusion rule of
  :mod:`scilens.glaucoma.preprocess` must catch.
* **CFP**: an RGB photo whose background colour, vignetting and macula follow
  the radial colour profile of the one real fundus photo available here,
  ``skimage.data.retina()``, with an optic disc and cup (cup-to-disc ratio
  ``cdr`` larger in glaucoma), branching vessel arcades, mottled texture,
  lighting gradients, brightness and gamma variation, and sensor noise.

Orientation (what the preprocessing undoes): an OCT volume is
``(scan, depth, lateral)`` with scan 0 the most superior; depth 0 is the
vitreous side; the lateral axis runs like the photo's columns. Anatomy is
mirrored between eyes: the nasal side (towards the optic nerve) is on the
right of both images for a right eye and on the left for a left eye (as in
``skimage.data.retina()``, a left eye).

:func:`write_cohort_images` renders the images of a cohort's eyes (``eid``,
``eye``, ``label``) into files named like UK Biobank bulk fields (see
:mod:`scilens.io.retina`) and returns the truth table.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage, special

from scilens.core.config import Config, field

__all__ = [
    "LABELS",
    "OCT_LAYERS",
    "EyeTruth",
    "RetinaSynthConfig",
    "fundus_photo",
    "layer_boundaries",
    "oct_volume",
    "render_eye",
    "thinning_weight",
    "write_cohort_images",
]

LABELS = ("glaucoma", "healthy", "ptg")

OCT_LAYERS = ("rnfl", "gcl_ipl", "inl", "opl", "onl", "ellipsoid", "outer_segments", "rpe", "choroid")
"""Layers from the inner (vitreous) side outwards; the vitreous lies above, the sclera below."""

_REFLECTIVITY = np.array([0.002,  # vitreous
                          0.85, 0.45, 0.16, 0.5, 0.09, 0.75, 0.25, 0.95, 0.4,
                          0.012])  # sclera
"""Relative backscatter of vitreous, each layer of OCT_LAYERS and the sclera (bright RNFL, plexiform
layers, ellipsoid zone and RPE; dark nuclear layers), the usual appearance of a macular B-scan."""


@dataclass
class RetinaSynthConfig(Config):
    """How the synthetic images of one cohort look."""

    n_scans: int = field(128, "B-scans per OCT volume (UK Biobank macular cubes have 128).", min=1)
    oct_height: int = field(512, "Depth pixels of a B-scan.", min=16)
    oct_width: int = field(650, "Lateral pixels of a B-scan.", min=16)
    fundus_size: int = field(768, "Side of the square fundus photo, pixels.", min=32)
    thinning_glaucoma: float = field(0.45, "Mean fractional RNFL/GCL thinning of a glaucomatous eye at the "
                                     "superior/inferior edge of the macula.", min=0.0, max=0.95)
    thinning_ptg: float = field(0.2, "Mean thinning of an eye that later progresses to glaucoma (PTG).",
                                min=0.0, max=0.95)
    thinning_sd: float = field(0.1, "Between-eye standard deviation of the thinning (healthy eyes vary by "
                               "half of it around 0).", min=0.0)
    cdr_healthy: float = field(0.35, "Mean cup-to-disc ratio of healthy eyes.", min=0.05, max=0.95)
    cdr_glaucoma: float = field(0.65, "Mean cup-to-disc ratio of glaucomatous eyes.", min=0.05, max=0.95)
    cdr_ptg: float = field(0.5, "Mean cup-to-disc ratio of PTG eyes.", min=0.05, max=0.95)
    cdr_sd: float = field(0.08, "Between-eye standard deviation of the cup-to-disc ratio.", min=0.0)
    misaligned_fraction: float = field(0.03, "Share of OCT volumes with motion that translation cannot "
                                       "correct (an axial jump or a blink).", min=0.0, max=1.0)
    speckle_looks: float = field(2.0, "Shape of the Gamma speckle (lower is noisier).", min=0.2)


@dataclass(frozen=True)
class EyeTruth:
    """What was rendered for one eye."""

    thinning: float
    cdr: float
    misalignment: str  # "" when none, else "jump" or "blink"
    disc_row: float
    disc_col: float


def thinning_weight(n_scans: int) -> np.ndarray:
    """Relative glaucomatous thinning of each scan, superior (0) to inferior (n-1).

    0.3 at the central scan rising to 1 at the superior and inferior edges:
    glaucoma damages the arcuate bundles above and below the fovea first.
    """
    s = np.linspace(-1.0, 1.0, n_scans) if n_scans > 1 else np.zeros(1)
    return 0.3 + 0.7 * np.abs(s) ** 1.5


def _nasal_sign(eye: str) -> float:
    if eye not in ("left", "right"):
        raise ValueError(f"eye must be 'left' or 'right', not {eye!r}")
    return 1.0 if eye == "right" else -1.0


def layer_boundaries(n_scans: int, width: int, eye: str, thinning: float,
                     rng: np.random.Generator) -> np.ndarray:
    """Depth of every layer boundary, as a fraction of the scan height.

    Returns an array ``(len(OCT_LAYERS) + 1, n_scans, width)``: the inner
    limiting membrane first, then the outer boundary of each layer. Layers
    are stacked inwards from a smooth, curved and tilted RPE, so the foveal
    pit appears at the surface where the inner layers thin.
    """
    s = np.linspace(-1.0, 1.0, n_scans)[:, None] if n_scans > 1 else np.zeros((1, 1))
    x = np.linspace(-1.0, 1.0, width)[None, :]
    fs, fx = rng.normal(0.0, 0.04, 2)
    r = np.hypot(x - fx, s - fs)  # units of half the 6 mm cube
    pit = np.exp(-(r**2) / (2 * 0.1**2))
    ring = np.exp(-((r - 0.3) ** 2) / (2 * 0.2**2))
    nasal = np.clip(0.5 * (1 + _nasal_sign(eye) * x), 0.0, 1.0)
    scale = rng.normal(1.0, 0.05)
    damage = 1.0 - thinning * thinning_weight(n_scans)[:, None]
    thickness = {
        "rnfl": (0.012 + 0.045 * nasal**2 + 0.02 * np.abs(s)) * (1 - 0.9 * pit) * damage,
        "gcl_ipl": (0.025 + 0.06 * ring) * (1 - 0.8 * pit) * damage,
        "inl": (0.022 + 0.018 * ring) * (1 - 0.7 * pit),
        "opl": 0.02 + 0.0 * r,
        "onl": 0.055 + 0.045 * pit,
        "ellipsoid": 0.012 + 0.0 * r,
        "outer_segments": 0.02 + 0.004 * pit,
        "rpe": 0.018 + 0.0 * r,
        "choroid": 0.09 + 0.01 * rng.normal() + 0.01 * np.cos(2.5 * x + rng.uniform(0, 6)),
    }
    rpe_bottom = (0.58 + rng.normal(0.0, 0.03) + 0.05 * rng.uniform(0.5, 1.5) * (x**2 + s**2) / 2
                  + rng.normal(0.0, 0.02) * x)
    inner = {k: v * scale for k, v in thickness.items() if k != "choroid"}
    top = rpe_bottom - sum(inner.values())
    bounds = [np.broadcast_to(top, (n_scans, width))]
    depth = top
    for name in OCT_LAYERS:
        depth = depth + (inner[name] if name in inner else thickness[name])
        bounds.append(np.broadcast_to(depth, (n_scans, width)))
    return np.stack(bounds)


def _render_bscan(bounds: np.ndarray, height: int, rng: np.random.Generator, vessels: np.ndarray,
                  looks: float, gain: float) -> np.ndarray:
    """One B-scan (float in [0, 1]) from its boundaries ``(n_bounds, width)`` in pixels."""
    depth = np.arange(height, dtype=np.float64)[:, None]
    layer = (depth[None] >= bounds[:, None, :]).sum(axis=0)  # 0 vitreous ... len(bounds) sclera
    reflect = _REFLECTIVITY[layer].copy()
    width = bounds.shape[1]
    # The choroid is spongy: dark vessel lumens in a bright stroma.
    choroid = layer == len(OCT_LAYERS)
    texture = ndimage.gaussian_filter(rng.normal(size=(height, width)), max(1.0, height / 170))
    reflect[choroid] *= 1.0 + 0.8 * np.tanh(2 * texture[choroid] / (texture.std() + 1e-9))
    # Retinal vessels in the RNFL cast shadows on everything below them.
    reflect[(layer >= 2) & vessels[None, :]] *= 0.45
    blur = (max(0.5, height / 600), max(0.5, width / 450))
    reflect = ndimage.gaussian_filter(reflect, blur)
    speckle = rng.gamma(looks, 1.0 / looks, size=reflect.shape)
    signal = np.log1p(100.0 * gain * reflect * speckle) / np.log1p(100.0)
    return np.clip(signal + rng.normal(0.0, 0.02, signal.shape), 0.0, 1.0)


def oct_volume(eye: str, thinning: float, rng: np.random.Generator, n_scans: int = 128, height: int = 512,
               width: int = 650, misalignment: str = "", looks: float = 2.0) -> np.ndarray:
    """Render a macular OCT volume ``(n_scans, height, width)`` of uint8.

    Parameters
    ----------
    eye : {"left", "right"}
        Which eye; the anatomy is mirrored between them.
    thinning : float
        Fractional RNFL/GCL thinning at the superior/inferior edge (0 = healthy).
    rng : numpy.random.Generator
    n_scans, height, width : int
        Volume shape.
    misalignment : {"", "jump", "blink"}
        Motion that translation cannot correct: a run of scans displaced
        axially by 20-30 % of the height (the retina partly leaves the frame)
        or a run of scans without signal.
    looks : float
        Speckle shape parameter.
    """
    if misalignment not in ("", "jump", "blink"):
        raise ValueError(f"misalignment must be '', 'jump' or 'blink', not {misalignment!r}")
    bounds = layer_boundaries(n_scans, width, eye, thinning, rng) * height
    # Small eye motion between scans that translation undoes: a random walk of the axial position
    # and lateral jitter, a pixel or two at full size.
    axial = np.cumsum(rng.normal(0.0, 0.004 * height, n_scans))
    axial -= axial.mean()
    lateral = np.rint(rng.normal(0.0, 0.002 * width, n_scans)).astype(int)
    blink = np.zeros(n_scans, dtype=bool)
    if misalignment:
        run = max(1, n_scans // 6)
        start = int(rng.integers(1, max(2, n_scans - run)))
        if misalignment == "jump":
            axial[start:start + run] += rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.3) * height
        else:
            blink[start:start + run] = True
    vessel_x = rng.uniform(0.1, 0.9, int(rng.integers(3, 7)))
    vessel_slope = rng.normal(0.0, 0.15, vessel_x.size)
    vessel_half = max(0.5, 0.008 * width)
    gain = rng.lognormal(0.0, 0.1)
    cols = np.arange(width)
    volume = np.empty((n_scans, height, width), dtype=np.uint8)
    for j in range(n_scans):
        s = -1.0 + 2.0 * j / max(1, n_scans - 1)
        centres = (vessel_x + vessel_slope * s) * width
        vessels = (np.abs(cols[:, None] - centres[None, :]) <= vessel_half).any(axis=1)
        if blink[j]:
            scan = np.clip(rng.normal(0.05, 0.03, (height, width)), 0.0, 1.0)
        else:
            scan = _render_bscan(np.roll(bounds[:, j, :] + axial[j], lateral[j], axis=1), height, rng,
                                 np.roll(vessels, lateral[j]), looks, gain)
        volume[j] = np.round(scan * 255).astype(np.uint8)
    return volume


@functools.lru_cache(maxsize=1)
def _real_fundus_profile(bins: int = 64) -> np.ndarray:
    """Median colour of ``skimage.data.retina()`` in rings around its centre, ``(bins, 3)`` in [0, 1].

    The median over each ring ignores the thin vessels and the small disc, leaving
    the photo's background colour, vignetting and darker macula.
    """
    from skimage import data

    photo = data.retina().astype(np.float64) / 255.0
    inside = photo.sum(axis=2) > 0.15
    rows, cols = np.nonzero(inside)
    cy, cx = rows.mean(), cols.mean()
    radius = np.sqrt(inside.sum() / np.pi)
    r = np.hypot(rows - cy, cols - cx) / radius
    which = np.minimum((r * bins).astype(int), bins - 1)
    pixels = photo[rows, cols]
    profile = np.empty((bins, 3))
    for b in range(bins):
        profile[b] = np.median(pixels[which == b], axis=0)
    return profile


def _vessel_tree(canvas: np.ndarray, start: np.ndarray, angle: float, curvature: float, width: float,
                 length: float, rng: np.random.Generator, depth: int = 0) -> None:
    """Draw a vessel (and its branches) as overlapping discs of falling width into ``canvas`` (alpha)."""
    size = canvas.shape[0]
    step = max(0.5, size / 300)
    n = int(length / step)
    point = start.astype(np.float64).copy()
    yy, xx = np.ogrid[:size, :size]
    branch_at = set(rng.integers(n // 5, max(n // 5 + 1, n), size=2 if depth < 2 else 0).tolist())
    for k in range(n):
        angle += curvature + rng.normal(0.0, 0.015)
        point += step * np.array([np.sin(angle), np.cos(angle)])
        w = max(0.5, width * (1 - 0.6 * k / n))
        if not (0 <= point[0] < size and 0 <= point[1] < size):
            break
        r0, c0 = int(point[0]), int(point[1])
        span = int(np.ceil(w)) + 1
        sl = (slice(max(0, r0 - span), r0 + span + 1), slice(max(0, c0 - span), c0 + span + 1))
        d = np.hypot(yy[sl[0]] - point[0], xx[:, sl[1]] - point[1])
        canvas[sl] = np.maximum(canvas[sl], np.clip(w + 0.5 - d, 0.0, 1.0))
        if k in branch_at:
            _vessel_tree(canvas, point, angle + rng.choice([-1, 1]) * rng.uniform(0.4, 0.9), curvature * 0.5,
                         w * 0.7, (n - k) * step * rng.uniform(0.4, 0.8), rng, depth + 1)


def fundus_photo(eye: str, cdr: float, rng: np.random.Generator, size: int = 768) -> tuple[np.ndarray, float, float]:
    """Render a colour fundus photo ``(size, size, 3)`` uint8; returns it with the disc centre (row, col)."""
    nasal = _nasal_sign(eye)
    profile = _real_fundus_profile()
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    centre = (size - 1) / 2
    fov = 0.48 * size
    r = np.hypot(yy - centre, xx - centre) / fov
    idx = np.minimum((r * len(profile)).astype(int), len(profile) - 1)
    image = profile[idx]
    tint = rng.normal(1.0, 0.05, 3)
    mottle = ndimage.gaussian_filter(rng.normal(size=(size, size)), size / 60)
    image = image * tint * (1 + 0.03 * mottle / (mottle.std() + 1e-9))[..., None]

    disc_r = 0.065 * size * rng.normal(1.0, 0.08)
    disc = np.array([centre + rng.normal(0.0, 0.02) * size, centre + nasal * (0.3 + rng.normal(0.0, 0.015)) * size])
    d = np.hypot((yy - disc[0]) / 1.08, xx - disc[1]) / disc_r  # discs are slightly taller than wide
    rim_alpha = special.expit((1.0 - d) * 12)
    cup_alpha = special.expit((1.0 - d / max(cdr, 1e-3)) * 10)
    rim = np.array([0.93, 0.66, 0.42]) * rng.normal(1.0, 0.03)
    cup = np.array([0.98, 0.9, 0.74])
    image = image * (1 - rim_alpha[..., None]) + rim * rim_alpha[..., None]
    image = image * (1 - cup_alpha[..., None]) + cup * cup_alpha[..., None]

    vessels = np.zeros((size, size))
    # Angles: 0 heads right, pi/2 down. The arcades leave the disc towards the macula, above and
    # below it, and bend back round it; smaller branches run nasally.
    temporal = np.pi if nasal > 0 else 0.0
    turn = 1.0 if temporal == 0.0 else -1.0
    steps = 0.6 * size / max(0.5, size / 300)
    for sign in (-1.0, 1.0):  # superior, inferior
        start = disc + np.array([sign * 0.3 * disc_r, 0.0])
        _vessel_tree(vessels, start, temporal + sign * turn * rng.normal(0.9, 0.1), -sign * turn * 1.5 / steps,
                     0.009 * size, 0.6 * size, rng)
        _vessel_tree(vessels, start, temporal + np.pi - sign * turn * rng.normal(0.8, 0.15), 0.0, 0.006 * size,
                     0.3 * size, rng)
    vessel_colour = np.array([0.5, 0.09, 0.07]) * rng.normal(1.0, 0.05)
    image = image * (1 - 0.85 * vessels[..., None]) + vessel_colour * 0.85 * vessels[..., None]

    direction = rng.uniform(0, 2 * np.pi)
    light = 1 + rng.uniform(0.0, 0.25) * ((xx - centre) * np.cos(direction) + (yy - centre) * np.sin(direction)) / size
    image = np.clip(image * light[..., None] * rng.lognormal(0.0, 0.12), 0.0, 1.0) ** rng.lognormal(0.0, 0.1)
    image = image + rng.normal(0.0, 0.01, image.shape)
    image[r > 1.0] = 0.0
    return np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8), float(disc[0]), float(disc[1])


def _eye_rng(seed: int, eid: int, eye: str) -> np.random.Generator:
    return np.random.default_rng([seed, int(eid), 0 if eye == "left" else 1])


def render_eye(eid: int, eye: str, label: str, config: RetinaSynthConfig, seed: int = 0
               ) -> tuple[np.ndarray, np.ndarray, EyeTruth]:
    """The OCT volume and fundus photo of one eye, deterministic in ``(seed, eid, eye)``."""
    if label not in LABELS:
        raise ValueError(f"label must be one of {LABELS}, not {label!r}")
    rng = _eye_rng(seed, eid, eye)
    mean_thinning = {"glaucoma": config.thinning_glaucoma, "ptg": config.thinning_ptg, "healthy": 0.0}[label]
    sd = config.thinning_sd / (2 if label == "healthy" else 1)
    thinning = float(np.clip(rng.normal(mean_thinning, sd), -0.15, 0.9))
    mean_cdr = {"glaucoma": config.cdr_glaucoma, "ptg": config.cdr_ptg, "healthy": config.cdr_healthy}[label]
    cdr = float(np.clip(rng.normal(mean_cdr, config.cdr_sd), 0.1, 0.92))
    misalignment = ""
    if rng.uniform() < config.misaligned_fraction:
        misalignment = str(rng.choice(["jump", "blink"]))
    volume = oct_volume(eye, thinning, rng, config.n_scans, config.oct_height, config.oct_width, misalignment,
                        config.speckle_looks)
    photo, disc_row, disc_col = fundus_photo(eye, cdr, rng, config.fundus_size)
    return volume, photo, EyeTruth(thinning, cdr, misalignment, disc_row, disc_col)


def write_cohort_images(eyes: pd.DataFrame, root: str | Path, config: RetinaSynthConfig | None = None,
                        seed: int = 0) -> pd.DataFrame:
    """Render and write the images of every eye of a cohort.

    Parameters
    ----------
    eyes : DataFrame
        One row per eye with ``eid``, ``eye`` and ``label`` (and optionally
        ``visit``, default 0), e.g. the ``eyes.parquet`` of ``scilens glaucoma-cohort``.
    root : path
        Directory receiving ``oct/`` (multi-page TIFF volumes) and ``fundus/`` (PNG photos),
        named as :func:`scilens.io.retina.image_name` says.
    config : RetinaSynthConfig, optional
    seed : int

    Returns
    -------
    DataFrame
        The truth per eye: ``eid``, ``eye``, ``visit``, ``label``, ``thinning``, ``cdr``,
        ``misalignment``, ``disc_row``, ``disc_col``, ``oct_path``, ``fundus_path``.
    """
    from scilens.io import retina as retina_io

    config = config or RetinaSynthConfig()
    root = Path(root)
    rows = []
    for row in eyes.itertuples(index=False):
        visit = int(getattr(row, "visit", 0) or 0)
        volume, photo, truth = render_eye(int(row.eid), row.eye, row.label, config, seed)
        oct_path = retina_io.write_oct(root / "oct" / retina_io.image_name(row.eid, row.eye, visit, "oct"), volume)
        fundus_path = retina_io.write_fundus(root / "fundus" / retina_io.image_name(row.eid, row.eye, visit, "cfp"),
                                             photo)
        rows.append({"eid": int(row.eid), "eye": row.eye, "visit": visit, "label": row.label,
                     "thinning": truth.thinning, "cdr": truth.cdr, "misalignment": truth.misalignment,
                     "disc_row": truth.disc_row, "disc_col": truth.disc_col,
                     "oct_path": str(oct_path), "fundus_path": str(fundus_path)})
    return pd.DataFrame(rows)
