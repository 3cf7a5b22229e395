"""The astronomy pipeline per record: what the Spark job and the single-process reference both run.

Each function takes one record -- a file, an image, the warps of one patch,
one co-add -- and returns plain Python/numpy objects, so orchestration
(Spark stages, a loop, Dask tasks) is the only difference between
implementations, and their outputs agree to the bit.

Outputs, shared by every implementation:

* ``coadds/<tract>_<patch>.fits`` -- HDU 1 IMAGE, 2 MASK, 3 VARIANCE, 4 COUNT, with the patch WCS,
  and 5 INPUTS (a table: each input image's weight and measured PSF); the
  primary header holds the co-add's effective PSF (``PSFFWHM`` arcsec, ``PSFPIX`` pixels);
* ``catalog.parquet`` and ``catalog.fits`` -- :data:`CATALOG_COLUMNS`, sorted by ``id``
  (``catalog.fits`` records each patch's PSF FWHM as ``PSF<patch number>``);
* ``images.parquet`` -- one row per co-added image: its measured PSF (:data:`IMAGE_COLUMNS`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scilens.astro import coadd as coadd_step
from scilens.astro import detect as detect_step
from scilens.astro import preprocess as preprocess_step
from scilens.astro import warp as warp_step
from scilens.astro.config import AstroConfig
from scilens.astro.skymap import SkyMap, SkyMapConfig, footprint
from scilens.io import fits as fits_io

__all__ = [
    "CATALOG_COLUMNS",
    "IMAGE_COLUMNS",
    "ImageInfo",
    "build_skymap",
    "coadd_patch",
    "coadd_path",
    "detect_patch",
    "input_paths",
    "median_psf_fwhm",
    "prepare",
    "read_psf",
    "scan",
    "warp_image",
    "write_catalog",
    "write_coadd",
    "write_image_records",
    "write_run_outputs",
]

CATALOG_COLUMNS = ["id", "tract", "patch", "ra", "dec", "x", "y", "flux", "flux_err", "snr", "npix", "flags"]
"""Catalog columns: ``id`` (unique in the tract), ``x``, ``y`` in the patch's co-add pixels,
``flux`` and ``flux_err`` in input image units (Kron aperture), ``snr = flux/flux_err``,
``npix`` (footprint area), ``flags`` (co-add mask bits in the footprint)."""

LABELS_PER_PATCH = 1_000_000

IMAGE_COLUMNS = ["image_id", "psf_fwhm_arcsec", "psf_fwhm_px", "psf_beta", "psf_stars", "psf_measured", "weight"]
"""Per input image (``images.parquet``, the co-adds' INPUTS tables): its PSF FWHM in arcsec and in its own
pixels, the Moffat beta fitted, the stars it was measured on, whether it was measured (False: the
``psf.fallback_fwhm_arcsec``), and its co-add weight (per patch pixel)."""


@dataclass
class ImageInfo:
    """What the header of an input image says: enough to place it on the sky map."""

    image_id: str
    path: str
    shape: tuple[int, int]
    wcs_header: str
    footprint_ra: np.ndarray
    footprint_dec: np.ndarray

    @property
    def pixel_scale_arcsec(self) -> float:
        """The image's native pixel scale (at its WCS reference point), arcsec per pixel."""
        return preprocess_step.pixel_scale_arcsec(fits_io.wcs_from_text(self.wcs_header))


MANIFEST_SUFFIXES = (".txt", ".lst")


def input_paths(inputs: Iterable[str],
                list_inputs: Callable[[Sequence[str], Sequence[str]], list[str]] | None = None) -> list[str]:
    """The FITS files of ``inputs``: directories, globs, files, or manifests.

    A manifest is a text file (``.txt``, ``.lst``) naming one image per line
    (relative paths are read from the manifest's folder; blank lines and
    ``#`` comments are skipped). ``list_inputs(suffixes, inputs)`` lists the
    expanded inputs (a job passes :meth:`~scilens.core.job.JobContext.list_inputs`,
    which rejects and counts directories it cannot list); by default
    :func:`scilens.core.inputs.list_files`.
    """
    from scilens.core.inputs import InputError, list_files

    expanded: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
            lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
            named = [str(path.parent / line) if not Path(line).is_absolute() else line for line in lines if line]
            if not named:
                raise InputError(f"manifest {path} names no image")
            expanded += named
        else:
            expanded.append(item)
    if list_inputs is not None:
        return list_inputs(fits_io.FITS_SUFFIXES, expanded)
    return list_files(expanded, fits_io.FITS_SUFFIXES)


def scan(path: str, layout: fits_io.FitsLayout) -> ImageInfo:
    """Read an image's headers (not its pixels): planes present, WCS, footprint on the sky."""
    head = fits_io.read_header(path, layout)
    if not head["wcs_header"]:
        raise ValueError(f"{path}: no celestial WCS in the image header; cannot place it on the sky")
    ra, dec = footprint(fits_io.wcs_from_text(head["wcs_header"]), head["shape"])
    if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec))):
        raise ValueError(f"{path}: the WCS does not map the image corners to the sky")
    return ImageInfo(head["image_id"], path, tuple(head["shape"]), head["wcs_header"], ra, dec)


def build_skymap(infos: Iterable[ImageInfo], config: SkyMapConfig) -> tuple[SkyMap, list[ImageInfo], list[ImageInfo]]:
    """The sky map for these images, and the images (inside it, outside it).

    Without a pixel scale in ``config``, the co-adds take the inputs' native
    scale (the median over the images), so no input loses resolution.
    """
    infos = sorted(infos, key=lambda i: i.path)  # float sums in a fixed order: every run builds the same tract
    config = config.with_native_scale([i.pixel_scale_arcsec for i in infos])
    skymap = SkyMap.from_config(config, {i.path: (i.footprint_ra, i.footprint_dec) for i in infos})
    inside: list[ImageInfo] = []
    outside: list[ImageInfo] = []
    for info in infos:
        (inside if skymap.overlaps(info.footprint_ra, info.footprint_dec) else outside).append(info)
    return skymap, inside, outside


def outside_message(info: ImageInfo, skymap: SkyMap) -> str:
    ra, dec = float(np.mean(info.footprint_ra)), float(np.mean(info.footprint_dec))
    return (f"{info.path}: image centred at RA {ra:.4f}, Dec {dec:.4f} overlaps no patch of tract "
            f"{skymap.config.tract} (centre RA {skymap.center_ra:.4f}, Dec {skymap.center_dec:.4f}, "
            f"{skymap.patches_x}x{skymap.patches_y} patches)")


def prepare(image: Mapping, config: AstroConfig) -> preprocess_step.CalibratedImage:
    """Step 1 on an image as :func:`scilens.io.fits.read_image` returns it."""
    wcs = fits_io.wcs_from_text(image["wcs_header"])
    return preprocess_step.run(image["image_id"], image["path"], np.asarray(image["flux"]),
                               np.asarray(image["variance"]), image["mask"], wcs, config.preprocess, config.psf)


def warp_image(image: preprocess_step.CalibratedImage, skymap: SkyMap, config: AstroConfig) -> Iterator[
        warp_step.Warp]:
    """Step 2: the image warped onto every patch it overlaps (1 to 6 of them)."""
    ra, dec = footprint(image.wcs, image.flux.shape)
    for patch, box in skymap.overlaps(ra, dec).items():
        yield warp_step.run(image, patch, skymap.patch_wcs(patch), box, config.warp)


def coadd_patch(warps: Iterable[warp_step.Warp], skymap: SkyMap, config: AstroConfig) -> coadd_step.Coadd:
    """Step 3: the co-add of one patch's warps."""
    return coadd_step.run(list(warps), skymap.patch_shape, config.coadd)


def detect_patch(coadd: coadd_step.Coadd, patch: str, skymap: SkyMap, config: AstroConfig) -> pd.DataFrame:
    """Step 4: the sources of one co-add whose centroid lies in the patch's inner region."""
    found = detect_step.run(coadd, skymap.patch_wcs(patch), skymap.pixel_scale_arcsec, config.detect)
    found = found[skymap.in_inner(patch, found["x"].to_numpy(), found["y"].to_numpy())]
    out = found.drop(columns="label").assign(
        id=(skymap.patch_number(patch) + 1) * LABELS_PER_PATCH + found["label"].to_numpy(),
        tract=skymap.config.tract, patch=patch)
    return out[CATALOG_COLUMNS].reset_index(drop=True)


VISIT_SOURCE_COLUMNS = ["visit", "image_id", "id", "flux", "flux_err", "snr", "dx_arcsec", "dy_arcsec"]
"""One row per (input image, co-add source it covers): the image's ``visit``, the co-add source's ``id``, and
the nearest single-visit detection within the match radius (``flux``, ``flux_err``, ``snr`` as in the
catalog; ``dx_arcsec``, ``dy_arcsec`` its offset east and north of the co-add position), all null when the
image saw nothing there."""


def match_visit(image: preprocess_step.CalibratedImage, visit: str, sources: pd.DataFrame, config: AstroConfig
                ) -> pd.DataFrame:
    """Step 4 on one calibrated input image alone, matched to the co-add sources it covers.

    The image's own sources are found with the co-add's detection (threshold, deblending; the kernel of the
    image's own PSF). An image covers a co-add source (``sources``: ``id``, ``ra``, ``dec``) when every pixel
    within two PSF FWHM of it is usable: chip edges, gaps, masked columns and saturated cores do not cover,
    so a source that falls there is not counted as missed by this visit. A co-add source no single visit
    supports is a cosmic ray or an artefact that survived the clipping; a co-add flux or position far from
    the visits' is a blend or a bad warp.
    """
    from scipy.ndimage import maximum_filter
    from scipy.spatial import cKDTree

    scale = preprocess_step.pixel_scale_arcsec(image.wcs)
    fwhm = image.psf.fwhm_arcsec if image.psf is not None else float("nan")
    single = coadd_step.Coadd(flux=image.flux, variance=image.variance, mask=np.zeros(image.flux.shape, np.int32),
                              count=np.ones(image.flux.shape, np.int32), psf_fwhm_arcsec=fwhm)
    found = detect_step.run(single, image.wcs, scale, config.detect)
    ny, nx = image.flux.shape
    margin = int(np.ceil(2 * (fwhm if np.isfinite(fwhm) else 1.0) / scale))
    x, y = image.wcs.all_world2pix(sources["ra"].to_numpy(), sources["dec"].to_numpy(), 0)
    inside = (x >= margin) & (x < nx - margin) & (y >= margin) & (y < ny - margin)
    unusable = maximum_filter((~np.isfinite(image.flux)).astype(np.uint8), size=2 * margin + 1) > 0
    covered = np.flatnonzero(inside)
    covered = covered[~unusable[np.round(y[covered]).astype(int), np.round(x[covered]).astype(int)]]
    out = pd.DataFrame({"visit": visit, "image_id": image.image_id, "id": sources["id"].to_numpy()[covered]})
    for column in ("flux", "flux_err", "snr", "dx_arcsec", "dy_arcsec"):
        out[column] = np.nan
    if len(found) and len(covered):
        radius = config.detect.visit_match_arcsec / scale
        dist, nearest = cKDTree(np.column_stack([found["x"], found["y"]])).query(
            np.column_stack([x[covered], y[covered]]), distance_upper_bound=radius)
        hit = np.isfinite(dist)
        match = found.iloc[nearest[hit]]
        out.loc[hit, ["flux", "flux_err", "snr"]] = match[["flux", "flux_err", "snr"]].to_numpy()
        dec0 = sources["dec"].to_numpy()[covered][hit]
        out.loc[hit, "dx_arcsec"] = 3600 * (match["ra"].to_numpy() - sources["ra"].to_numpy()[covered][hit]) * np.cos(
            np.radians(dec0))
        out.loc[hit, "dy_arcsec"] = 3600 * (match["dec"].to_numpy() - dec0)
    return out[VISIT_SOURCE_COLUMNS]


def visit_of(path: str, key: str) -> str:
    """An image's visit: its primary header's ``key`` card, else its image id."""
    from astropy.io import fits

    value = fits.getheader(path, 0).get(key)
    return str(value) if value is not None else fits_io.image_id(path)


def coadd_path(root: str | Path, skymap: SkyMap, patch: str) -> Path:
    """Path of patch ``patch``'s co-add FITS file under the run's output ``root``."""
    return Path(root) / "coadds" / f"{skymap.config.tract}_{patch}.fits"


def write_coadd(root: str | Path, coadd: coadd_step.Coadd, patch: str, skymap: SkyMap) -> Path:
    """Write a co-add as ``coadds/<tract>_<patch>.fits`` under ``root``."""
    from astropy.io import fits
    from astropy.table import Table

    scale = skymap.pixel_scale_arcsec
    psf = coadd.psf_fwhm_arcsec
    header = {"TRACT": skymap.config.tract, "PATCH": patch, "NINPUTS": int(coadd.count.max(initial=0)),
              "BUNIT": "ADU", "PIXSCALE": (scale, "co-add pixel scale, arcsec/pixel"),
              "PSFFWHM": (psf if np.isfinite(psf) else "unknown", "effective PSF FWHM of the inputs, arcsec"),
              "PSFPIX": (psf / scale if np.isfinite(psf) else "unknown", "effective PSF FWHM, co-add pixels")}
    path = fits_io.write_image(coadd_path(root, skymap, patch), coadd.flux, coadd.variance, coadd.mask,
                               skymap.patch_wcs(patch).to_header(), primary_header=fits.Header(
                                   [(k, *v) if isinstance(v, tuple) else (k, v) for k, v in header.items()]),
                               extra_planes={"COUNT": coadd.count})
    inputs = pd.DataFrame(coadd.inputs, columns=[*IMAGE_COLUMNS, "pixels"])
    table = fits.table_to_hdu(Table.from_pandas(inputs.astype({"image_id": str, "psf_stars": "int64",
                                                                "psf_measured": bool, "pixels": "int64"})))
    table.name = "INPUTS"
    with fits.open(path, mode="append") as hdul:
        hdul.append(table)
    return path


def read_psf(root: str | Path, skymap: SkyMap, patch: str) -> tuple[float, pd.DataFrame]:
    """A written co-add's effective PSF FWHM (arcsec; NaN if unknown) and its INPUTS table."""
    from astropy.io import fits
    from astropy.table import Table

    with fits.open(coadd_path(root, skymap, patch)) as hdul:
        value = hdul[0].header.get("PSFFWHM")
        inputs = Table(hdul["INPUTS"].data).to_pandas()
    fwhm = float(value) if isinstance(value, (int, float)) else float("nan")
    inputs["image_id"] = inputs["image_id"].astype(str).str.strip()
    return fwhm, inputs


def median_psf_fwhm(root: str | Path, skymap: SkyMap, patches: Iterable[str], config: AstroConfig) -> float:
    """The PSF FWHM (arcsec) to score a run against truth with.

    The median effective PSF of its written co-adds, else the detection
    kernel's override (NaN when neither is known).
    """
    values = [read_psf(root, skymap, p)[0] for p in patches if coadd_path(root, skymap, p).exists()]
    values = [v for v in values if np.isfinite(v)]
    if values:
        return float(np.median(values))
    kernel = config.detect.kernel_fwhm_arcsec
    return float(kernel) if kernel is not None else float("nan")


def write_image_records(root: str | Path, skymap: SkyMap, patches: Iterable[str]) -> pd.DataFrame:
    """Write ``images.parquet`` from the INPUTS tables of the co-adds of ``patches``; returns it.

    One row per co-added image (:data:`IMAGE_COLUMNS`), sorted by ``image_id``.
    """
    tables = [read_psf(root, skymap, p)[1] for p in patches]
    images = (pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=IMAGE_COLUMNS))
    # An image in several patches has one weight per patch pixel whatever the patch; keep its first row.
    images = images.drop_duplicates("image_id").sort_values("image_id")[IMAGE_COLUMNS].reset_index(drop=True)
    images.to_parquet(Path(root) / "images.parquet", index=False)
    return images


def write_catalog(catalog: pd.DataFrame, root: str | Path, skymap: SkyMap | None = None,
                  psf: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Sort by id and write ``catalog.parquet`` and its FITS table copy ``catalog.fits``.

    ``psf`` (patch name to effective PSF FWHM, arcsec) goes into the FITS
    header as ``PSF<patch number>`` cards (with ``skymap``), with the pixel scale.
    """
    from astropy.table import Table

    catalog = catalog[CATALOG_COLUMNS].sort_values("id").reset_index(drop=True)
    catalog = catalog.astype({"id": "int64", "tract": "int64", "npix": "int64", "flags": "int64"})
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    catalog.to_parquet(root / "catalog.parquet", index=False)
    table = Table.from_pandas(catalog)
    if skymap is not None:
        table.meta["PIXSCALE"] = (skymap.pixel_scale_arcsec, "co-add pixel scale, arcsec/pixel")
        for patch, fwhm in sorted((psf or {}).items(), key=lambda kv: skymap.patch_number(kv[0])):
            if np.isfinite(fwhm):
                table.meta[f"PSF{skymap.patch_number(patch)}"] = (round(float(fwhm), 6),
                                                                  f"PSF FWHM arcsec, patch {patch}")
    table.write(root / "catalog.fits", overwrite=True)
    return catalog


def write_run_outputs(catalog: pd.DataFrame, root: str | Path, skymap: SkyMap,
                      patches: Iterable[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The run-level outputs once the co-adds of ``patches`` are written.

    Writes ``images.parquet`` (each image's PSF) and the catalog
    (:func:`write_catalog`, with each patch's effective PSF).

    Returns
    -------
    tuple of DataFrame
        (catalog, images).
    """
    patches = sorted(patches)
    images = write_image_records(root, skymap, patches)
    psf = {p: read_psf(root, skymap, p)[0] for p in patches}
    return write_catalog(catalog, root, skymap, psf), images
