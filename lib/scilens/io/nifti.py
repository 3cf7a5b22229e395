"""NIfTI-1/2 images and FSL gradient files -> one row per 3-D volume, and back.

Reading runs on the executors: :func:`read_volumes` takes a DataFrame of
paths and each task opens its own files; small files share a task
(:func:`plan_tasks`), since a task costs more than reading a tiny file. A
4-D file is streamed one volume at a time (NIfTI stores the last axis
slowest, so volume ``v`` is one contiguous run of bytes, also inside a
``.nii.gz``): memory per task is one volume, whatever the subject's size.

Headers are not trusted: before any voxel is read, the bytes the header
claims must fit in the file (uncompressed) and one volume must fit the
memory budget ``max_volume_mb`` (always; the only bound a ``.nii.gz`` header
can be held to before decompressing), and volumes are read in chunks, so a
file shorter than its header says costs no more memory than it holds.

Values equal ``np.asanyarray(nibabel.load(path).dataobj)[..., v]``: the on-disk
dtype when the header has no scaling, the scaled values when it has.

Subjects are found on the driver before anything is read:
:func:`resolve_subjects` lists the images of input directories (with the FSL
gradient files beside them) and the lines of manifest CSVs (:func:`read_manifest`).
"""

from __future__ import annotations

import csv
import heapq
import math
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypedDict

import nibabel as nib
import numpy as np
import pandas as pd
from nibabel.arrayproxy import ArrayProxy
from nibabel.volumeutils import apply_read_scaling
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from scilens.core import tensor
from scilens.core.inputs import InputError, list_files
from scilens.core.quarantine import guard_rows, rejection, split_rejected, with_rejected_field

__all__ = [
    "DEFAULT_MAX_VOLUME_MB",
    "DEFAULT_TASK_MB",
    "MANIFEST_COLUMNS",
    "NIFTI_SUFFIXES",
    "VOLUME_SCHEMA",
    "SubjectFiles",
    "find_gradient_files",
    "gradient_arrays",
    "iter_volumes",
    "plan_tasks",
    "read_gradients",
    "read_manifest",
    "read_volumes",
    "resolve_subjects",
    "subject_name",
    "subject_name_problem",
    "volume_rows",
    "write_nifti",
    "write_nifti_volumes",
]

NIFTI_SUFFIXES = (".nii", ".nii.gz")

DEFAULT_MAX_VOLUME_MB = 1024
"""Largest 3-D volume read by default, MiB in memory (after scaling). Spark cannot
hold a binary value of 2 GiB or more, and a volume row is copied a few times
on its way (decoded, scaled, encoded, Arrow), so a worker needs several times this."""

DEFAULT_TASK_MB = 64
"""Files smaller than this (MiB on disk) share a read task, up to this much per task."""

FILE_COST_BYTES = 1 << 20
"""What opening one file costs, counted as bytes when files are dealt out to tasks:
a file is never free, however small (plain Python reads a tiny NIfTI in ~6.5 ms,
about what reading a MiB costs)."""

_CHUNK_BYTES = 8 << 20
_FRAME_BYTES = 8 << 20  # volume bytes gathered into one Arrow batch before it is sent
_COMPRESSED_SUFFIXES = (".gz", ".bz2", ".zst")

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


# ----------------------------------------------------------------------------- subject discovery

class SubjectFiles(TypedDict):
    """One subject's files as listed on the driver (no image opened yet)."""

    subject: str
    path: str
    bval_path: str | None
    """FSL b-values; None when none was found beside the image at listing time (the reader looks again)."""
    bvec_path: str | None


def subject_name_problem(subject: str) -> str | None:
    """Why ``subject`` cannot name its output directory ``subjects/<subject>``, or None if it can.

    Refused: empty, slashes or backslashes (a path, e.g. ``../x``), a leading
    ``.`` or ``_`` (``.``, ``..``, hidden and Spark-ignored names), control
    characters, and more than 255 bytes (a file name's limit).
    """
    if not subject:
        return "a subject name is empty"
    if "/" in subject or "\\" in subject or subject[0] in "._" or any(ord(c) < 32 for c in subject) \
            or len(subject.encode("utf-8", "surrogatepass")) > 255:
        return (f"subject name {subject!r} cannot name an output directory (no slashes or control characters, "
                "not starting with '.' or '_', at most 255 bytes)")
    return None


def read_manifest(path: str) -> tuple[list[SubjectFiles], list[dict[str, str]]]:
    """Subjects of a manifest CSV (:data:`MANIFEST_COLUMNS`), quarantining bad lines.

    A line with an empty field, more fields than the header, a subject listed
    on an earlier line or a name that cannot name a directory is rejected,
    naming the manifest, the line and the problem; the other lines go on.
    Relative paths are relative to the manifest's directory. Raises
    :class:`InputError` when the file as a whole is not a manifest
    (unreadable, a required column missing).
    """
    base = os.path.dirname(os.path.abspath(path))
    subjects: list[SubjectFiles] = []
    rejected: list[dict[str, str]] = []
    seen: dict[str, int] = {}
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            header = [c.strip() for c in reader.fieldnames or []]
            missing = [c for c in MANIFEST_COLUMNS if c not in header]
            if missing:
                raise InputError(f"{path}: subject manifest lacks column(s) {', '.join(missing)}; "
                                 f"expected a header line {','.join(MANIFEST_COLUMNS)}")
            for row in reader:
                number = reader.line_num
                line = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
                empty = [c for c in MANIFEST_COLUMNS if not line.get(c)]
                subject = line.get("subject", "")
                if empty:
                    problem = f"empty {', '.join(empty)}"
                elif row.get(None):
                    problem = f"{len(header) + len(row[None])} fields for the header's {len(header)}"
                elif subject in seen:
                    problem = f"subject {subject!r} is already on line {seen[subject]}"
                else:
                    problem = subject_name_problem(subject) or ""
                if problem:
                    rejected.append(rejection(path, "list subjects", f"{path} line {number}: {problem}",
                                              record=subject or f"line {number}"))
                    continue
                seen[subject] = number
                subjects.append({"subject": subject, "path": os.path.join(base, line["nifti"]),
                                 "bval_path": os.path.join(base, line["bval"]),
                                 "bvec_path": os.path.join(base, line["bvec"])})
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read subject manifest ({exc})") from None
    if not subjects and not rejected:
        raise InputError(f"{path}: subject manifest lists no subjects")
    return subjects, rejected


def resolve_subjects(inputs: list[str], list_inputs: Callable[[Sequence[str], Sequence[str]], list[str]] | None = None
                     ) -> tuple[list[SubjectFiles], list[dict[str, str]]]:
    """List the subjects of ``inputs`` on the driver (paths only, no image is opened).

    Returns the subjects (``subject``, ``path``, ``bval_path``, ``bvec_path``)
    and rejections: NIfTI files without gradient files beside them, files
    whose name cannot name a subject's output directory, and bad manifest
    lines (:func:`read_manifest`). Raises :class:`InputError` for a missing
    input, a file that is not a manifest or two inputs with one subject name.
    ``list_inputs(suffixes, inputs)`` lists a directory (the job's
    :meth:`~scilens.core.job.JobContext.list_inputs`, which rejects and counts
    what it cannot list); by default :func:`scilens.core.inputs.list_files`.
    """
    subjects: list[SubjectFiles] = []
    rejected: list[dict[str, str]] = []
    for item in inputs:
        if item.lower().endswith(".csv") and os.path.isfile(item):
            listed, bad = read_manifest(item)
            subjects += listed
            rejected += bad
            continue
        paths = (list_inputs(NIFTI_SUFFIXES, [item]) if list_inputs is not None
                 else list_files(item, NIFTI_SUFFIXES))
        for path in paths:
            subject = subject_name(path)
            problem = subject_name_problem(subject)
            if problem:
                rejected.append(rejection(path, "list subjects", problem, record=subject))
                continue
            side = find_gradient_files(path)
            if side is None and path.lower().endswith(NIFTI_SUFFIXES):
                rejected.append(rejection(path, "list subjects", "no FSL gradient files (.bval/.bvec) beside it",
                                          record=subject))
                continue
            subjects.append({"subject": subject, "path": path, "bval_path": str(side[0]) if side else None,
                             "bvec_path": str(side[1]) if side else None})
    seen: dict[str, str] = {}
    for s in subjects:
        if s["subject"] in seen:
            raise InputError(f"two inputs are subject {s['subject']!r}: {seen[s['subject']]} and {s['path']}; "
                             "rename one or list subjects in a manifest CSV (subject,nifti,bval,bvec)")
        seen[s["subject"]] = s["path"]
    return subjects, rejected


def _number_table(path: str | Path, what: str) -> np.ndarray:
    """A gradient file as a 2-D float table, or a ValueError saying what is wrong with it."""
    try:
        with open(path, "rb") as handle:
            text = handle.read()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read {what} file ({exc.strerror or exc})") from None
    if not text.strip():
        raise ValueError(f"{path}: empty {what} file")
    try:
        return np.loadtxt(path, ndmin=2, dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"{path}: {what} file is not a table of numbers ({exc})") from None


def read_gradients(bval_path: str | Path, bvec_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read FSL gradient files as dipy does: b-values ``(n,)`` and unit vectors ``(n, 3)``.

    Raises
    ------
    ValueError
        Naming the file at fault and what is wrong: unreadable or empty, not
        numbers, b-values not one row (or column), b-vectors not 3 rows (FSL)
        or 3 columns, or counts that differ.
    """
    from dipy.io.gradients import read_bvals_bvecs

    # Checked here first: dipy's messages ("bvec file should have three rows") name
    # neither the file nor the shape it found.
    vals = _number_table(bval_path, "b-value")
    vecs = _number_table(bvec_path, "b-vector")
    if min(vals.shape) != 1:
        raise ValueError(f"{bval_path}: b-values must be one row (or one column) of numbers, "
                         f"this file is {vals.shape[0]} x {vals.shape[1]}")
    n_vals = vals.size
    if 3 not in vecs.shape:
        raise ValueError(f"{bvec_path}: b-vectors must be 3 rows (FSL) or 3 columns of numbers, "
                         f"this file is {vecs.shape[0]} x {vecs.shape[1]}")
    if vecs.shape[0] == 3 and vecs.shape[1] == n_vals:  # FSL's layout, 3 x n
        n_vecs = n_vals
    elif vecs.shape[1] == 3:  # n x 3, which dipy accepts too
        n_vecs = vecs.shape[0]
    else:
        n_vecs = vecs.shape[1]
    if n_vecs != n_vals:
        raise ValueError(f"{bval_path} has {n_vals} b-values but {bvec_path} has {n_vecs} b-vectors "
                         f"(a {vecs.shape[0]} x {vecs.shape[1]} table)")
    try:
        bvals, bvecs = read_bvals_bvecs(str(bval_path), str(bvec_path))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{bval_path} / {bvec_path}: not an FSL gradient table ({exc})") from None
    return np.asarray(bvals, dtype=np.float64), np.asarray(bvecs, dtype=np.float64)


def gradient_arrays(bvals: Sequence[float | None], bvecs: Sequence[Sequence[float | None] | None]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``bval``/``bvec`` column values (in volume order) as float arrays, null -> NaN."""
    vals = np.array([np.nan if b is None else b for b in bvals], dtype=np.float64)
    vecs = np.array([[np.nan] * 3 if v is None else [np.nan if c is None else c for c in v] for v in bvecs],
                    dtype=np.float64).reshape(-1, 3)
    return vals, vecs


def _check_file(path: str) -> int:
    """Size of the regular file ``path``, or an error saying why it cannot be an image."""
    try:
        info = os.stat(path)
    except OSError as exc:  # missing, a symlink loop, a dangling link, no search permission
        raise OSError(f"{path}: cannot open ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{path}: not a regular file")
    if info.st_size == 0:
        raise ValueError(f"{path}: empty file (0 bytes), not a NIfTI image")
    try:  # nibabel turns an unopenable file into "Cannot work out file type"
        with open(path, "rb"):
            pass
    except PermissionError:
        raise PermissionError(f"{path}: permission denied (cannot open the file for reading)") from None
    return info.st_size


def _file_proxy(path: str, img: nib.Nifti1Image) -> ArrayProxy:
    """The proxy of a loaded image's voxels: its file offset and scaling (a loaded image always has one)."""
    proxy = img.dataobj
    if not isinstance(proxy, ArrayProxy):
        raise TypeError(f"{path}: image voxels are not read from its file ({type(proxy).__name__})")
    return proxy


def _check_claims(path: str, img: nib.Nifti1Image, max_volume_bytes: int | None) -> None:
    """Refuse an image whose header claims more than its file holds or a volume more than the budget.

    Run before any voxel is read: nibabel and numpy allocate what the header
    says first and find out the file is short after.
    """
    shape = tuple(int(n) for n in img.shape)
    if len(shape) not in (3, 4):
        raise ValueError(f"{path}: expected a 3-D or 4-D image, got shape {shape}")
    if len(shape) == 4 and shape[3] == 0:
        raise ValueError(f"{path}: 4-D image with 0 volumes (shape {shape})")
    if 0 in shape[:3]:
        raise ValueError(f"{path}: image has an empty dimension (shape {shape}), no voxels")
    proxy = _file_proxy(path, img)
    dtype = img.get_data_dtype()
    n_volumes = shape[3] if len(shape) == 4 else 1
    voxels = math.prod(shape[:3])  # Python ints: int64 overflows on NIfTI-2 dimensions
    claimed = proxy.offset + n_volumes * voxels * dtype.itemsize
    image_file = img.file_map["image"].filename or path
    if not str(image_file).lower().endswith(_COMPRESSED_SUFFIXES):
        size = os.path.getsize(image_file)
        if claimed > size:
            raise ValueError(f"{path}: header claims {claimed} bytes (offset {proxy.offset} + {n_volumes} "
                             f"volume(s) of {shape[:3]} {dtype}), but the file holds only {size} bytes")
    if max_volume_bytes is not None:
        scaled = proxy.slope != 1 or proxy.inter != 0
        volume_bytes = voxels * (max(dtype.itemsize, 8) if scaled else dtype.itemsize)
        if volume_bytes > max_volume_bytes:
            raise ValueError(f"{path}: header claims volumes of {shape[:3]} {dtype}, {volume_bytes / 2**20:.1f} "
                             f"MiB each in memory, more than the budget of {max_volume_bytes / 2**20:.1f} MiB "
                             f"per volume (max_volume_mb)")


def _read_volume(fileobj: Any, path: str, v: int, n_volumes: int, shape: tuple[int, ...], dtype: np.dtype,
                 offset: int) -> np.ndarray:
    """Volume ``v`` read in chunks into an untouched buffer: memory grows with the bytes that exist."""
    n_bytes = math.prod(shape) * dtype.itemsize
    if fileobj.tell() != offset:
        fileobj.seek(offset)
    buffer = np.empty(n_bytes, dtype=np.uint8)  # pages are committed only as they are written
    view = buffer.data  # a memoryview of the buffer, as file.readinto wants
    done = 0
    while done < n_bytes:
        got = fileobj.readinto(view[done:done + _CHUNK_BYTES])
        if not got:
            raise ValueError(f"{path}: file ends {done} bytes into volume {v} of {n_volumes}, "
                             f"which needs {n_bytes} bytes")
        done += got
    return np.ndarray(shape, dtype=dtype, buffer=buffer, order="F")


def iter_volumes(path: str | Path, max_volume_mb: float | None = DEFAULT_MAX_VOLUME_MB
                 ) -> tuple[nib.Nifti1Image, Iterator[np.ndarray]]:
    """Open a NIfTI file; return its (header-only) image and an iterator of 3-D volumes.

    A 3-D file yields one volume; a 4-D file yields ``shape[3]`` volumes in
    order, reading the file once, front to back.

    Parameters
    ----------
    path : str or Path
    max_volume_mb : float or None
        Largest volume accepted, MiB in memory after scaling (None: no bound).

    Raises
    ------
    OSError, ValueError
        Before reading any voxel: the file cannot be opened, is empty, is not
        NIfTI, is not 3-D or 4-D, has no volumes, claims more bytes than it
        holds (uncompressed) or a volume larger than ``max_volume_mb``.
    """
    path = str(path)
    _check_file(path)
    img = nib.load(path)
    if not isinstance(img, nib.Nifti1Image):  # Nifti2Image is one too
        raise ValueError(f"{path}: not a NIfTI image ({type(img).__name__})")
    _check_claims(path, img, None if max_volume_mb is None else int(max_volume_mb * 2**20))
    shape = img.shape
    proxy = _file_proxy(path, img)
    vol_shape = tuple(int(n) for n in shape[:3])
    n_volumes = shape[3] if len(shape) == 4 else 1
    dtype = img.get_data_dtype()
    vol_bytes = math.prod(vol_shape) * dtype.itemsize
    slope, inter = proxy.slope, proxy.inter

    def volumes() -> Iterator[np.ndarray]:
        with nib.openers.ImageOpener(path, "rb") as fileobj:
            for v in range(n_volumes):
                raw = _read_volume(fileobj, path, v, n_volumes, vol_shape, dtype, proxy.offset + v * vol_bytes)
                yield apply_read_scaling(raw, slope, inter)

    return img, volumes()


def volume_rows(path: str, subject: str | None = None,
                gradients: tuple[np.ndarray, np.ndarray] | None = None,
                gradient_files: tuple[str, str] | None = None,
                max_volume_mb: float | None = DEFAULT_MAX_VOLUME_MB) -> Iterator[dict[str, Any]]:
    """Rows of :data:`VOLUME_SCHEMA` for one NIfTI file.

    Gradients are ``gradients`` if given, else read from ``gradient_files``,
    else from the FSL side files next to the image (if any). The image is
    opened first, so a bad image is blamed, not its gradient files.
    """
    subject = subject or subject_name(path)
    img, volumes = iter_volumes(path, max_volume_mb)
    n_volumes = img.shape[3] if len(img.shape) == 4 else 1
    if gradients is None:
        side = gradient_files or find_gradient_files(path)
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


def plan_tasks(sizes: Sequence[int], task_bytes: int, min_tasks: int = 1) -> list[list[int]]:
    """Deal files out to tasks by size: small files share a task, a large one has its own.

    Parameters
    ----------
    sizes : sequence of int
        File sizes in bytes (0 for a file that cannot be seen: its reader rejects it).
    task_bytes : int
        Target bytes per task. A file of at least this much (counting
        :data:`FILE_COST_BYTES` for opening it) is a task of its own; the
        others are spread over as few tasks as hold them at this target.
    min_tasks : int
        At least this many tasks (while there are files), e.g. the number of
        cores, so that grouping never leaves a core idle.

    Returns
    -------
    list of list of int
        Indices into ``sizes``, one list per task, ascending within a task;
        heaviest task first (Spark starts partitions in order, so the long
        ones do not run last).
    """
    costs = [max(0, int(s)) + FILE_COST_BYTES for s in sizes]
    big = [i for i, c in enumerate(costs) if c >= task_bytes]
    small = [i for i, c in enumerate(costs) if c < task_bytes]
    groups: list[list[int]] = [[i] for i in big]
    if small:
        n_small = max(math.ceil(sum(costs[i] for i in small) / task_bytes), min(len(small), min_tasks - len(big)))
        # Longest processing time first: each file to the lightest task so far.
        heap = [(0, g) for g in range(n_small)]
        dealt: list[list[int]] = [[] for _ in range(n_small)]
        for i in sorted(small, key=lambda i: -costs[i]):
            load, g = heapq.heappop(heap)
            dealt[g].append(i)
            heapq.heappush(heap, (load + costs[i], g))
        groups += [sorted(g) for g in dealt if g]
    return sorted(groups, key=lambda g: -sum(costs[i] for i in g))


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:  # the reader rejects it, with the reason
        return 0


def _grouped_frame(spark: SparkSession, rows: Sequence[tuple[Any, ...]], schema: T.StructType,
                   task_bytes: int) -> DataFrame:
    """``rows`` (with a ``path`` column) as a DataFrame with one partition per task of :func:`plan_tasks`."""
    at = schema.fieldNames().index("path")
    groups = plan_tasks([_file_size(str(r[at])) for r in rows], task_bytes, spark.sparkContext.defaultParallelism)
    tasks = [[tuple(rows[i]) for i in group] for group in groups]
    # One element per slice: parallelize cuts n elements into n slices, one each.
    rdd = spark.sparkContext.parallelize(tasks, max(1, len(tasks))).flatMap(lambda task: task)
    return spark.createDataFrame(rdd, schema)


def read_volumes(spark: SparkSession, paths: Sequence[str] | DataFrame, step: str = "read_nifti",
                 max_volume_mb: float | None = DEFAULT_MAX_VOLUME_MB,
                 task_mb: float | None = DEFAULT_TASK_MB) -> tuple[DataFrame, DataFrame]:
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
    max_volume_mb : float or None
        Largest volume accepted, MiB in memory: a file whose header claims
        more is rejected before any voxel is read (None: no bound).
    task_mb : float or None
        Files are dealt out to tasks by size (:func:`plan_tasks`), about this
        many MiB per task; a larger file has a task of its own. A DataFrame
        given as ``paths`` is collected (it holds paths only) and regrouped.
        None keeps ``paths`` as partitioned (a list: one file per task).

    Returns
    -------
    volumes, rejected : DataFrame
        Rows of :data:`VOLUME_SCHEMA`, and one rejected record per file that
        could not be read whole (none of its volumes are kept).
    """
    # task_mb None: one task per task as given, i.e. per file for a list (every file "large").
    task_bytes = 1 if task_mb is None else max(1, int(task_mb * 2**20))
    if not isinstance(paths, DataFrame):
        paths = _grouped_frame(spark, [(str(p),) for p in paths],
                               T.StructType([T.StructField("path", T.StringType(), False)]), task_bytes)
    elif task_mb is not None:
        paths = _grouped_frame(spark, [tuple(r) for r in paths.collect()], paths.schema, task_bytes)
    columns = VOLUME_SCHEMA.fieldNames()

    def produce(row: pd.Series) -> Iterator[dict[str, Any]]:
        files = None
        if isinstance(row.get("bval_path"), str) and isinstance(row.get("bvec_path"), str):
            files = (row["bval_path"], row["bvec_path"])
        subject = row.get("subject") if isinstance(row.get("subject"), str) else None
        return volume_rows(row["path"], subject, gradient_files=files, max_volume_mb=max_volume_mb)

    def read(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        # Small volumes (many tiny files in one task) travel together: an Arrow batch per
        # volume costs more than a tiny volume. Memory stays one volume plus _FRAME_BYTES.
        pending: list[pd.DataFrame] = []
        held = 0
        for batch in batches:
            for frame in guard_rows(batch, produce, step, columns, record_column="subject"):
                pending.append(frame)
                held += sum(len(d["data"]) for d in frame["data"] if d is not None)
                if held >= _FRAME_BYTES:
                    yield pending[0] if len(pending) == 1 else pd.concat(pending, ignore_index=True)
                    pending, held = [], 0
        if pending:
            yield pending[0] if len(pending) == 1 else pd.concat(pending, ignore_index=True)

    out = paths.mapInPandas(read, with_rejected_field(VOLUME_SCHEMA))
    # Straight to local disk: a subject's volumes kept in the JVM heap would need a heap the size of the subject.
    return split_rejected(out, on="path", storage=StorageLevel.DISK_ONLY)


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
