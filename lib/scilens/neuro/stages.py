"""The Spark stages of the dMRI pipeline: thin Arrow layers over :mod:`scilens.neuro.pipeline`.

Two cuts, chosen per run by :func:`choose_granularity` from the subjects' header sizes (config
``granularity``): with at least as many subjects as cores, each fitting ``subject_task_mb``,
:func:`subject_chains` runs each subject's whole chain in one task (no shuffle, outputs written by
the task); otherwise the volume-level stages below split subjects across tasks. Both run the same
kernels on the same pieces and write the same bits.

Volume-level data flow (one row per volume in, maps and voxel rows out)::

    volume rows ──mapInPandas──► per-subject b0 partial sums ──groupBy subject──► mask per subject
         │                                                                              │ broadcast
         └──range-partition by (subject, volume)──join──► denoise one volume per task ──┘
                 ──flatMap into voxel blocks──► groupBy (subject, block) ──► tensor fit per block
                 ──► FA/MD maps per subject (NIfTI) and one row per voxel (Parquet)

What a task holds: one volume (b0 sums, denoising), one mean b0 image and
mask (segmentation), one block of voxels with every volume (fit), one subject's
3-D maps (assembly); never a subject's 4-D array. Steps that may fail for a
subject emit ``_rejected`` rows naming it (:mod:`scilens.core.quarantine`).

The job runs :func:`read`, :func:`segment`, :func:`denoise`, :func:`fit` and
:func:`maps` in turn: each sizes its own Arrow batches (whole volumes travel
one per batch, voxel blocks up to ``arrow_batch_mb``) and task counts
(:func:`denoise_tasks`) around the actions it runs, and leaves the session's
settings as it found them.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from scilens.core import tensor
from scilens.core.chunking import Block, block_grid
from scilens.core.inputs import paths_frame
from scilens.core.placement import PLACE_COLUMN, place_groups
from scilens.core.quarantine import REJECTED_COLUMN, rejection, split_rejected, with_rejected_field
from scilens.core.session import ARROW_BATCH_BUDGET, arrow_batch_bytes, cached_batch_rows
from scilens.io import nifti
from scilens.io.nifti import gradient_arrays
from scilens.neuro import pipeline
from scilens.neuro.config import NeuroConfig
from scilens.neuro.denoise import DenoiseConfig, denoise_volume
from scilens.neuro.dti import TensorFitConfig, VoxelTensors, fit_tensors
from scilens.neuro.gradients import b0_volumes, make_gradient_table
from scilens.neuro.pipeline import VIEWS, subject_dir
from scilens.neuro.segment import B0Sum, SegmentConfig

__all__ = [
    "FIT_SCHEMA",
    "PIECE_SCHEMA",
    "SUBJECT_CHAIN_SCHEMA",
    "SUBJECT_SCHEMA",
    "TASK_VOXELS",
    "VOXEL_ARROW_SCHEMA",
    "VOXEL_SCHEMA",
    "Cut",
    "SubjectInfo",
    "b0_partials",
    "choose_granularity",
    "denoise",
    "denoise_pieces",
    "denoise_tasks",
    "fit",
    "fit_blocks",
    "maps",
    "read",
    "segment",
    "segment_subjects",
    "subject_bytes",
    "subject_chains",
    "volumes_per_task",
    "voxel_rows",
    "worker_limits",
    "write_denoised",
    "write_maps",
]

def _previews(name: str) -> list[T.StructField]:
    return [tensor.tensor_field(f"{name}_{view}") for view in VIEWS]


def _preview_values(name: str, volume: np.ndarray) -> dict[str, Any]:
    return {f"{name}_{view}": tensor.encode(s) for view, s in zip(VIEWS, pipeline.mid_slices(volume))}


PARTIAL_SCHEMA = T.StructType([
    T.StructField("subject", T.StringType()),
    T.StructField("path", T.StringType()),
    T.StructField("n_volumes", T.IntegerType()),
    T.StructField("dtype", T.StringType()),
    tensor.tensor_field("affine"),
    tensor.tensor_field("volumes"),
    tensor.tensor_field("bvals"),
    tensor.tensor_field("bvecs"),
    tensor.tensor_field("b0_sum"),
    T.StructField("n_b0", T.IntegerType()),
    tensor.tensor_field("nonfinite"),
])
"""Per task and subject: the volumes it saw, their gradients, the sum of its b0
volumes (float64) and the volumes holding NaN or infinite values."""

SUBJECT_SCHEMA = T.StructType([
    T.StructField("subject", T.StringType()),
    T.StructField("path", T.StringType()),
    T.StructField("n_volumes", T.IntegerType()),
    T.StructField("dtype", T.StringType()),
    T.StructField("shape", T.ArrayType(T.LongType())),
    tensor.tensor_field("affine"),
    tensor.tensor_field("bvals"),
    tensor.tensor_field("bvecs"),
    tensor.tensor_field("mask"),
    T.StructField("n_b0", T.IntegerType()),
    T.StructField("n_mask_voxels", T.LongType()),
    *_previews("mean_b0"),
    *_previews("mask"),
])
"""One row per subject after segmentation: its geometry, gradient table and brain mask."""

PIECE_SCHEMA = T.StructType([
    T.StructField("subject", T.StringType()),
    T.StructField("block", T.IntegerType()),
    T.StructField("volume", T.IntegerType()),
    tensor.tensor_field("values"),
    tensor.tensor_field("mask"),
])
"""One denoised volume's masked voxels inside one block, in C order of the block
(``values``, 1-D); the volume-0 piece also carries the block's mask."""

FIT_SCHEMA = T.StructType([
    T.StructField("subject", T.StringType()),
    T.StructField("block", T.IntegerType()),
    tensor.tensor_field("mask"),
    tensor.tensor_field("fa"),
    tensor.tensor_field("md"),
    tensor.tensor_field("evals"),
])
"""Tensor fit of one block: FA, MD (n,) and eigenvalues (n, 3) of its masked voxels."""

MAPS_SCHEMA = T.StructType([
    T.StructField("subject", T.StringType()),
    T.StructField("n_voxels", T.LongType()),
    T.StructField("fa_mean", T.DoubleType()),
    T.StructField("md_mean", T.DoubleType()),
    *_previews("fa"),
])

VOXEL_SCHEMA = T.StructType([
    T.StructField("subject", T.StringType(), False),
    T.StructField("i", T.IntegerType(), False),
    T.StructField("j", T.IntegerType(), False),
    T.StructField("k", T.IntegerType(), False),
    T.StructField("fa", T.DoubleType(), False),
    T.StructField("md", T.DoubleType(), False),
    T.StructField("eigenvalues", T.ArrayType(T.DoubleType(), False), False),
])
"""``voxels.parquet``: one row per voxel inside a subject's mask."""


@dataclass(frozen=True)
class SubjectInfo:
    """What the driver keeps of a segmented subject (no image data)."""

    subject: str
    path: str
    shape: tuple[int, int, int, int]
    dtype: str
    affine: np.ndarray
    bvals: np.ndarray
    bvecs: np.ndarray
    n_b0: int
    n_mask_voxels: int
    previews: dict[str, list[np.ndarray]]

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> SubjectInfo:
        """The subject of one row of the segment stage's result (tensor columns decoded)."""
        previews = {name: [tensor.decode(row[f"{name}_{view}"]) for view in VIEWS] for name in ("mean_b0", "mask")}
        ni, nj, nk, nv = (int(n) for n in row["shape"])  # the mean b0's 3 axes and the volume count
        return cls(row["subject"], row["path"], (ni, nj, nk, nv), row["dtype"],
                   tensor.decode(row["affine"]), tensor.decode(row["bvals"]), tensor.decode(row["bvecs"]),
                   int(row["n_b0"]), int(row["n_mask_voxels"]), previews)


def _frame(rows: Sequence[Mapping[str, Any]], schema: T.StructType) -> pd.DataFrame:
    return pd.DataFrame([{name: r.get(name) for name in schema.fieldNames()} for r in rows],
                        columns=schema.fieldNames())


def _rejected_frame(schema: T.StructType, path: str, step: str, error: BaseException, subject: str) -> pd.DataFrame:
    return _frame([{REJECTED_COLUMN: rejection(path, step, error, record=subject)}], schema)


def b0_partials(volumes: DataFrame, b0_threshold: float) -> DataFrame:
    """Per task and subject: b0 partial sum, gradients and non-finite volumes (:data:`PARTIAL_SCHEMA`).

    ``volumes`` has the columns of :data:`scilens.io.nifti.VOLUME_SCHEMA`.
    """

    def run(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        state: dict[str, tuple[dict[str, Any], pipeline.B0Partial]] = {}
        for batch in batches:
            bvals, bvecs = gradient_arrays(list(batch["bval"]), list(batch["bvec"]))
            is_b0 = b0_volumes(bvals, b0_threshold)
            for n, row in enumerate(batch.itertuples(index=False)):
                volume = tensor.decode(row.data)
                head, part = state.setdefault(row.subject, (
                    {"path": row.path, "n_volumes": int(row.n_volumes), "dtype": volume.dtype.str,
                     "affine": row.affine}, pipeline.B0Partial()))
                part.add(int(row.volume), volume, bvals[n], bvecs[n], bool(is_b0[n]))
        for subject, (head, part) in state.items():
            b0 = part.b0
            yield _frame([{
                "subject": subject, **head, "volumes": tensor.encode(np.array(part.volumes, dtype=np.int32)),
                "bvals": tensor.encode(np.array(part.bvals)),
                "bvecs": tensor.encode(np.array(part.bvecs).reshape(-1, 3)),
                "b0_sum": None if b0.total is None else tensor.encode(b0.total), "n_b0": b0.count,
                "nonfinite": tensor.encode(np.array(part.nonfinite, dtype=np.int32)),
            }], PARTIAL_SCHEMA)

    return volumes.mapInPandas(run, PARTIAL_SCHEMA)


def segment_subjects(partials: DataFrame, subjects: Sequence[str], b0_threshold: float, config: SegmentConfig,
                     output: str | Path, n_partitions: int,
                     gradient_files: Mapping[str, tuple[str | None, str | None]] | None = None) -> DataFrame:
    """Reduce partial sums to each subject's mean b0 and mask (:data:`SUBJECT_SCHEMA` plus ``_rejected``).

    ``subjects`` are dealt out over ``n_partitions`` tasks in turn (one
    median_otsu per subject, the step's work). Writes
    ``<output>/subjects/<subject>/mask.nii.gz``. A subject is rejected when a
    volume holds NaN/Inf, its gradients are not physical (negative or
    non-finite b-values, b-vectors not of unit length: messages name the
    subject's ``gradient_files``, subject -> (bval, bvec) paths), it has no b0
    volume, its gradient table is invalid, or its mask is empty.
    """
    schema = with_rejected_field(SUBJECT_SCHEMA)
    output = str(output)
    gradient_files = dict(gradient_files or {})

    def run(group: pd.DataFrame) -> pd.DataFrame:
        first = group.iloc[0]
        subject, path = str(first["subject"]), str(first["path"])
        try:
            n_volumes, dtype = int(first["n_volumes"]), np.dtype(first["dtype"])
            parts = [pipeline.B0Partial(
                list(tensor.decode(r.volumes)), list(tensor.decode(r.bvals)), list(tensor.decode(r.bvecs)),
                B0Sum(None if r.b0_sum is None or not r.n_b0 else tensor.decode(r.b0_sum), int(r.n_b0), dtype),
                list(tensor.decode(r.nonfinite))) for r in group.itertuples(index=False)]
            seg = pipeline.segment(parts, n_volumes, b0_threshold, config,
                                   gradient_files.get(subject, (None, None)))
            pipeline.write_mask(output, subject, seg.mask, tensor.decode(first["affine"]))
            return _frame([{
                "subject": subject, "path": path, "n_volumes": n_volumes, "dtype": first["dtype"],
                "shape": [*seg.mean_b0.shape, n_volumes], "affine": first["affine"],
                "bvals": tensor.encode(seg.bvals), "bvecs": tensor.encode(seg.bvecs), "mask": tensor.encode(seg.mask),
                "n_b0": seg.n_b0, "n_mask_voxels": int(seg.mask.sum()),
                **_preview_values("mean_b0", seg.mean_b0), **_preview_values("mask", seg.mask.astype(np.uint8)),
            }], schema)
        except Exception as exc:
            return _rejected_frame(schema, path, "segment", exc, subject)

    placed = place_groups(partials, ["subject"], [(name,) for name in subjects], n_partitions)
    return placed.groupBy(PLACE_COLUMN, "subject").applyInPandas(run, schema)


def denoise_pieces(volumes: DataFrame, masks: Any, n_tasks: int, config: DenoiseConfig,
                   block_shape: Sequence[int], denoised_parts: str | None = None) -> DataFrame:
    """Denoise every volume of the subjects in ``masks`` (a run of volumes per task), cut into voxel blocks.

    Parameters
    ----------
    volumes : DataFrame
        Volume rows (``subject``, ``path``, ``volume``, ``data``).
    masks : pyspark.Broadcast
        Broadcast dict subject -> boolean brain mask (1 byte a voxel, a few MB
        per subject); volumes of other subjects are skipped.
    n_tasks : int
        Number of denoising tasks; volumes are range-partitioned on
        (subject, volume), so each task gets a run of consecutive volumes.
    config : DenoiseConfig
    block_shape : sequence of int
        Voxel block shape (i, j, k) of the fit.
    denoised_parts : str, optional
        If given, each denoised volume is also saved as
        ``<denoised_parts>/<subject>/<volume>.npy`` for :func:`write_denoised`
        (``denoised_parts`` is inside the output, apart from ``subjects/``).

    Returns
    -------
    DataFrame
        Rows of :data:`PIECE_SCHEMA` plus ``_rejected``.
    """
    schema = with_rejected_field(PIECE_SCHEMA)
    block_shape = list(block_shape)
    planned = (volumes.select("subject", "path", "volume", "data")
               .where(F.col("subject").isin(sorted(masks.value)))
               .repartitionByRange(max(1, n_tasks), "subject", "volume"))

    def run(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        blocks: dict[str, list] = {}
        for batch in batches:
            for row in batch.itertuples(index=False):
                try:
                    mask = masks.value[row.subject]
                    if row.subject not in blocks:
                        blocks[row.subject] = pipeline.mask_blocks(mask, block_shape)
                    denoised = denoise_volume(tensor.decode(row.data), mask, config).data
                    if denoised_parts is not None:
                        part = subject_dir(denoised_parts, row.subject) / f"{row.volume:05d}.npy"
                        part.parent.mkdir(parents=True, exist_ok=True)
                        np.save(part, denoised)
                    yield _frame([{
                        "subject": row.subject, "block": bid, "volume": row.volume,
                        "values": tensor.encode(denoised[block.slices][block_mask]),
                        "mask": tensor.encode(block_mask) if row.volume == 0 else None,
                    } for bid, block, block_mask in blocks[row.subject]], schema)
                except Exception as exc:
                    yield _rejected_frame(schema, row.path, "denoise", exc, row.subject)

    return planned.mapInPandas(run, schema)


def fit_blocks(pieces: DataFrame, subjects: Mapping[str, SubjectInfo], b0_threshold: float,
               config: TensorFitConfig, n_partitions: int) -> DataFrame:
    """Regroup pieces into blocks carrying all volumes and fit the tensor (:data:`FIT_SCHEMA` + ``_rejected``).

    Each subject's gradient table (its b-values and b-vectors in volume order,
    a few kB) travels with the function.
    """
    schema = with_rejected_field(FIT_SCHEMA)
    gradients = {name: (info.bvals, info.bvecs) for name, info in subjects.items()}
    paths = {name: info.path for name, info in subjects.items()}
    gtabs: dict[str, Any] = {}  # per task: each Python worker unpickles its own copy

    def run(group: pd.DataFrame) -> pd.DataFrame:
        subject, block = str(group["subject"].iloc[0]), int(group["block"].iloc[0])
        try:
            bvals, bvecs = gradients[subject]
            volumes = group["volume"].to_numpy()
            order = np.argsort(volumes, kind="stable")
            if not np.array_equal(volumes[order], np.arange(len(bvals))):
                raise ValueError(f"block {block} has {len(volumes)} volumes, expected {len(bvals)}")
            values = tensor.decode_column(group["values"])
            signals = np.stack([values[i] for i in order], axis=1)
            masks = [m for m in tensor.decode_column(group["mask"]) if m is not None]
            if len(masks) != 1:
                raise ValueError(f"block {block} has {len(masks)} block masks, expected the one of volume 0")
            if subject not in gtabs:
                gtabs[subject] = make_gradient_table(bvals, bvecs, b0_threshold)
            fit = fit_tensors(signals, gtabs[subject], config)
            mask = masks[0]
            return _frame([{"subject": subject, "block": block, "mask": tensor.encode(mask),
                            "fa": tensor.encode(fit.fa), "md": tensor.encode(fit.md),
                            "evals": tensor.encode(fit.evals)}], schema)
        except Exception as exc:
            return _rejected_frame(schema, paths.get(subject, ""), "fit", exc, subject)

    return (pieces.repartition(max(1, n_partitions), "subject", "block")
            .groupBy("subject", "block").applyInPandas(run, schema))


def _block_lookup(shapes: Mapping[str, Sequence[int]], block_shape: Sequence[int]) -> Callable[[str, int], Block]:
    grids: dict[str, list[Block]] = {}

    def lookup(subject: str, block_id: int) -> Block:
        if subject not in grids:
            grids[subject] = block_grid(tuple(shapes[subject])[:3], list(block_shape))
        return grids[subject][block_id]

    return lookup


_NO_EVALS = np.zeros((0, 3))


def write_maps(fits: DataFrame, subjects: Mapping[str, SubjectInfo], block_shape: Sequence[int],
               output: str | Path) -> DataFrame:
    """Assemble each subject's FA and MD maps from its blocks and write them as NIfTI.

    Writes ``<output>/subjects/<subject>/fa.nii.gz`` and ``md.nii.gz`` (float64, the
    subject's affine, zero outside the mask). Returns one summary row per subject.
    """
    shapes = {s: info.shape for s, info in subjects.items()}
    affines = {s: info.affine for s, info in subjects.items()}
    block_shape = list(block_shape)
    output = str(output)

    def run(group: pd.DataFrame) -> pd.DataFrame:
        subject = str(group["subject"].iloc[0])
        block_of = _block_lookup(shapes, block_shape)
        fa, md = ([tensor.decode(v) for v in group[name]] for name in ("fa", "md"))
        maps = pipeline.assemble_maps(shapes[subject], ((block_of(subject, int(b)), tensor.decode(m),
                                                         VoxelTensors(f, d, _NO_EVALS))
                                                        for b, m, f, d in zip(group["block"], group["mask"], fa, md)),
                                      with_evals=False)
        pipeline.write_maps(output, subject, maps.fa, maps.md, affines[subject])
        fa_all, md_all = np.concatenate(fa), np.concatenate(md)
        return _frame([{"subject": subject, "n_voxels": len(fa_all), "fa_mean": float(fa_all.mean()),
                        "md_mean": float(md_all.mean()), **_preview_values("fa", maps.fa)}], MAPS_SCHEMA)

    placed = place_groups(fits, ["subject"], [(name,) for name in shapes], len(shapes))
    return placed.groupBy(PLACE_COLUMN, "subject").applyInPandas(run, MAPS_SCHEMA)


def voxel_rows(fits: DataFrame, subjects: Mapping[str, SubjectInfo], block_shape: Sequence[int]) -> DataFrame:
    """One row per masked voxel (:data:`VOXEL_SCHEMA`), built as Arrow columns (no per-voxel objects)."""
    shapes = {s: info.shape for s, info in subjects.items()}
    block_shape = list(block_shape)

    def run(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        block_of = _block_lookup(shapes, block_shape)
        for batch in batches:
            for row in batch.to_pandas().itertuples(index=False):
                yield _voxel_batch(row.subject, block_of(row.subject, int(row.block)), tensor.decode(row.mask),
                                   VoxelTensors(tensor.decode(row.fa), tensor.decode(row.md),
                                                tensor.decode(row.evals)))

    return fits.mapInArrow(run, VOXEL_SCHEMA)


_VOXEL_NAMES = VOXEL_SCHEMA.fieldNames()


def _voxel_batch(subject: str, block: Block, mask: np.ndarray, fit: VoxelTensors) -> pa.RecordBatch:
    """The rows of :data:`VOXEL_SCHEMA` of one fitted block, built as Arrow columns (no per-voxel objects)."""
    ijk = (np.argwhere(mask) + np.asarray(block.start)).astype(np.int32)
    evals = np.asarray(fit.evals).astype(np.float64).reshape(-1, 3)
    offsets = pa.array(np.arange(0, 3 * len(ijk) + 1, 3, dtype=np.int32))
    return pa.RecordBatch.from_arrays([
        pa.array([subject] * len(ijk), pa.string()), pa.array(ijk[:, 0]), pa.array(ijk[:, 1]),
        pa.array(ijk[:, 2]), pa.array(np.asarray(fit.fa).astype(np.float64)),
        pa.array(np.asarray(fit.md).astype(np.float64)),
        pa.ListArray.from_arrays(offsets, pa.array(evals.ravel()))], names=_VOXEL_NAMES)


def write_denoised(spark: Any, subjects: Mapping[str, SubjectInfo], parts: str | Path, output: str | Path) -> int:
    """Stream each subject's saved denoised volumes into ``<output>/subjects/<subject>/denoised.nii.gz``.

    One task per subject reads its parts in volume order (one volume in
    memory) and removes them. Returns the number of files written.
    """
    info = {s: (i.shape, i.dtype, i.affine) for s, i in subjects.items()}
    parts, output = str(parts), str(output)

    def run(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            for subject in batch["subject"]:
                shape, dtype, affine = info[subject]
                folder = subject_dir(parts, subject)
                files = (np.load(folder / f"{v:05d}.npy") for v in range(shape[3]))
                pipeline.write_denoised(output, subject, files, shape, dtype, affine)
                shutil.rmtree(folder)
                yield pd.DataFrame({"subject": [subject]})

    names = sorted(subjects)
    rows = spark.sparkContext.parallelize([(s,) for s in names], numSlices=max(1, len(names)))
    return spark.createDataFrame(rows, "subject string").mapInPandas(run, "subject string").count()


# ----------------------------------------------------------------------------- the job's stages, each sized here

TASK_VOXELS = 2_000_000
"""Voxels (volume voxels x volumes) worth a Spark task of their own: about a second of non-local means."""


def volumes_per_task(subjects: Iterable[Any], parallelism: int) -> int:
    """Default volumes per denoising task: one for large volumes, several small ones otherwise.

    A task costs a few tens of milliseconds however small its work, so small
    volumes (dipy's samples, low-resolution scans) are denoised several to a
    task, but never so many that fewer than four tasks per core remain to
    balance the load. A task always holds one volume at a time. ``subjects``
    have a 4-D ``shape`` (e.g. :class:`SubjectInfo`).
    """
    subjects = list(subjects)
    n_volumes = sum(s.shape[3] for s in subjects)
    voxels = min(math.prod(s.shape[:3]) for s in subjects)
    by_work = math.ceil(TASK_VOXELS / max(1, voxels))
    by_balance = max(1, n_volumes // (4 * max(1, parallelism)))
    return max(1, min(by_work, by_balance))


def denoise_tasks(subjects: Iterable[SubjectInfo], parallelism: int, per_task: int | None = None) -> int:
    """The number of denoising tasks for ``subjects``.

    ``per_task`` volumes each, or by default :func:`volumes_per_task` rounded
    up to a whole number of waves over the cores (range partitioning evens
    the runs out).
    """
    subjects = list(subjects)
    n_volumes = sum(s.shape[3] for s in subjects)
    if per_task:
        return math.ceil(n_volumes / per_task)
    n_tasks = math.ceil(n_volumes / volumes_per_task(subjects, parallelism))
    return min(n_volumes, math.ceil(n_tasks / parallelism) * parallelism)


def _n_blocks(shape: Sequence[int], block_shape: Sequence[int]) -> int:
    return math.prod(-(-n // b) for n, b in zip(shape[:3], block_shape))


def read(spark: SparkSession, listed: Sequence[nifti.SubjectFiles]) -> tuple[DataFrame, DataFrame, int]:
    """Read the listed subjects' volumes on the executors (:func:`scilens.io.nifti.read_volumes`).

    Returns the volume rows (cached on local disk), the rejected files, and
    the number of volumes read.
    """
    paths = paths_frame(spark, [s["path"] for s in listed],
                        {key: [s[key] for s in listed] for key in ("subject", "bval_path", "bvec_path")})
    # Volume rows (MBs each) travel one per Arrow batch and sit one per cached batch:
    # memory per task is one volume.
    with cached_batch_rows(spark, 1), arrow_batch_bytes(spark, ARROW_BATCH_BUDGET):
        volumes, rejected = nifti.read_volumes(spark, paths)
        return volumes, rejected, volumes.count()


def segment(spark: SparkSession, volumes: DataFrame, listed: Sequence[nifti.SubjectFiles],
            config: NeuroConfig, output: str | Path) -> tuple[dict[str, SubjectInfo], dict[str, np.ndarray],
                                                              list[dict[str, Any]]]:
    """Segment every subject (:func:`b0_partials`, :func:`segment_subjects`), writing their masks.

    Returns, on the driver, the segmented subjects, their brain masks and
    the rejected records (dicts of :data:`~scilens.core.quarantine.REJECTED_TYPE`).
    """
    gradient_files = {s["subject"]: (s["bval_path"], s["bvec_path"]) for s in listed}
    n_tasks = min(len(listed), 4 * spark.sparkContext.defaultParallelism)
    with arrow_batch_bytes(spark, ARROW_BATCH_BUDGET):
        partials = b0_partials(volumes, config.b0_threshold)
        rows = segment_subjects(partials, list(gradient_files), config.b0_threshold, config.segment,
                                output, n_tasks, gradient_files).collect()
    bad = [r[REJECTED_COLUMN].asDict() for r in rows if r[REJECTED_COLUMN] is not None]
    good = [r.asDict() for r in rows if r[REJECTED_COLUMN] is None]
    return ({r["subject"]: SubjectInfo.from_row(r) for r in good},
            {r["subject"]: tensor.decode(r["mask"]) for r in good}, bad)


def denoise(spark: SparkSession, volumes: DataFrame, subjects: Mapping[str, SubjectInfo],
            masks: Mapping[str, np.ndarray], config: NeuroConfig,
            denoised_parts: str | None = None) -> tuple[DataFrame, DataFrame, dict[str, int]]:
    """Denoise every volume of ``subjects`` (:func:`denoise_pieces`) into voxel-block pieces on local disk.

    Returns the pieces, the rejected records (a frame) and the step's counts
    (volumes, tasks, pieces).
    """
    parallelism = spark.sparkContext.defaultParallelism
    n_volumes = sum(s.shape[3] for s in subjects.values())
    n_tasks = denoise_tasks(subjects.values(), parallelism, config.volumes_per_task)
    # Masks are 1 byte a voxel (0.3 % of an HCP subject): every denoising task gets them all.
    shared = spark.sparkContext.broadcast(dict(masks))
    with arrow_batch_bytes(spark, ARROW_BATCH_BUDGET):
        raw = denoise_pieces(volumes, shared, n_tasks, config.denoise, config.block_shape, denoised_parts)
        # The denoised subjects, as large as the inputs: on local disk, not in the JVM heap.
        pieces, rejected = split_rejected(raw, on={"subject": "record"}, storage=StorageLevel.DISK_ONLY)
        counts = {"volumes": n_volumes, "tasks": n_tasks, "pieces": pieces.count()}
    shared.unpersist()
    return pieces, rejected, counts


def fit(spark: SparkSession, pieces: DataFrame, subjects: Mapping[str, SubjectInfo],
        config: NeuroConfig) -> tuple[DataFrame, DataFrame, dict[str, int]]:
    """Fit the tensor per voxel block (:func:`fit_blocks`); batches of at most ``arrow_batch_mb`` of block rows.

    Returns the fits, the rejected records (a frame) and the step's counts (blocks, partitions).
    """
    parallelism = spark.sparkContext.defaultParallelism
    item = max(np.dtype(s.dtype).itemsize for s in subjects.values())
    n_blocks = sum(_n_blocks(s.shape, config.block_shape) for s in subjects.values())
    n_fit = config.fit_partitions or max(1, min(n_blocks, 4 * parallelism))
    with arrow_batch_bytes(spark, math.prod(config.block_shape) * item, config.arrow_batch_mb * 2**20):
        raw = fit_blocks(pieces, subjects, config.b0_threshold, config.fit, n_fit)
        fits, rejected = split_rejected(raw, on={"subject": "record"})
        return fits, rejected, {"blocks": fits.count(), "partitions": n_fit}


def maps(spark: SparkSession, fits: DataFrame, subjects: Mapping[str, SubjectInfo], config: NeuroConfig,
         output: Path) -> dict[str, dict[str, Any]]:
    """Write every subject's FA/MD maps (:func:`write_maps`) and ``voxels.parquet`` (:func:`voxel_rows`).

    Returns each written subject's summary row (``n_voxels``, ``fa_mean``, ``md_mean``, FA previews).
    """
    # A block row holds a block's masked voxels' fa, md, three eigenvalues and mask: at most 48 bytes a voxel.
    with arrow_batch_bytes(spark, math.prod(config.block_shape) * 48, config.arrow_batch_mb * 2**20):
        summaries = {r["subject"]: r.asDict() for r in write_maps(fits, subjects, config.block_shape, output).collect()}
        voxel_rows(fits, subjects, config.block_shape).write.parquet(str(output / "voxels.parquet"))
    return summaries


# ----------------------------------------------------------------------------- whole subjects, one task each
#
# When there are at least as many subjects as cores, the cheapest cut is no cut: each task runs one
# subject's whole chain with the same kernels, in the same pieces, as the stages above (so the bits are
# the same), but with no shuffle, no cache and no Arrow transfer of volumes between steps, and writes
# its own outputs. The stages above remain for subjects fewer than the cores or too large for one task.

SUBJECT_CHAIN_SCHEMA = with_rejected_field(T.StructType(
    [f for f in SUBJECT_SCHEMA.fields if f.name != "mask"]
    + [f for f in MAPS_SCHEMA.fields if f.name != "subject"]))
"""One row per subject run whole: what :class:`SubjectInfo` and the maps' summary keep, or ``_rejected``."""

VOXEL_ARROW_SCHEMA = pa.schema([
    pa.field("subject", pa.string(), False), pa.field("i", pa.int32(), False), pa.field("j", pa.int32(), False),
    pa.field("k", pa.int32(), False), pa.field("fa", pa.float64(), False), pa.field("md", pa.float64(), False),
    pa.field("eigenvalues", pa.list_(pa.field("element", pa.float64(), False)), False)])
""":data:`VOXEL_SCHEMA` as the subject tasks write it themselves (the columns Spark's writer gives)."""


def subject_bytes(listed: Sequence[nifti.SubjectFiles]) -> dict[str, int | None]:
    """Each subject's 4-D image size as stored (bytes), from its NIfTI header read once on the driver.

    None where the driver cannot read the header (a remote path, a broken file): the executors'
    reader then decides, and rejects a broken file naming it.
    """
    import nibabel as nib

    sizes: dict[str, int | None] = {}
    for s in listed:
        try:
            img = cast(nib.Nifti1Image, nib.load(str(s["path"])))
            sizes[s["subject"]] = math.prod(int(n) for n in img.shape) * int(img.get_data_dtype().itemsize)
        except Exception:
            sizes[s["subject"]] = None
    return sizes


@dataclass(frozen=True)
class Cut:
    """How a run's subjects are cut into Spark tasks (:func:`choose_granularity`)."""

    mode: str
    """``"subject"`` (a subject's whole chain per task) or ``"volume"`` (the volume-level stages)."""
    threads: int
    """Threads a subject task denoises volumes and fits blocks with (dipy's kernels release the GIL;
    each volume and block is computed alone, so the bits do not depend on it)."""
    reason: str


def choose_granularity(sizes: Mapping[str, int | None], parallelism: int, config: NeuroConfig,
                       executor_cores: int | None = None, worker_mb: float | None = None) -> Cut:
    """How to cut ``sizes``' subjects (name -> 4-D image bytes as stored, None if unknown) into tasks.

    Subject tasks when every subject fits the budget (``subject_task_mb``, and a third of ``worker_mb``,
    the Python worker memory cap, when set) and the subjects can fill the ``parallelism`` cores: at least
    as many subjects as cores (one thread each), or fewer subjects each given the idle cores as threads,
    at most ``executor_cores`` (default ``parallelism``, as in local mode) per task. Otherwise the volume
    stages, which spread a subject over the whole cluster. ``config.granularity`` overrides.
    """
    n = len(sizes)
    cores = max(1, executor_cores or parallelism)
    threads = max(1, min(cores, parallelism // max(1, n)))
    if config.granularity != "auto":
        return Cut(config.granularity, threads, f"granularity={config.granularity} in the config")
    known = [b for b in sizes.values() if b is not None]
    if len(known) < n:
        return Cut("volume", 1, f"{n - len(known)} subject header(s) not readable on the driver")
    budget_mb = float(config.subject_task_mb) if worker_mb is None else min(config.subject_task_mb, worker_mb / 3)
    if max(known) > budget_mb * 2**20:
        return Cut("volume", 1, f"the largest subject is {max(known) / 2**20:.0f} MiB, past the {budget_mb:.0f} "
                                f"MiB a subject task may hold (subject_task_mb, a third of the Python worker cap)")
    if n * threads < parallelism:
        return Cut("volume", 1, f"{n} subject(s) at {threads} thread(s) each cannot fill {parallelism} cores")
    return Cut("subject", threads, f"{n} subject(s) for {parallelism} cores, the largest {max(known) / 2**20:.0f} "
                                   f"MiB: one task per subject, {threads} thread(s) each, no shuffle")


def _chain_subject(row: Any, config: NeuroConfig, output: str, voxels_dir: str, threads: int = 1) -> pd.DataFrame:
    """Run one subject's chain (the stages' kernels, in their pieces) and write its outputs; a one-row frame."""
    schema = SUBJECT_CHAIN_SCHEMA
    subject, path = str(row.subject), str(row.path)
    files = (row.bval_path, row.bvec_path) if isinstance(row.bval_path, str) and isinstance(row.bvec_path, str) \
        else None
    step = "read_nifti"
    try:
        rows = list(nifti.volume_rows(path, subject, gradient_files=files))
        volumes = deque(tensor.decode(r["data"]) for r in rows)
        dtype, affine = volumes[0].dtype, tensor.decode(rows[0]["affine"])
        step = "segment"
        bvals, bvecs = gradient_arrays([r["bval"] for r in rows], [r["bvec"] for r in rows])
        is_b0 = b0_volumes(bvals, config.b0_threshold)
        part = pipeline.B0Partial()
        for v, volume in enumerate(volumes):
            part.add(v, volume, bvals[v], bvecs[v], bool(is_b0[v]))
        seg = pipeline.segment([part], len(volumes), config.b0_threshold, config.segment, files or (None, None))
        pipeline.write_mask(output, subject, seg.mask, affine)
        step = "denoise"
        blocks = pipeline.mask_blocks(seg.mask, config.block_shape)
        pieces: list[list[np.ndarray]] = [[] for _ in blocks]
        denoised_volumes = []
        with ThreadPoolExecutor(threads) as pool:
            # A raw volume is dropped once denoised; in volume order, a few volumes ahead.
            for denoised in _ordered_map(pool, lambda v: denoise_volume(v, seg.mask, config.denoise).data,
                                         volumes, 2 * threads):
                for held, (_, block, block_mask) in zip(pieces, blocks):
                    held.append(denoised[block.slices][block_mask])
                if config.write_denoised:
                    denoised_volumes.append(denoised)
            step = "fit"
            gtab = make_gradient_table(seg.bvals, seg.bvecs, config.b0_threshold)
            fitted = pool.map(lambda held: fit_tensors(np.stack(held, axis=1), gtab, config.fit), pieces)
            fits = [(block, block_mask, fit) for fit, (_, block, block_mask) in zip(fitted, blocks)]
        shape = (*seg.mask.shape, len(rows))
        maps = pipeline.assemble_maps(shape, fits, with_evals=False)
        pipeline.write_maps(output, subject, maps.fa, maps.md, affine)
        if config.write_denoised:
            pipeline.write_denoised(output, subject, denoised_volumes, shape, dtype, affine)
        _write_voxels(voxels_dir, subject, [_voxel_batch(subject, b, m, f) for b, m, f in fits])
        fa_all = np.concatenate([f.fa for _, _, f in fits])
        md_all = np.concatenate([f.md for _, _, f in fits])
        return _frame([{
            "subject": subject, "path": path, "n_volumes": len(rows), "dtype": dtype.str,
            "shape": list(shape), "affine": rows[0]["affine"], "bvals": tensor.encode(seg.bvals),
            "bvecs": tensor.encode(seg.bvecs), "n_b0": seg.n_b0, "n_mask_voxels": int(seg.mask.sum()),
            **_preview_values("mean_b0", seg.mean_b0), **_preview_values("mask", seg.mask.astype(np.uint8)),
            "n_voxels": len(fa_all), "fa_mean": float(fa_all.mean()), "md_mean": float(md_all.mean()),
            **_preview_values("fa", maps.fa)}], schema)
    except Exception as exc:
        shutil.rmtree(subject_dir(output, subject), ignore_errors=True)  # a rejected subject leaves nothing
        return _rejected_frame(schema, path, step, exc, subject)


def _ordered_map(pool: ThreadPoolExecutor, fn: Callable[[Any], Any], items: deque, ahead: int) -> Iterator[Any]:
    """``fn`` of each item, taken off ``items`` in order, at most ``ahead`` submitted and not yet yielded."""
    pending: deque = deque()
    while items or pending:
        while items and len(pending) < ahead:
            pending.append(pool.submit(fn, items.popleft()))
        yield pending.popleft().result()


def _write_voxels(folder: str, subject: str, batches: Sequence[pa.RecordBatch]) -> None:
    # Named by a digest of the subject, never by the subject itself: a name cannot escape the folder.
    name = f"part-{hashlib.sha1(subject.encode()).hexdigest()[:16]}.parquet"
    table = pa.Table.from_batches(batches, schema=batches[0].schema).cast(VOXEL_ARROW_SCHEMA)
    tmp = Path(folder) / f".{name}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, Path(folder) / name)  # a retried task replaces the file whole


def subject_chains(spark: SparkSession, listed: Sequence[nifti.SubjectFiles], sizes: Mapping[str, int | None],
                   config: NeuroConfig, output: Path, threads: int = 1
                   ) -> tuple[dict[str, SubjectInfo], dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Run each listed subject's whole chain in a task of its own (largest first), writing its outputs.

    Writes what the volume stages write: ``subjects/<subject>/`` (mask, FA, MD and, with
    ``write_denoised``, the denoised image) and one Parquet file per subject in
    ``voxels.parquet/``, denoising and fitting with ``threads`` threads per task. Returns the subjects,
    their maps' summaries and the rejected records.
    """
    voxels_dir = output / "voxels.parquet"
    voxels_dir.mkdir(parents=True, exist_ok=True)
    # One subject per partition, largest first: the scheduler starts tasks in partition order.
    order = sorted(listed, key=lambda s: -(sizes.get(s["subject"]) or 0))
    rows = spark.sparkContext.parallelize([(s["subject"], s["path"], s["bval_path"], s["bvec_path"]) for s in order],
                                          numSlices=len(order))
    frame = spark.createDataFrame(rows, "subject string, path string, bval_path string, bvec_path string")
    out, folder = str(output), str(voxels_dir)

    def run(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            for row in batch.itertuples(index=False):
                yield _chain_subject(row, config, out, folder, threads)

    with arrow_batch_bytes(spark, ARROW_BATCH_BUDGET):
        result = frame.mapInPandas(run, SUBJECT_CHAIN_SCHEMA).collect()
    bad = [r[REJECTED_COLUMN].asDict() for r in result if r[REJECTED_COLUMN] is not None]
    good = [r.asDict() for r in result if r[REJECTED_COLUMN] is None]
    if not good:
        shutil.rmtree(voxels_dir, ignore_errors=True)
    summary_names = set(MAPS_SCHEMA.fieldNames())
    return ({r["subject"]: SubjectInfo.from_row(r) for r in good},
            {r["subject"]: {k: v for k, v in r.items() if k in summary_names} for r in good}, bad)


def worker_limits(spark: SparkSession) -> tuple[int | None, float | None]:
    """``(executor cores, Python worker memory MiB)`` as the session's conf sets them (None: not set / local)."""
    conf = spark.sparkContext.getConf()
    local = (conf.get("spark.master") or "local").startswith("local")
    executor_cores = conf.get("spark.executor.cores")
    cores = None if local or executor_cores is None else int(executor_cores)
    text = (conf.get("spark.executor.pyspark.memory") or "").strip().lower()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)b?", text)
    if not match:
        return cores, None
    scale = {"k": 1 / 1024, "": 1, "m": 1, "g": 1024, "t": 1024**2}[match.group(2)]  # Spark's unit: MiB
    return cores, float(match.group(1)) * scale
