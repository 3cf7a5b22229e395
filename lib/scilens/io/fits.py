r"""FITS images with flux, variance and mask planes -> one row per image, and back.

Which HDU holds which plane is a :class:`FitsLayout`. The default is the
DECam-instcal / LSST-calexp layout (HDU 1 image, HDU 2 mask, HDU 3 variance);
:meth:`FitsLayout.hst` is the HST layout (``SCI``, ``ERR``, ``DQ``, where the
variance is ``ERR**2``). The WCS of the flux HDU travels as header text
(``wcs_header``; empty when the image has no celestial WCS) so executors can
rebuild it with ``astropy.wcs.WCS(fits.Header.fromstring(text, sep="\n"))``.

Headers are not trusted. Before any pixel is read, every plane must be a
non-empty 2-D image whose claimed data fit in the file (uncompressed files)
and in the memory budget (:attr:`FitsLayout.max_image_mb`), and the flux
HDU's WCS must pass :func:`check_wcs`: astropy reads ``CRPIX1 = 'abc'`` as 0
with a warning, and an image co-added with such a WCS lands in the wrong
place without any error.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import proj_plane_pixel_scales
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from scilens.core import tensor
from scilens.core.config import Config, field
from scilens.core.inputs import paths_frame
from scilens.core.quarantine import guard_rows, split_rejected, with_rejected_field

__all__ = [
    "FITS_SUFFIXES",
    "IMAGE_SCHEMA",
    "PIXEL_SCALE_RANGE_ARCSEC",
    "FitsLayout",
    "check_wcs",
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
    max_image_mb: float | None = field(None, "Refuse, before reading, a file whose headers claim more than this "
                                       "many MB for its planes; null: a quarter of the machine's memory.", min=1.0)

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


PIXEL_SCALE_RANGE_ARCSEC = (1e-3, 3600.0)
"""Plausible pixel scales, arcsec per pixel: from VLBI-like 1 mas to 1 degree (all-sky maps)."""

# The numeric keywords of the primary WCS (axes 1-9); alternate WCSs (a letter suffix) are not used here.
_WCS_NUMBERS = re.compile(r"^(CRPIX|CRVAL|CDELT|CROTA)[1-9]$|^(CD|PC)[1-9]_[1-9]$")
_CD = re.compile(r"^CD[1-9]_[1-9]$")
_LATITUDES = ("DEC-", "GLAT", "ELAT", "SLAT", "HGLT", "HPLT", "CRLT")


def _claimed_bytes(header: fits.Header) -> int:
    """Bytes of data an HDU's header promises (image or compressed image: the decompressed size)."""
    prefix = "Z" if "ZNAXIS" in header else ""
    naxis = int(header.get(f"{prefix}NAXIS", 0) or 0)
    if naxis == 0:
        return 0
    count = math.prod(int(header.get(f"{prefix}NAXIS{i}", 0) or 0) for i in range(1, naxis + 1))
    return abs(int(header.get(f"{prefix}BITPIX", 8))) // 8 * count


def _memory_budget(layout: FitsLayout) -> int:
    if layout.max_image_mb is not None:
        return int(layout.max_image_mb * 2**20)
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (ValueError, OSError, AttributeError):  # no sysconf: a conservative 2 GiB
        return 2 * 2**30


def _compressed(path: str) -> bool:
    """Whether the file is gzip/bzip2/zip compressed as a whole (its size says nothing of the data's)."""
    with open(path, "rb") as f:
        magic = f.read(3)
    return magic[:2] in (b"\x1f\x8b", b"PK") or magic == b"BZh"


def _check_planes(hdul: fits.HDUList, planes: Mapping[str, str | None], path: str, layout: FitsLayout) -> dict:
    """Check, from the headers alone, that each plane is a non-empty 2-D image the file and the memory hold.

    Returns {plane: (ny, nx)}. Reading the data of an HDU whose header lies
    (a truncated file, NAXIS in the billions) makes astropy allocate what the
    header claims; this refuses such files first.
    """
    shapes, total = {}, 0
    whole_file_compressed = _compressed(path)
    size = os.path.getsize(path)
    for plane, key in planes.items():
        if key is None:
            continue
        hdu = _hdu(hdul, key, plane, path)
        header = hdu.header
        naxis = header.get("NAXIS", 0)
        if naxis == 0:
            raise ValueError(f"{path}: HDU {key!r} ({plane}) holds no data (NAXIS = 0) where an image is expected")
        if naxis != 2:
            raise ValueError(f"{path}: HDU {key!r} ({plane}) holds no 2-D image (NAXIS = {naxis})")
        try:
            shape = (int(header["NAXIS2"]), int(header["NAXIS1"]))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: HDU {key!r} ({plane}): NAXIS1/NAXIS2 missing or not integers") from None
        if min(shape) <= 0:
            raise ValueError(f"{path}: HDU {key!r} ({plane}) is an empty image: NAXIS1 = {shape[1]}, "
                             f"NAXIS2 = {shape[0]}")
        claimed = _claimed_bytes(header)
        if not whole_file_compressed:
            info = hdul.fileinfo(hdul.index_of(hdu))
            end = info["datLoc"] + (info["datSpan"] if isinstance(hdu, fits.CompImageHDU) else claimed)
            if end > size:
                raise ValueError(f"{path}: HDU {key!r} ({plane}) claims {claimed:,} bytes of data from byte "
                                 f"{info['datLoc']:,}, but the file has {size:,} bytes (truncated?)")
        shapes[plane] = shape
        total += claimed
    budget = _memory_budget(layout)
    if total > budget:
        raise ValueError(f"{path}: the headers claim {total / 2**20:,.0f} MB of image data, more than the memory "
                         f"budget of {budget / 2**20:,.0f} MB (fits.max_image_mb); refused before reading")
    for plane, shape in shapes.items():
        if shape != shapes["flux"]:
            raise ValueError(f"{path}: {plane} plane has shape {shape}, flux has {shapes['flux']}")
    return shapes


def _plane(hdul: fits.HDUList, key: str, plane: str, path: str) -> np.ndarray:
    data = _hdu(hdul, key, plane, path).data
    if data is None or np.ndim(data) != 2 or np.size(data) == 0:
        raise ValueError(f"{path}: HDU {key!r} ({plane}) holds no 2-D image")
    return np.asarray(data)


def _open(path: str) -> fits.HDUList:
    try:
        return fits.open(path, memmap=False)
    except Exception as exc:  # astropy raises OSError, TypeError, ... on garbage
        raise ValueError(f"{path}: not a readable FITS file ({type(exc).__name__}: {exc})") from None


def _number(value: Any) -> float | None:
    """A FITS header value as a finite float, or None (strings, booleans, NaN, Inf, unparsable cards)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    return float(value) if math.isfinite(value) else None


def check_wcs(header: fits.Header, path: str = "") -> None:
    """Raise ValueError, naming the file and the keyword, unless the header's WCS is usable.

    Usable means: every numeric WCS keyword present (``CRPIXi``, ``CRVALi``,
    ``CDELTi``, ``CROTAi``, ``CDi_j``, ``PCi_j``) is a finite number; and,
    for a celestial WCS, the pixel-to-sky matrix is finite and non-singular,
    the pixel scale along each axis lies in :data:`PIXEL_SCALE_RANGE_ARCSEC`
    and the reference latitude in [-90, 90] degrees. A header without any
    WCS passes (the image simply has no position on the sky).
    """
    where = f"{path}: " if path else ""
    for card in header.cards:
        if not _WCS_NUMBERS.match(card.keyword):
            continue
        try:
            value = card.value
        except Exception:  # astropy raises VerifyError/ValueError on an unparsable card
            value = card.image.split("=", 1)[-1].strip()
        if _number(value) is None:
            raise ValueError(f"{where}WCS keyword {card.keyword} = {value!r} is not a finite number")
    for i in range(1, 10):
        ctype = str(header.get(f"CTYPE{i}", ""))
        # wcslib's own complaint ("ill-conditioned ... latp") does not say which keyword is wrong.
        if ctype[:4] in _LATITUDES and not -90.0 <= float(header.get(f"CRVAL{i}", 0.0)) <= 90.0:
            raise ValueError(f"{where}WCS keyword CRVAL{i} = {header[f'CRVAL{i}']} is not a latitude in "
                             f"[-90, 90] degrees ({ctype})")
    keys = "CD matrix (CDi_j)" if any(_CD.match(k) for k in header) else \
        "CDELTi/PCi_j matrix"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)  # date and unit fixes; the numbers are checked above
        try:
            wcs = WCS(header)
        except Exception as exc:  # wcslib's errors are several lines naming no keyword
            reason = " ".join(str(exc).split())
            if "singular" in reason.lower():
                raise ValueError(f"{where}WCS {keys} is singular: the pixels map to no area of sky") from None
            raise ValueError(f"{where}invalid WCS ({type(exc).__name__}: {reason})") from None
    if not wcs.has_celestial:
        return
    cel = wcs.celestial
    matrix = cel.pixel_scale_matrix
    det = float(np.linalg.det(matrix)) if np.all(np.isfinite(matrix)) else float("nan")
    if not math.isfinite(det) or abs(det) <= 1e-12 * float(np.max(np.abs(matrix))) ** 2:
        raise ValueError(f"{where}WCS {keys} is singular: the pixels map to no area of sky")
    scales = proj_plane_pixel_scales(cel) * 3600.0
    lo, hi = PIXEL_SCALE_RANGE_ARCSEC
    for axis, scale in enumerate(scales, start=1):
        if not lo <= scale <= hi:
            raise ValueError(f"{where}WCS pixel scale {scale:.4g} arcsec/px along axis {axis} (from the {keys}) is "
                             f"outside the plausible range {lo:g}-{hi:g} arcsec/px")


def _wcs_text(header: fits.Header, path: str = "") -> str:
    check_wcs(header, path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header)
    return wcs.to_header(relax=True).tostring(sep="\n") if wcs.has_celestial else ""


def _layout_planes(layout: FitsLayout) -> dict[str, str | None]:
    return {"flux": layout.flux, "variance": layout.variance, "mask": layout.mask}


def read_header(path: str | Path, layout: FitsLayout | None = None) -> dict[str, Any]:
    """What :func:`read_image` would return about an image, without reading its pixels.

    Checks that every plane of ``layout`` is a non-empty 2-D image of one
    shape that the file and the memory budget hold, and that the WCS is
    valid (:func:`check_wcs`), from the headers; returns ``image_id``,
    ``path``, ``shape`` (ny, nx), ``wcs_header`` and ``header``: a cheap
    first pass over many files.
    """
    layout = layout or FitsLayout()
    path = str(path)
    with _open(path) as hdul:
        shapes = _check_planes(hdul, _layout_planes(layout), path, layout)
        header = _hdu(hdul, layout.flux, "flux", path).header
        return {"image_id": image_id(path), "path": path, "shape": shapes["flux"],
                "wcs_header": _wcs_text(header, path), "header": header.tostring(sep="\n")}


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
        _check_planes(hdul, _layout_planes(layout), path, layout)  # before astropy allocates what they claim
        header = _hdu(hdul, layout.flux, "flux", path).header
        wcs_header = _wcs_text(header, path)
        flux = _plane(hdul, layout.flux, "flux", path)
        variance = _plane(hdul, layout.variance, "variance", path)
        if layout.variance_is_sigma:
            variance = np.asarray(variance, dtype=np.float64) ** 2
        mask = _plane(hdul, layout.mask, "mask", path) if layout.mask is not None else None
        for name, plane in (("variance", variance), ("mask", mask)):
            if plane is not None and plane.shape != flux.shape:
                raise ValueError(f"{path}: {name} plane has shape {plane.shape}, flux has {flux.shape}")
        return {
            "image_id": image_id(path), "path": path, "flux": flux, "variance": variance, "mask": mask,
            "wcs_header": wcs_header, "header": header.tostring(sep="\n"),
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

    def read(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
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
