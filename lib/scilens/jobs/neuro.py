"""``scilens neuro``: the diffusion-MRI pipeline (segmentation, denoising, tensor fit) on many subjects.

Input: a 4-D NIfTI with FSL ``.bval``/``.bvec`` side files, a directory of
them, or a subject manifest CSV (``subject,nifti,bval,bvec``).

Outputs, under ``--output``:

* ``subjects/<subject>/mask.nii.gz``, ``fa.nii.gz``, ``md.nii.gz`` (the input's affine)
  and, with ``write_denoised``, ``denoised.nii.gz``; ``subjects/<subject>/report.png``;
* ``voxels.parquet`` -- one row per voxel in a mask: subject, i, j, k, fa, md, eigenvalues;
* ``report.html``, ``manifest.json`` and ``_rejected/`` (subjects that failed, and why).

Per-subject files sit under ``subjects/`` so that no subject name (``voxels.parquet``,
``manifest.json``, ...) can collide with a run-level output.

The science and its parameters are those of the benchmark's reference script
(``bench/reference/neuro_ref.py``); see :mod:`scilens.neuro` for how the
steps are split across Spark tasks without changing results.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pyspark import StorageLevel

from scilens.core.config import field
from scilens.core.inputs import InputError, list_files, paths_frame
from scilens.core.job import Job, JobConfig, JobContext
from scilens.core.quarantine import REJECTED_COLUMN, REJECTED_TYPE, rejection, split_rejected
from scilens.core.session import ARROW_BATCH_BUDGET, arrow_batch_bytes, cached_batch_rows
from scilens.io import nifti
from scilens.neuro.denoise import DenoiseConfig
from scilens.neuro.dti import TensorFitConfig
from scilens.neuro.segment import SegmentConfig


@dataclass
class NeuroConfig(JobConfig):
    """Config of ``scilens neuro``."""

    # Every number is bounded: a value past these is a typo, and must fail here, not in a task minutes later.
    b0_threshold: float = field(10.0, "b-value (s/mm²) at or below which a volume is a b0 volume "
                                "(reference: 10).", min=0, max=1000)
    segment: SegmentConfig = field(SegmentConfig(), "Brain mask by median_otsu on the mean b0 image.")
    denoise: DenoiseConfig = field(DenoiseConfig(), "Non-local means denoising of each volume.")
    fit: TensorFitConfig = field(TensorFitConfig(), "Diffusion tensor model.")
    block_shape: list[int] = field([32, 32, 32], "Voxel block (i, j, k) the tensor fit runs on; each block "
                                   "carries every volume, so a fit task holds block voxels x volumes values "
                                   "(plus dipy's float64 work arrays): smaller blocks for tight memory, larger "
                                   "for fewer tasks.", min=1, max=1024, check=lambda v: len(v) == 3,
                                   check_doc="three sizes, one per voxel axis")
    volumes_per_task: int | None = field(None, "Volumes denoised per Spark task, one after another (null: one "
                                         "when a volume has 2M voxels or more, else enough small volumes to "
                                         "make that much work, keeping at least four tasks per core).", min=1,
                                         max=100_000)
    fit_partitions: int | None = field(None, "Partitions of the tensor-fit stage (null: four per core, at "
                                       "most one per block).", min=1, max=100_000)
    write_denoised: bool = field(False, "Also write subjects/<subject>/denoised.nii.gz (as large as the input).")
    report: bool = field(True, "Write report.html and subjects/<subject>/report.png.")
    arrow_batch_mb: int = field(64, "Upper bound on one Arrow batch of voxel-block rows, MiB (volume rows "
                                "always travel one per batch).", min=1, max=1024)


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


def read_manifest(path: str) -> tuple[list[dict[str, str | None]], list[dict[str, str]]]:
    """Subjects of a manifest CSV (:data:`scilens.io.nifti.MANIFEST_COLUMNS`), quarantining bad lines.

    A line with an empty field, more fields than the header, a subject listed
    on an earlier line or a name that cannot name a directory is rejected,
    naming the manifest, the line and the problem; the other lines go on.
    Relative paths are relative to the manifest's directory. Raises
    :class:`InputError` when the file as a whole is not a manifest
    (unreadable, a required column missing).
    """
    base = os.path.dirname(os.path.abspath(path))
    subjects: list[dict[str, str | None]] = []
    rejected: list[dict[str, str]] = []
    seen: dict[str, int] = {}
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            header = [c.strip() for c in reader.fieldnames or []]
            missing = [c for c in nifti.MANIFEST_COLUMNS if c not in header]
            if missing:
                raise InputError(f"{path}: subject manifest lacks column(s) {', '.join(missing)}; "
                                 f"expected a header line {','.join(nifti.MANIFEST_COLUMNS)}")
            for row in reader:
                number = reader.line_num
                line = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
                empty = [c for c in nifti.MANIFEST_COLUMNS if not line.get(c)]
                subject = line.get("subject", "")
                if empty:
                    problem = f"empty {', '.join(empty)}"
                elif row.get(None):
                    problem = f"{len(header) + len(row[None])} fields for the header's {len(header)}"
                elif subject in seen:
                    problem = f"subject {subject!r} is already on line {seen[subject]}"
                else:
                    problem = subject_name_problem(subject)
                if problem:
                    rejected.append(rejection(path, "list subjects", f"{path} line {number}: {problem}",
                                              record=subject or f"line {number}"))
                    continue
                seen[subject] = number
                subjects.append({"subject": subject, **{key: os.path.join(base, line[col]) for key, col in
                                                        (("path", "nifti"), ("bval_path", "bval"),
                                                         ("bvec_path", "bvec"))}})
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read subject manifest ({exc})") from None
    if not subjects and not rejected:
        raise InputError(f"{path}: subject manifest lists no subjects")
    return subjects, rejected


def resolve_subjects(inputs: list[str], list_inputs: Callable[[Sequence[str], Sequence[str]], list[str]] | None = None
                     ) -> tuple[list[dict[str, str | None]], list[dict[str, str]]]:
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
    subjects: list[dict[str, str | None]] = []
    rejected: list[dict[str, str]] = []
    for item in inputs:
        if item.lower().endswith(".csv") and os.path.isfile(item):
            listed, bad = read_manifest(item)
            subjects += listed
            rejected += bad
            continue
        paths = (list_inputs(nifti.NIFTI_SUFFIXES, [item]) if list_inputs is not None
                 else list_files(item, nifti.NIFTI_SUFFIXES))
        for path in paths:
            subject = nifti.subject_name(path)
            problem = subject_name_problem(subject)
            if problem:
                rejected.append(rejection(path, "list subjects", problem, record=subject))
                continue
            side = nifti.find_gradient_files(path)
            if side is None and path.lower().endswith(nifti.NIFTI_SUFFIXES):
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
        seen[str(s["subject"])] = str(s["path"])
    return subjects, rejected


class NeuroJob(Job):
    name = "neuro"
    summary = ("Diffusion MRI per subject: brain mask (median_otsu), non-local means denoising, "
               "tensor fit -> mask/FA/MD NIfTI maps and a voxel table.")
    config_class = NeuroConfig

    def run(self, ctx: JobContext) -> int:
        from scilens.core import tensor
        from scilens.neuro import stages

        config: NeuroConfig = ctx.config
        spark = ctx.spark
        out = ctx.output
        with ctx.step("list subjects") as step:
            listed, missing = resolve_subjects(ctx.inputs, ctx.list_inputs)
            ctx.reject_records(missing)
            step.counts.update(subjects=len(listed), rejected=len(missing))
        if not listed:
            return 0
        parallelism = spark.sparkContext.defaultParallelism
        block_budget = config.arrow_batch_mb * 2**20

        with ctx.step("read volumes") as step:
            paths = paths_frame(spark, [s["path"] for s in listed],
                                {key: [s[key] for s in listed] for key in ("subject", "bval_path", "bvec_path")})
            # Volume rows (MBs each) travel one per Arrow batch and sit one per cached batch:
            # memory per task is one volume.
            with cached_batch_rows(spark, 1), arrow_batch_bytes(spark, ARROW_BATCH_BUDGET):
                volumes, rejected = nifti.read_volumes(spark, paths)
                ctx.reject(rejected)
                step.counts["volumes"] = volumes.count()

        with ctx.step("segment") as step:
            with arrow_batch_bytes(spark, ARROW_BATCH_BUDGET):
                partials = stages.b0_partials(volumes, config.b0_threshold)
                gradient_files = {str(s["subject"]): (s["bval_path"], s["bvec_path"]) for s in listed}
                rows = stages.segment_subjects(partials, list(gradient_files), config.b0_threshold, config.segment,
                                               out, min(len(listed), 4 * parallelism), gradient_files).collect()
            bad = [r[REJECTED_COLUMN].asDict() for r in rows if r[REJECTED_COLUMN] is not None]
            if bad:
                ctx.reject(spark.createDataFrame(bad, REJECTED_TYPE))
            good = [r.asDict() for r in rows if r[REJECTED_COLUMN] is None]
            subjects = {r["subject"]: stages.SubjectInfo.from_row(r) for r in good}
            # Masks are 1 byte a voxel (0.3 % of an HCP subject): every denoising task gets them all.
            masks = spark.sparkContext.broadcast({r["subject"]: tensor.decode(r["mask"]) for r in good})
            step.counts.update(subjects=len(subjects), rejected=len(bad),
                               b0_volumes=sum(s.n_b0 for s in subjects.values()),
                               mask_voxels=sum(s.n_mask_voxels for s in subjects.values()))
        if not subjects:
            return 0

        n_volumes = sum(s.shape[3] for s in subjects.values())
        if config.volumes_per_task:
            n_tasks = math.ceil(n_volumes / config.volumes_per_task)
        else:  # a whole number of waves over the cores; range partitioning evens the runs out
            n_tasks = math.ceil(n_volumes / volumes_per_task(subjects.values(), parallelism))
            n_tasks = min(n_volumes, math.ceil(n_tasks / parallelism) * parallelism)
        parts_dir = out / ".denoised-parts"
        with ctx.step("denoise") as step:
            with arrow_batch_bytes(spark, ARROW_BATCH_BUDGET):
                raw = stages.denoise_pieces(volumes, masks, n_tasks, config.denoise, config.block_shape,
                                            str(parts_dir) if config.write_denoised else None)
                # The denoised subjects, as large as the inputs: on local disk, not in the JVM heap.
                pieces, rejected = split_rejected(raw, on={"subject": "record"}, storage=StorageLevel.DISK_ONLY)
                ctx.reject(rejected)
                step.counts.update(volumes=n_volumes, tasks=n_tasks, pieces=pieces.count())
        masks.unpersist()

        item = max(_itemsize(s.dtype) for s in subjects.values())
        with ctx.step("fit") as step:
            n_blocks = sum(_n_blocks(s.shape, config.block_shape) for s in subjects.values())
            n_fit = config.fit_partitions or max(1, min(n_blocks, 4 * parallelism))
            with arrow_batch_bytes(spark, math.prod(config.block_shape) * item, block_budget):
                raw_fits = stages.fit_blocks(pieces, subjects, config.b0_threshold, config.fit, n_fit)
                fits, rejected = split_rejected(raw_fits, on={"subject": "record"})
                ctx.reject(rejected)
                step.counts.update(blocks=fits.count(), partitions=n_fit)

        with ctx.step("write maps") as step:
            with arrow_batch_bytes(spark, math.prod(config.block_shape) * 48, block_budget):
                summaries = {r["subject"]: r.asDict() for r in
                             stages.write_maps(fits, subjects, config.block_shape, out).collect()}
                stages.voxel_rows(fits, subjects, config.block_shape).write.parquet(str(out / "voxels.parquet"))
            if config.write_denoised:
                step.counts["denoised"] = stages.write_denoised(spark, {s: subjects[s] for s in summaries},
                                                                parts_dir, out)
            shutil.rmtree(parts_dir, ignore_errors=True)
            for name in set(subjects) - set(summaries):  # rejected after segmentation: leave no partial output
                shutil.rmtree(stages.subject_dir(out, name), ignore_errors=True)
            step.counts.update(subjects=len(summaries), voxels=sum(int(s["n_voxels"]) for s in summaries.values()))

        if config.report:
            with ctx.step("report"):
                self._report(ctx, subjects, summaries)
        return len(summaries)

    @staticmethod
    def _report(ctx: JobContext, subjects: dict, summaries: dict) -> None:
        from scilens.core import tensor
        from scilens.neuro import report, stages

        rows = []
        for name in sorted(summaries):
            info, summary = subjects[name], summaries[name]
            fa = [tensor.decode(summary[f"fa_{view}"]) for view in stages.VIEWS]
            png = report.subject_figure(stages.subject_dir(ctx.output, name) / "report.png", name,
                                        info.previews["mean_b0"],
                                        info.previews["mask"], fa)
            rows.append({"subject": name, "volumes": info.shape[3], "b0": info.n_b0,
                         "mask_voxels": info.n_mask_voxels, "fa_mean": summary["fa_mean"],
                         "md_mean": summary["md_mean"], "png": str(png.relative_to(ctx.output))})
        rejected = []
        for frame in ctx.rejected:
            rejected += [r.asDict() for r in frame.coalesce(1).limit(100).collect()]
        steps = [(s.name, s.seconds, s.counts) for s in ctx.manifest.steps]
        report.write_html(ctx.output / "report.html", rows, rejected, steps)


TASK_VOXELS = 2_000_000
"""Voxels (volume voxels x volumes) worth a Spark task of their own: about a second of non-local means."""


def volumes_per_task(subjects, parallelism: int) -> int:
    """Default volumes per denoising task: one for large volumes, several small ones otherwise.

    A task costs a few tens of milliseconds however small its work, so small
    volumes (dipy's samples, low-resolution scans) are denoised several to a
    task, but never so many that fewer than four tasks per core remain to
    balance the load. A task always holds one volume at a time.
    """
    subjects = list(subjects)
    n_volumes = sum(s.shape[3] for s in subjects)
    voxels = min(math.prod(s.shape[:3]) for s in subjects)
    by_work = math.ceil(TASK_VOXELS / max(1, voxels))
    by_balance = max(1, n_volumes // (4 * max(1, parallelism)))
    return max(1, min(by_work, by_balance))


def _itemsize(dtype: str) -> int:
    import numpy as np

    return np.dtype(dtype).itemsize


def _n_blocks(shape: tuple[int, ...], block_shape: list[int]) -> int:
    return math.prod(-(-n // b) for n, b in zip(shape[:3], block_shape))


JOB = NeuroJob
