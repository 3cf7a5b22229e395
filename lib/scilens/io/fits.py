"""FITS images with flux, variance and mask planes -> one row per image, and back.

Which HDU holds which plane is a :class:`FitsLayout`. The default is the
DECam-instcal / LSST-calexp layout (HDU 1 image, HDU 2 mask, HDU 3 variance);
:meth:`FitsLayout.hst` is the HST layout (``SCI``, ``ERR``, ``DQ``, where the
variance is ``ERR**2``). The WCS of the flux HDU travels as header text
(``wcs_header``; empty when the image has no celestial WCS) so executors can
rebuild it with ``astropy.wcs.WCS(fits.Header.fromstring(text, sep="\\n"))``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from scilens.core import tensor
from scilens.core.config import Config, field
from scilens.core.inputs import paths_frame
from scilens.core.quarantine import guard_rows, split_rejected, with_rejected_field

__all__ = [
    "FITS_SUFFIXES",
    "IMAGE_SCHEMA",
    "FitsLayout",
    "header_from_text",
    "image_id",
    "read_header",
    "read_image",
    "read_images",
    "wcs_from_text",
    "write_image",
]

FITS_SUFFIXES = (".fits", ".fits.gz", ".fit", ".fts", ".fits.fz")


@dataclass
class FitsLayout(Config):
    """Where the planes of an image live in a FITS file."""

    flux: str = field("1", "HDU of the flux image: an index (0 = primary) or an EXTNAME.")
    variance: str = field("3", "HDU of the variance (or, with variance_is_sigma, the standard deviation).")
    mask: str | None = field("2", "HDU of the integer mask plane; null if the files have none.")
    variance_is_sigma: bool = field(False, "The variance HDU holds a standard deviation (HST ERR): square it.")

    @classmethod
    def hst(cls) -> FitsLayout:
        """HST layout: SCI, ERR (sigma), DQ."""
        return cls(flux="SCI", variance="ERR", mask="DQ", variance_is_sigma=True)


IMAGE_SCHEMA = T.StructType(
    [
        T.StructField("image_id", T.StringType(), False),
        T.StructField("path", T.StringType(), False),
        tensor.tensor_field("flux", nullable=False),
        tensor.tensor_field("variance", nullable=False),
        tensor.tensor_field("mask", nullable=True),
        T.StructField("wcs_header", T.StringType(), False),
        T.StructField("header", T.StringType(), False),
    ]
)
"""One row per image: flux, variance and mask planes as tensors, the WCS and
the flux HDU's full header as text."""


def image_id(path: str | Path) -> str:
    """An image's id: its file name without the FITS suffix."""
    name = Path(path).name
    for suffix in sorted(FITS_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _hdu_key(key: str) -> int | str:
    return int(key) if str(key).lstrip("-").isdigit() else str(key)


def _hdu(hdul: fits.HDUList, key: str, plane: str, path: str) -> fits.ImageHDU:
    try:
        return hdul[_hdu_key(key)]
    except (KeyError, IndexError):
        names = [h.name or str(i) for i, h in enumerate(hdul)]
        raise ValueError(f"{path}: no HDU {key!r} for the {plane} plane (HDUs: {', '.join(names)})") from None


def _plane(hdul: fits.HDUList, key: str, plane: str, path: str) -> fits.ImageHDU:
    hdu = _hdu(hdul, key, plane, path)
    if hdu.data is None or np.ndim(hdu.data) != 2:
        raise ValueError(f"{path}: HDU {key!r} ({plane}) holds no 2-D image")
    return hdu


def _open(path: str) -> fits.HDUList:
    try:
        return fits.open(path, memmap=False)
    except Exception as exc:  # astropy raises OSError, TypeError, ... on garbage
        raise ValueError(f"{path}: not a readable FITS file ({type(exc).__name__}: {exc})") from None


def _wcs_text(header: fits.Header) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header)
    return wcs.to_header(relax=True).tostring(sep="\n") if wcs.has_celestial else ""


def read_header(path: str | Path, layout: FitsLayout | None = None) -> dict[str, Any]:
    """What :func:`read_image` would return about an image, without reading its pixels.

    Checks that every plane of ``layout`` is a 2-D image of one shape (from
    the headers) and returns ``image_id``, ``path``, ``shape`` (ny, nx),
    ``wcs_header`` and ``header``: a cheap first pass over many files.
    """
    layout = layout or FitsLayout()
    path = str(path)
    with _open(path) as hdul:
        shapes = {}
        for plane, key in (("flux", layout.flux), ("variance", layout.variance), ("mask", layout.mask)):
            if key is None:
                continue
            header = _hdu(hdul, key, plane, path).header
            if header.get("NAXIS") != 2:
                raise ValueError(f"{path}: HDU {key!r} ({plane}) holds no 2-D image")
            shapes[plane] = (int(header["NAXIS2"]), int(header["NAXIS1"]))
        for plane, shape in shapes.items():
            if shape != shapes["flux"]:
                raise ValueError(f"{path}: {plane} plane has shape {shape}, flux has {shapes['flux']}")
        header = _hdu(hdul, layout.flux, "flux", path).header
        return {"image_id": image_id(path), "path": path, "shape": shapes["flux"],
                "wcs_header": _wcs_text(header), "header": header.tostring(sep="\n")}


def header_from_text(text: str) -> fits.Header:
    """A FITS header from the newline-separated text stored in a row."""
    return fits.Header.fromstring(text, sep="\n")


def wcs_from_text(text: str) -> WCS:
    """The WCS stored in ``wcs_header``; raises ValueError if there is none."""
    if not text:
        raise ValueError("image has no celestial WCS")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header_from_text(text))


def read_image(path: str | Path, layout: FitsLayout | None = None) -> dict[str, Any]:
    """Read one FITS image as numpy planes plus header texts.

    Returns a dict with ``image_id``, ``path``, ``flux``, ``variance``, ``mask``
    (or None), ``wcs_header`` (empty without a celestial WCS) and ``header``.
    """
    layout = layout or FitsLayout()
    path = str(path)
    with _open(path) as hdul:
        flux_hdu = _plane(hdul, layout.flux, "flux", path)
        flux = np.asarray(flux_hdu.data)
        variance = np.asarray(_plane(hdul, layout.variance, "variance", path).data, dtype=np.float64 if
                              layout.variance_is_sigma else None)
        if layout.variance_is_sigma:
            variance = variance**2
        mask = np.asarray(_plane(hdul, layout.mask, "mask", path).data) if layout.mask is not None else None
        for name, plane in (("variance", variance), ("mask", mask)):
            if plane is not None and plane.shape != flux.shape:
                raise ValueError(f"{path}: {name} plane has shape {plane.shape}, flux has {flux.shape}")
        header = flux_hdu.header
        return {
            "image_id": image_id(path), "path": path, "flux": flux, "variance": variance, "mask": mask,
            "wcs_header": _wcs_text(header), "header": header.tostring(sep="\n"),
        }


def image_row(path: str, layout: FitsLayout | None = None) -> dict[str, Any]:
    """:func:`read_image` encoded as a row of :data:`IMAGE_SCHEMA`."""
    image = read_image(path, layout)
    for plane in ("flux", "variance", "mask"):
        image[plane] = None if image[plane] is None else tensor.encode(image[plane])
    return image


def read_images(spark: SparkSession, paths: Sequence[str] | DataFrame, layout: FitsLayout | None = None,
                step: str = "read_fits") -> tuple[DataFrame, DataFrame]:
    """Read FITS images on the executors.

    Returns
    -------
    images, rejected : DataFrame
        Rows of :data:`IMAGE_SCHEMA`, and one rejected record per unreadable file.
    """
    layout = layout or FitsLayout()
    if not isinstance(paths, DataFrame):
        paths = paths_frame(spark, paths)
    columns = IMAGE_SCHEMA.fieldNames()

    def read(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            yield from guard_rows(batch, lambda row: [image_row(row["path"], layout)], step, columns)

    out = paths.mapInPandas(read, with_rejected_field(IMAGE_SCHEMA))
    return split_rejected(out, on="path")


def write_image(
    path: str | Path,
    flux: np.ndarray,
    variance: np.ndarray,
    mask: np.ndarray | None = None,
    wcs_header: str | fits.Header | None = None,
    layout: FitsLayout | None = None,
    primary_header: Mapping[str, Any] | fits.Header | None = None,
    extra_planes: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Write an image in ``layout`` (``.gz`` paths are compressed).

    Planes go to the HDUs the layout names: numbered HDUs in index order
    (named IMAGE, MASK, VARIANCE), or named HDUs in the order flux, variance,
    mask. ``extra_planes`` (e.g. a co-add's per-pixel input count) follow as
    HDUs named by their keys. The WCS goes into every image HDU's header.
    """
    layout = layout or FitsLayout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wcs = header_from_text(wcs_header) if isinstance(wcs_header, str) and wcs_header else wcs_header
    var_plane = np.sqrt(variance) if layout.variance_is_sigma else variance
    planes = [(layout.flux, "IMAGE", flux), (layout.variance, "VARIANCE", var_plane)]
    if layout.mask is not None:
        if mask is None:
            raise ValueError(f"{path}: layout has a mask HDU but no mask was given")
        planes.append((layout.mask, "MASK", mask))
    if all(str(k).isdigit() for k, _, _ in planes):
        planes.sort(key=lambda p: int(p[0]))
        expected = list(range(1, len(planes) + 1))
        if [int(k) for k, _, _ in planes] != expected:
            raise ValueError(f"numbered layout must use HDUs {expected}, got {[k for k, _, _ in planes]}")
        named = [(default, data) for _, default, data in planes]
    else:
        named = [(str(k), data) for k, _, data in planes]
    named += list((extra_planes or {}).items())
    hdus: list[fits.hdu.base.ExtensionHDU] = [fits.PrimaryHDU(header=fits.Header(primary_header or {}))]
    for name, data in named:
        hdu = fits.ImageHDU(np.asarray(data), name=name)
        if wcs is not None:
            hdu.header.update(wcs)
        hdus.append(hdu)
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path
