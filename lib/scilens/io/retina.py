"""Retinal image files: macular OCT volumes (multi-page TIFF) and colour fundus photos (PNG).

Files are named like UK Biobank bulk files, ``<eid>_<field>_<instance>_<array>.<ext>``,
so the eye, the visit and the modality come from the name:

=========  ======  =====  ============================
field      eye     ext    what
=========  ======  =====  ============================
21015      left    png    colour fundus photo (CFP)
21016      right   png    colour fundus photo (CFP)
21017      left    tif    macular OCT volume
21018      right   tif    macular OCT volume
=========  ======  =====  ============================

(UK Biobank ships OCT as Topcon ``.fda`` files; a TIFF stack of the B-scans,
scan 0 first, is what exporters such as OCT-Converter write, and what these
readers take.) The functions here read and write one file; they run on the
executors inside the jobs' ``mapInPandas`` steps.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = [
    "CFP_FIELD",
    "IMAGE_SUFFIXES",
    "OCT_FIELD",
    "ImageKey",
    "image_name",
    "parse_image_name",
    "read_fundus",
    "read_oct",
    "write_fundus",
    "write_oct",
]

OCT_FIELD = {"left": 21017, "right": 21018}
CFP_FIELD = {"left": 21015, "right": 21016}
_BY_FIELD = {**{f: ("oct", eye) for eye, f in OCT_FIELD.items()}, **{f: ("cfp", eye) for eye, f in CFP_FIELD.items()}}
_SUFFIX = {"oct": ".tif", "cfp": ".png"}
IMAGE_SUFFIXES = (".tif", ".tiff", ".png")
_NAME = re.compile(r"^(\d+)_(\d+)_(\d+)_(\d+)\.(tif|tiff|png)$", re.IGNORECASE)


class ImageKey(NamedTuple):
    """Which eye, visit and modality a file holds."""

    eid: int
    eye: str
    visit: int
    modality: str  # "oct" or "cfp"


def image_name(eid: int, eye: str, visit: int, modality: str) -> str:
    """File name of an eye's image, e.g. ``1000123_21018_0_0.tif`` for the right OCT of visit 0."""
    fields = {"oct": OCT_FIELD, "cfp": CFP_FIELD}[modality]
    return f"{int(eid)}_{fields[eye]}_{int(visit)}_0{_SUFFIX[modality]}"


def parse_image_name(path: str | Path) -> ImageKey:
    """The :class:`ImageKey` of a file; ValueError naming the file if the name is not of this scheme."""
    name = Path(path).name
    match = _NAME.match(name)
    if not match:
        raise ValueError(f"{path}: file name is not <eid>_<field>_<instance>_<array>.(tif|png)")
    eid, field_id, visit = int(match[1]), int(match[2]), int(match[3])
    if field_id not in _BY_FIELD:
        raise ValueError(f"{path}: field {field_id} is not a retinal image field "
                         f"(OCT {sorted(OCT_FIELD.values())}, CFP {sorted(CFP_FIELD.values())})")
    modality, eye = _BY_FIELD[field_id]
    if not name.lower().endswith(_SUFFIX[modality]) and not (modality == "oct" and name.lower().endswith(".tiff")):
        raise ValueError(f"{path}: field {field_id} ({modality.upper()}) needs a {_SUFFIX[modality]} file")
    return ImageKey(eid, eye, visit, modality)


def write_oct(path: str | Path, volume: np.ndarray) -> Path:
    """Write a ``(n_scans, height, width)`` uint8 volume as a multi-page TIFF, one page per B-scan."""
    import tifffile

    volume = np.asarray(volume)
    if volume.ndim != 3 or volume.dtype != np.uint8:
        raise ValueError(f"{path}: an OCT volume is (scans, height, width) uint8, got {volume.shape} {volume.dtype}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tifffile.TiffWriter(path) as tif:
        for scan in volume:
            tif.write(scan, contiguous=False, compression="zlib")
    return path


def read_oct(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read an OCT TIFF stack as ``(n_scans, height, width)`` uint8.

    Every page must be a 2-D 8-bit B-scan of one size (``shape`` if given);
    otherwise ValueError says which scan is wrong and how.
    """
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            pages = [page.asarray() for page in tif.pages]
    except Exception as exc:  # tifffile raises several types for a damaged file
        raise ValueError(f"{path}: not a readable TIFF ({type(exc).__name__}: {exc})") from None
    if not pages:
        raise ValueError(f"{path}: not a readable TIFF: it holds no B-scans")
    want = tuple(shape) if shape is not None else pages[0].shape
    for i, page in enumerate(pages):
        if page.ndim != 2 or page.dtype != np.uint8:
            raise ValueError(f"{path}: B-scan {i} is {page.shape} {page.dtype}, expected 2-D uint8")
        if page.shape != want:
            raise ValueError(f"{path}: B-scan {i} is {page.shape[0]}x{page.shape[1]}, expected {want[0]}x{want[1]}")
    return np.stack(pages)


def write_fundus(path: str | Path, photo: np.ndarray) -> Path:
    """Write an RGB uint8 photo as PNG."""
    from PIL import Image

    photo = np.asarray(photo)
    if photo.ndim != 3 or photo.shape[2] != 3 or photo.dtype != np.uint8:
        raise ValueError(f"{path}: a fundus photo is (height, width, 3) uint8, got {photo.shape} {photo.dtype}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(photo, "RGB").save(path)
    return path


def read_fundus(path: str | Path) -> np.ndarray:
    """Read a fundus photo as ``(height, width, 3)`` uint8 RGB; ValueError naming the file if unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("RGB", "RGBA", "L"):
                raise ValueError(f"mode {img.mode} is not an 8-bit colour image")
            photo = np.asarray(img.convert("RGB"))
    except Exception as exc:
        raise ValueError(f"{path}: not a readable fundus photo ({type(exc).__name__}: {exc})") from None
    return photo
