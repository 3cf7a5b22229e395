"""NIfTI-1/2 images and FSL gradient files -> one row per 3-D volume, and back.

Reading runs on the executors: :func:`read_volumes` takes a DataFrame of
paths and each task opens its own files. A 4-D file is streamed one volume
at a time (NIfTI stores the last axis slowest, so volume ``v`` is one
contiguous run of bytes, also inside a ``.nii.gz``): memory per task is one
volume, whatever the subject's size.

Values equal ``np.asanyarray(nibabel.load(path).dataobj)[..., v]``: the on-disk
dtype when the header has no scaling, the scaled values when it has.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from nibabel.volumeutils import apply_read_scaling, array_from_file
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from scilens.core import tensor
from scilens.core.inputs import InputError, paths_frame
from scilens.core.quarantine import guard_rows, split_rejected, with_rejected_field

__all__ = [
    "MANIFEST_COLUMNS",
    "NIFTI_SUFFIXES",
    "VOLUME_SCHEMA",
    "find_gradient_files",
    "gradient_arrays",
    "iter_volumes",
    "read_gradients",
    "read_subject_manifest",
    "read_volumes",
    "subject_name",
    "volume_rows",
    "write_nifti",
    "write_nifti_volumes",
]

NIFTI_SUFFIXES = (".nii", ".nii.gz")

MANIFEST_COLUMNS = ("subject", "nifti", "bval", "bvec")
"""Columns of a subject manifest CSV: one subject per line, its 4-D image and FSL gradient files."""

VOLUME_SCHEMA = T.StructType(
    [
        T.StructField("subject", T.StringType(), False),
        T.StructField("path", T.StringType(), False),
        T.StructField("volume", T.IntegerType(), False),
        T.StructField("n_volumes", T.IntegerType(), False),
        tensor.tensor_field("data", nullable=False),
        tensor.tensor_field("affine", nullable=False),
        T.StructField("voxel_size", T.ArrayType(T.DoubleType()), False),
        T.StructField("bval", T.DoubleType(), True),
        T.StructField("bvec", T.ArrayType(T.DoubleType()), True),
    ]
)
"""One row per 3-D volume: ``data`` is the volume, ``affine`` the 4x4 voxel-to-world
matrix, ``bval``/``bvec`` its diffusion weighting (null without side files).
Spark stores a NaN coming from pandas as null, so a ``nan`` in a gradient file
(FSL writes ``nan nan nan`` for some b0 volumes) reads back as null;
:func:`gradient_arrays` turns the column values back into dipy's arrays."""


def subject_name(path: str | Path) -> str:
    """The subject a file belongs to: its name without ``.nii``/``.nii.gz``."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def find_gradient_files(path: str | Path) -> tuple[Path, Path] | None:
    """FSL ``.bval``/``.bvec`` (or ``.bvals``/``.bvecs``) files beside a NIfTI file, if any."""
    path = Path(path)
    stem = path.parent / subject_name(path)
    for bval_ext, bvec_ext in ((".bval", ".bvec"), (".bvals", ".bvecs")):
        bval, bvec = stem.with_name(stem.name + bval_ext), stem.with_name(stem.name + bvec_ext)
        if bval.is_file() and bvec.is_file():
            return bval, bvec
    return None


def read_gradients(bval_path: str | Path, bvec_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read FSL gradient files as dipy does: b-values ``(n,)`` and unit vectors ``(n, 3)``."""
    from dipy.io.gradients import read_bvals_bvecs

    try:
        bvals, bvecs = read_bvals_bvecs(str(bval_path), str(bvec_path))
    except (OSError, ValueError) as exc:
        try:
            n_vals = np.loadtxt(bval_path, ndmin=1).size
            vec_shape = np.loadtxt(bvec_path, ndmin=2).shape
        except ValueError:
            raise ValueError(f"{bval_path} / {bvec_path}: not tables of numbers ({exc})") from None
        n_vecs = vec_shape[0] if vec_shape[1] == 3 else vec_shape[1]
        raise ValueError(f"{bval_path} has {n_vals} b-values but {bvec_path} has {n_vecs} b-vectors") from None
    return np.asarray(bvals, dtype=np.float64), np.asarray(bvecs, dtype=np.float64)


def gradient_arrays(bvals: Sequence[float | None], bvecs: Sequence[Sequence[float | None] | None]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``bval``/``bvec`` column values (in volume order) as float arrays, null -> NaN."""
    vals = np.array([np.nan if b is None else b for b in bvals], dtype=np.float64)
    vecs = np.array([[np.nan] * 3 if v is None else [np.nan if c is None else c for c in v] for v in bvecs],
                    dtype=np.float64).reshape(-1, 3)
    return vals, vecs


def iter_volumes(path: str | Path) -> tuple[nib.Nifti1Image, Iterator[np.ndarray]]:
    """Open a NIfTI file; return its (header-only) image and an iterator of 3-D volumes.

    A 3-D file yields one volume; a 4-D file yields ``shape[3]`` volumes in
    order, reading the file once, front to back.
    """
    path = str(path)
    img = nib.load(path)
    shape = img.shape
    if len(shape) not in (3, 4):
        raise ValueError(f"{path}: expected a 3-D or 4-D image, got shape {shape}")
    proxy = img.dataobj
    vol_shape = shape[:3]
    n_volumes = shape[3] if len(shape) == 4 else 1
    dtype = img.get_data_dtype()
    vol_bytes = int(np.prod(vol_shape)) * dtype.itemsize
    slope, inter = proxy.slope, proxy.inter

    def volumes() -> Iterator[np.ndarray]:
        with nib.openers.ImageOpener(path, "rb") as fileobj:
            for v in range(n_volumes):
                raw = array_from_file(vol_shape, dtype, fileobj, offset=proxy.offset + v * vol_bytes,
                                      order="F", mmap=False)
                yield apply_read_scaling(raw, slope, inter)

    return img, volumes()


def volume_rows(path: str, subject: str | None = None,
                gradients: tuple[np.ndarray, np.ndarray] | None = None) -> Iterator[dict[str, Any]]:
    """Rows of :data:`VOLUME_SCHEMA` for one NIfTI file (gradients read from side files if not given)."""
    subject = subject or subject_name(path)
    img, volumes = iter_volumes(path)
    n_volumes = img.shape[3] if len(img.shape) == 4 else 1
    if gradients is None:
        side = find_gradient_files(path)
        gradients = read_gradients(*side) if side else None
    if gradients is not None:
        bvals, bvecs = gradients
        if len(bvals) != n_volumes or len(bvecs) != n_volumes:
            raise ValueError(f"{path}: image has {n_volumes} volumes but the gradient table has "
                             f"{len(bvals)} b-values and {len(bvecs)} b-vectors")
    affine = tensor.encode(img.affine)
    voxel_size = [float(z) for z in img.header.get_zooms()[:3]]
    for v, volume in enumerate(volumes):
        yield {
            "subject": subject, "path": path, "volume": v, "n_volumes": n_volumes,
            "data": tensor.encode(volume), "affine": affine, "voxel_size": voxel_size,
            "bval": float(gradients[0][v]) if gradients is not None else None,
            "bvec": [float(x) for x in gradients[1][v]] if gradients is not None else None,
        }


def read_volumes(spark: SparkSession, paths: Sequence[str] | DataFrame,
                 step: str = "read_nifti") -> tuple[DataFrame, DataFrame]:
    """Read NIfTI files on the executors into volume rows.

    Parameters
    ----------
    spark : SparkSession
    paths : sequence of str or DataFrame
        File paths, or a DataFrame with a ``path`` column and optionally
        ``subject``, ``bval_path`` and ``bvec_path`` (a subject manifest).
        Gradient files default to the FSL side files next to each image.
        A rejection names the subject as its ``record`` when there is a
        ``subject`` column.
    step : str
        Step name recorded for rejected files.

    Returns
    -------
    volumes, rejected : DataFrame
        Rows of :data:`VOLUME_SCHEMA`, and one rejected record per file that
        could not be read whole (none of its volumes are kept).
    """
    if not isinstance(paths, DataFrame):
        paths = paths_frame(spark, paths)
    columns = VOLUME_SCHEMA.fieldNames()

    def produce(row: pd.Series) -> Iterator[dict[str, Any]]:
        grads = None
        if isinstance(row.get("bval_path"), str) and isinstance(row.get("bvec_path"), str):
            grads = read_gradients(row["bval_path"], row["bvec_path"])
        subject = row.get("subject") if isinstance(row.get("subject"), str) else None
        return volume_rows(row["path"], subject, grads)

    def read(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            yield from guard_rows(batch, produce, step, columns, record_column="subject")

    out = paths.mapInPandas(read, with_rejected_field(VOLUME_SCHEMA))
    # Straight to local disk: a subject's volumes kept in the JVM heap would need a heap the size of the subject.
    return split_rejected(out, on="path", storage=StorageLevel.DISK_ONLY)


def read_subject_manifest(path: str | Path) -> list[dict[str, str]]:
    """Read a subject manifest CSV (:data:`MANIFEST_COLUMNS`, header line first).

    Relative file paths are taken relative to the manifest's directory. Returns
    one dict per subject with ``subject``, ``path``, ``bval_path`` and
    ``bvec_path`` (absolute), in file order; whether the files exist and are
    readable is left to the reader, which rejects the subject if not.

    Raises
    ------
    InputError
        The file is not such a CSV: a column is missing, a line is incomplete,
        or a subject appears twice.
    """
    path = Path(path)
    base = path.parent.absolute()
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            header = [c.strip() for c in reader.fieldnames or []]
            missing = [c for c in MANIFEST_COLUMNS if c not in header]
            if missing:
                raise InputError(f"{path}: subject manifest lacks column(s) {', '.join(missing)}; "
                                 f"expected a header line {','.join(MANIFEST_COLUMNS)}")
            lines = [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read subject manifest ({exc})") from None
    subjects: list[dict[str, str]] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=2):
        empty = [c for c in MANIFEST_COLUMNS if not line.get(c)]
        if empty:
            raise InputError(f"{path} line {number}: empty {', '.join(empty)}")
        if line["subject"] in seen:
            raise InputError(f"{path} line {number}: subject {line['subject']!r} appears twice")
        seen.add(line["subject"])
        subjects.append({"subject": line["subject"],
                         **{key: str(base / line[col]) for key, col in
                            (("path", "nifti"), ("bval_path", "bval"), ("bvec_path", "bvec"))}})
    if not subjects:
        raise InputError(f"{path}: subject manifest lists no subjects")
    return subjects


def write_nifti(path: str | Path, data: np.ndarray, affine: np.ndarray,
                header: nib.Nifti1Header | None = None) -> Path:
    """Write ``data`` with ``affine`` as NIfTI-1 (gzipped if ``path`` ends in ``.gz``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.asarray(data), np.asarray(affine, dtype=np.float64), header=header)
    img.header.set_data_dtype(np.asarray(data).dtype)
    nib.save(img, str(path))
    return path


def write_nifti_volumes(path: str | Path, volumes: Iterable[np.ndarray], shape: Sequence[int],
                        dtype: np.dtype | str, affine: np.ndarray) -> Path:
    """Write a 4-D NIfTI-1 image volume by volume (gzipped if ``path`` ends in ``.gz``).

    Memory is one volume whatever the image size: NIfTI stores the last axis
    slowest, so the file is the header followed by each volume's bytes in
    Fortran order. The header is the one :func:`write_nifti` would write.

    Parameters
    ----------
    path : str or Path
    volumes : iterable of ndarray
        The ``shape[3]`` volumes in order, each of shape ``shape[:3]``.
    shape : sequence of int
        The 4-D shape.
    dtype : dtype
        On-disk data type; volumes are cast to it.
    affine : ndarray
        4x4 voxel-to-world matrix.
    """
    path = Path(path)
    shape = tuple(int(n) for n in shape)
    dtype = np.dtype(dtype)
    if len(shape) != 4:
        raise ValueError(f"{path}: write_nifti_volumes needs a 4-D shape, got {shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    header = nib.Nifti1Image(np.zeros((1, 1, 1), dtype=dtype), np.asarray(affine, dtype=np.float64)).header
    header.set_data_dtype(dtype)
    header.set_data_shape(shape)
    header.set_slope_inter(None, None)
    header.set_data_offset(352)  # single-file NIfTI-1: 348-byte header + 4-byte extension flag
    written = 0
    with nib.openers.ImageOpener(str(path), "wb") as fileobj:
        header.write_to(fileobj)
        fileobj.write(b"\0" * (header.get_data_offset() - fileobj.tell()))
        for volume in volumes:
            volume = np.asarray(volume)
            if volume.shape != shape[:3]:
                raise ValueError(f"{path}: volume {written} has shape {volume.shape}, expected {shape[:3]}")
            if written == shape[3]:
                raise ValueError(f"{path}: more than the {shape[3]} volumes of shape {shape}")
            fileobj.write(volume.astype(dtype, copy=False).tobytes(order="F"))
            written += 1
    if written != shape[3]:
        path.unlink(missing_ok=True)
        raise ValueError(f"{path}: got {written} volumes for shape {shape}")
    return path
