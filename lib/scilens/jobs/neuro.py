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

import shutil
from typing import TYPE_CHECKING, Any

from scilens.core.job import Job, JobContext, log
from scilens.neuro.config import NeuroConfig

if TYPE_CHECKING:
    from scilens.io.nifti import SubjectFiles
    from scilens.neuro.stages import SubjectInfo

__all__ = ["JOB", "NeuroConfig", "NeuroJob"]


class NeuroJob(Job[NeuroConfig]):
    """``scilens neuro``: per-subject dMRI mask, denoising and tensor fit."""

    name = "neuro"
    summary = ("Diffusion MRI per subject: brain mask (median_otsu), non-local means denoising, "
               "tensor fit -> mask/FA/MD NIfTI maps and a voxel table.")
    config_class = NeuroConfig

    def run(self, ctx: JobContext[NeuroConfig]) -> int:
        """List the subjects of ``ctx``, then segment, denoise and fit them and write the maps and report."""
        from scilens.io import nifti
        from scilens.neuro import report, stages

        config = ctx.config
        spark = ctx.spark
        out = ctx.output
        with ctx.step("list subjects") as step:
            listed, missing = nifti.resolve_subjects(ctx.inputs, ctx.list_inputs)
            ctx.reject_records(missing)
            step.counts.update(subjects=len(listed), rejected=len(missing))
        if not listed:
            return 0

        with ctx.step("plan") as step:
            sizes = stages.subject_bytes(listed)
            cut = stages.choose_granularity(sizes, spark.sparkContext.defaultParallelism, config,
                                            *stages.worker_limits(spark))
            log.info("neuro: %s tasks: %s", cut.mode, cut.reason)
            step.counts.update(subjects=len(listed), mb=round(sum(b or 0 for b in sizes.values()) / 2**20))
        if cut.mode == "subject":
            with ctx.step("subject chains") as step:
                subjects, summaries, bad = stages.subject_chains(spark, listed, sizes, config, out, cut.threads)
                ctx.reject_records(bad)
                step.counts.update(subjects=len(summaries), rejected=len(bad), threads=cut.threads,
                                   volumes=sum(s.shape[3] for s in subjects.values()),
                                   voxels=sum(int(s["n_voxels"]) for s in summaries.values()))
        else:
            subjects, summaries = self._by_volume(ctx, listed)
        if not subjects:
            return 0

        if config.report:
            with ctx.step("report"):
                rejected_rows = [r.asDict() for frame in ctx.rejected for r in frame.coalesce(1).limit(100).collect()]
                report.write_run_report(out, subjects, summaries, rejected_rows,
                                        [(s.name, s.seconds, s.counts) for s in ctx.manifest.steps])
        return len(summaries)

    def _by_volume(self, ctx: JobContext[NeuroConfig], listed: list[SubjectFiles]
                   ) -> tuple[dict[str, SubjectInfo], dict[str, dict[str, Any]]]:
        """The volume-level stages: read, segment, denoise and fit as Spark stages of their own."""
        from scilens.neuro import pipeline, stages

        config, spark, out = ctx.config, ctx.spark, ctx.output
        with ctx.step("read volumes") as step:
            volumes, rejected, step.counts["volumes"] = stages.read(spark, listed)
            ctx.reject(rejected)

        with ctx.step("segment") as step:
            subjects, masks, bad = stages.segment(spark, volumes, listed, config, out)
            ctx.reject_records(bad)
            step.counts.update(subjects=len(subjects), rejected=len(bad),
                               b0_volumes=sum(s.n_b0 for s in subjects.values()),
                               mask_voxels=sum(s.n_mask_voxels for s in subjects.values()))
        if not subjects:
            return {}, {}

        parts_dir = out / ".denoised-parts"
        with ctx.step("denoise") as step:
            pieces, rejected, counts = stages.denoise(spark, volumes, subjects, masks, config,
                                                      str(parts_dir) if config.write_denoised else None)
            ctx.reject(rejected)
            step.counts.update(counts)

        with ctx.step("fit") as step:
            fits, rejected, counts = stages.fit(spark, pieces, subjects, config)
            ctx.reject(rejected)
            step.counts.update(counts)

        with ctx.step("write maps") as step:
            summaries = stages.maps(spark, fits, subjects, config, out)
            if config.write_denoised:
                step.counts["denoised"] = stages.write_denoised(spark, {s: subjects[s] for s in summaries},
                                                                parts_dir, out)
            shutil.rmtree(parts_dir, ignore_errors=True)
            for name in set(subjects) - set(summaries):  # rejected after segmentation: leave no partial output
                shutil.rmtree(pipeline.subject_dir(out, name), ignore_errors=True)
            step.counts.update(subjects=len(summaries), voxels=sum(int(s["n_voxels"]) for s in summaries.values()))

        return subjects, summaries


JOB = NeuroJob
