"""The Spark stages of the dMRI pipeline: thin Arrow layers over the kernels of :mod:`scilens.neuro`.

Data flow (one row per volume in, maps and voxel rows out)::

    volume rows ──mapInPandas──► per-subject b0 partial sums ──groupBy subject──► mask per subject
         │                                                                              │ broadcast
         └──range-partition by (subject, volume)──join──► denoise one volume per task ──┘
                 ──flatMap into voxel blocks──► groupBy (subject, block) ──► tensor fit per block
                 ──► FA/MD maps per subject (NIfTI) and one row per voxel (Parquet)

What a task holds: one volume (b0 sums, denoising), one mean b0 image and
mask (segmentation), one block of voxels with every volume (fit), one subject's
3-D maps (assembly); never a subject's 4-D array. Steps that may fail for a
subject emit ``_rejected`` rows naming it (:mod:`scilens.core.quarantine`).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from scilens.core import tensor
from scilens.core.chunking import Block, block_grid
from scilens.core.placement import PLACE_COLUMN, place_groups
from scilens.core.quarantine import REJECTED_COLUMN, rejection, with_rejected_field
from scilens.io.nifti import gradient_arrays, write_nifti, write_nifti_volumes
from scilens.neuro.denoise import DenoiseConfig, DenoiseTask
from scilens.neuro.dti import TensorFitConfig, TensorFitTask
from scilens.neuro.gradients import b0_volumes, make_gradient_table
from scilens.neuro.segment import B0Sum, SegmentConfig, SegmentTask

__all__ = [
    "FIT_SCHEMA",
    "PIECE_SCHEMA",
    "SUBJECTS_DIR",
    "SUBJECT_SCHEMA",
    "VOXEL_SCHEMA",
    "SubjectInfo",
    "b0_partials",
    "denoise_pieces",
    "fit_blocks",
    "mid_slices",
    "segment_subjects",
    "subject_dir",
    "voxel_rows",
    "write_denoised",
    "write_maps",
]

VIEWS = ("sagittal", "coronal", "axial")

SUBJECTS_DIR = "subjects"
"""Per-subject outputs live in ``<output>/subjects/<subject>/``: a subject's name can then never be
the name of a run-level output (``voxels.parquet``, ``report.html``, ``manifest.json``, ``_rejected``)."""


def subject_dir(output: str | Path, subject: str) -> Path:
    """``<output>/subjects/<subject>``, refusing a name that would lead anywhere else.

    The job refuses such names when it lists subjects; this is the last guard
    before anything is written (nothing may ever land outside the output).
    """
    parent = Path(output) / SUBJECTS_DIR
    if (not subject or subject in (".", "..") or "/" in subject or "\\" in subject or "\0" in subject
            or Path(subject).is_absolute()):
        raise ValueError(f"subject name {subject!r} cannot name an output directory")
    return parent / subject


def _previews(name: str) -> list[T.StructField]:
    return [tensor.tensor_field(f"{name}_{view}") for view in VIEWS]


def mid_slices(volume: np.ndarray) -> list[np.ndarray]:
    """The middle slice of a 3-D volume across each voxel axis (i, j, k): sagittal, coronal, axial."""
    return [np.take(volume, volume.shape[axis] // 2, axis=axis) for axis in range(3)]


def _preview_values(name: str, volume: np.ndarray) -> dict[str, Any]:
    return {f"{name}_{view}": tensor.encode(s) for view, s in zip(VIEWS, mid_slices(volume))}


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
        previews = {name: [tensor.decode(row[f"{name}_{view}"]) for view in VIEWS] for name in ("mean_b0", "mask")}
        return cls(row["subject"], row["path"], tuple(int(n) for n in row["shape"]), row["dtype"],
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

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        state: dict[str, dict[str, Any]] = {}
        for batch in batches:
            bvals, bvecs = gradient_arrays(list(batch["bval"]), list(batch["bvec"]))
            is_b0 = b0_volumes(bvals, b0_threshold)
            for n, row in enumerate(batch.itertuples(index=False)):
                volume = tensor.decode(row.data)
                s = state.setdefault(row.subject, {
                    "path": row.path, "n_volumes": int(row.n_volumes), "dtype": volume.dtype.str,
                    "affine": row.affine, "volumes": [], "bvals": [], "bvecs": [], "sum": B0Sum(), "nonfinite": []})
                s["volumes"].append(int(row.volume))
                s["bvals"].append(bvals[n])
                s["bvecs"].append(bvecs[n])
                if volume.dtype.kind == "f" and not np.isfinite(volume).all():
                    s["nonfinite"].append(int(row.volume))
                elif is_b0[n]:
                    s["sum"].add(volume)
        for subject, s in state.items():
            b0 = s["sum"]
            yield _frame([{
                "subject": subject, "path": s["path"], "n_volumes": s["n_volumes"], "dtype": s["dtype"],
                "affine": s["affine"], "volumes": tensor.encode(np.array(s["volumes"], dtype=np.int32)),
                "bvals": tensor.encode(np.array(s["bvals"])),
                "bvecs": tensor.encode(np.array(s["bvecs"]).reshape(-1, 3)),
                "b0_sum": None if b0.total is None else tensor.encode(b0.total), "n_b0": b0.count,
                "nonfinite": tensor.encode(np.array(s["nonfinite"], dtype=np.int32)),
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
    task = SegmentTask(config)
    output = str(output)
    gradient_files = dict(gradient_files or {})

    def run(group: pd.DataFrame) -> pd.DataFrame:
        first = group.iloc[0]
        subject, path = str(first["subject"]), str(first["path"])
        try:
            n_volumes = int(first["n_volumes"])
            volumes = np.concatenate([tensor.decode(v) for v in group["volumes"]])
            order = np.argsort(volumes, kind="stable")
            if not np.array_equal(volumes[order], np.arange(n_volumes)):
                raise ValueError(f"expected volumes 0..{n_volumes - 1}, got {len(volumes)} volumes")
            bvals = np.concatenate([tensor.decode(v) for v in group["bvals"]])[order]
            bvecs = np.concatenate([tensor.decode(v) for v in group["bvecs"]])[order]
            nonfinite = np.sort(np.concatenate([tensor.decode(v) for v in group["nonfinite"]]))
            if nonfinite.size:
                shown = ", ".join(map(str, nonfinite[:10])) + (" ..." if nonfinite.size > 10 else "")
                raise ValueError(f"volume(s) {shown} hold NaN or infinite values")
            # Fails early, naming what is wrong and where.
            make_gradient_table(bvals, bvecs, b0_threshold, *gradient_files.get(subject, (None, None)))
            total = B0Sum(dtype=np.dtype(first["dtype"]))
            for rec, count in zip(group["b0_sum"], group["n_b0"]):
                if rec is not None and count:
                    total.merge(B0Sum(tensor.decode(rec), int(count), np.dtype(first["dtype"])))
            mean_b0 = total.mean()
            mask = task.run(mean_b0)
            if not mask.any():
                raise ValueError("the brain mask is empty (median_otsu found no foreground)")
            affine = tensor.decode(first["affine"])
            write_nifti(subject_dir(output, subject) / "mask.nii.gz", mask.astype(np.uint8), affine)
            return _frame([{
                "subject": subject, "path": path, "n_volumes": n_volumes, "dtype": first["dtype"],
                "shape": [*mean_b0.shape, n_volumes], "affine": first["affine"],
                "bvals": tensor.encode(bvals), "bvecs": tensor.encode(bvecs), "mask": tensor.encode(mask),
                "n_b0": total.count, "n_mask_voxels": int(mask.sum()),
                **_preview_values("mean_b0", mean_b0), **_preview_values("mask", mask.astype(np.uint8)),
            }], schema)
        except Exception as exc:
            return _rejected_frame(schema, path, "segment", exc, subject)

    placed = place_groups(partials, ["subject"], [(name,) for name in subjects], n_partitions)
    return placed.groupBy(PLACE_COLUMN, "subject").applyInPandas(run, schema)


def _nonempty_blocks(mask: np.ndarray, block_shape: Sequence[int]) -> list[tuple[int, Block, np.ndarray]]:
    """(block id, block, block mask) of the blocks holding at least one masked voxel."""
    return [(bid, block, mask[block.slices]) for bid, block in enumerate(block_grid(mask.shape, block_shape))
            if mask[block.slices].any()]


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
    task = DenoiseTask(config)
    block_shape = list(block_shape)
    planned = (volumes.select("subject", "path", "volume", "data")
               .where(F.col("subject").isin(sorted(masks.value)))
               .repartitionByRange(max(1, n_tasks), "subject", "volume"))

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        blocks: dict[str, list] = {}
        for batch in batches:
            for row in batch.itertuples(index=False):
                try:
                    mask = masks.value[row.subject]
                    if row.subject not in blocks:
                        blocks[row.subject] = _nonempty_blocks(mask, block_shape)
                    denoised = task.run(tensor.decode(row.data), mask).data
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
    task = TensorFitTask(config)
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
            fit = task.run(signals, gtabs[subject])
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
        maps = {name: np.zeros(tuple(shapes[subject])[:3]) for name in ("fa", "md")}
        for row in group.itertuples(index=False):
            block, mask = block_of(subject, int(row.block)), tensor.decode(row.mask)
            for name in maps:
                maps[name][block.slices][mask] = tensor.decode(getattr(row, name))
        for name, data in maps.items():
            write_nifti(subject_dir(output, subject) / f"{name}.nii.gz", data, affines[subject])
        fa, md = (np.concatenate([tensor.decode(v) for v in group[name]]) for name in ("fa", "md"))
        return _frame([{"subject": subject, "n_voxels": len(fa), "fa_mean": float(fa.mean()),
                        "md_mean": float(md.mean()), **_preview_values("fa", maps["fa"])}], MAPS_SCHEMA)

    placed = place_groups(fits, ["subject"], [(name,) for name in shapes], len(shapes))
    return placed.groupBy(PLACE_COLUMN, "subject").applyInPandas(run, MAPS_SCHEMA)


def voxel_rows(fits: DataFrame, subjects: Mapping[str, SubjectInfo], block_shape: Sequence[int]) -> DataFrame:
    """One row per masked voxel (:data:`VOXEL_SCHEMA`), built as Arrow columns (no per-voxel objects)."""
    shapes = {s: info.shape for s, info in subjects.items()}
    block_shape = list(block_shape)
    names = VOXEL_SCHEMA.fieldNames()

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        block_of = _block_lookup(shapes, block_shape)
        for batch in batches:
            for row in batch.to_pandas().itertuples(index=False):
                block, mask = block_of(row.subject, int(row.block)), tensor.decode(row.mask)
                ijk = (np.argwhere(mask) + np.asarray(block.start)).astype(np.int32)
                evals = tensor.decode(row.evals).astype(np.float64).reshape(-1, 3)
                offsets = pa.array(np.arange(0, 3 * len(ijk) + 1, 3, dtype=np.int32))
                yield pa.RecordBatch.from_arrays([
                    pa.array([row.subject] * len(ijk), pa.string()), pa.array(ijk[:, 0]), pa.array(ijk[:, 1]),
                    pa.array(ijk[:, 2]), pa.array(tensor.decode(row.fa).astype(np.float64)),
                    pa.array(tensor.decode(row.md).astype(np.float64)),
                    pa.ListArray.from_arrays(offsets, pa.array(evals.ravel()))], names=names)

    return fits.mapInArrow(run, VOXEL_SCHEMA)


def write_denoised(spark: Any, subjects: Mapping[str, SubjectInfo], parts: str | Path, output: str | Path) -> int:
    """Stream each subject's saved denoised volumes into ``<output>/subjects/<subject>/denoised.nii.gz``.

    One task per subject reads its parts in volume order (one volume in
    memory) and removes them. Returns the number of files written.
    """
    info = {s: (i.shape, i.dtype, i.affine) for s, i in subjects.items()}
    parts, output = str(parts), str(output)

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            for subject in batch["subject"]:
                shape, dtype, affine = info[subject]
                folder = subject_dir(parts, subject)
                files = (np.load(folder / f"{v:05d}.npy") for v in range(shape[3]))
                write_nifti_volumes(subject_dir(output, subject) / "denoised.nii.gz", files, shape, dtype, affine)
                shutil.rmtree(folder)
                yield pd.DataFrame({"subject": [subject]})

    names = sorted(subjects)
    rows = spark.sparkContext.parallelize([(s,) for s in names], numSlices=max(1, len(names)))
    return spark.createDataFrame(rows, "subject string").mapInPandas(run, "subject string").count()
