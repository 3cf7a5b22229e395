"""``scilens ingest``: NIfTI and FITS files -> Parquet tensor tables.

Outputs (each only if such inputs were found):

* ``<output>/volumes.parquet`` -- NIfTI, one row per 3-D volume (:data:`scilens.io.nifti.VOLUME_SCHEMA`);
* ``<output>/images.parquet`` -- FITS, one row per image (:data:`scilens.io.fits.IMAGE_SCHEMA`);
* ``<output>/_rejected/`` and ``<output>/manifest.json``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame

from scilens.core.config import field
from scilens.core.job import Job, JobConfig, JobContext
from scilens.core.session import cached_batch_rows
from scilens.io import fits as fits_io
from scilens.io import nifti


@dataclass
class IngestConfig(JobConfig):
    """Config of ``scilens ingest``."""

    formats: list[str] = field(["nifti", "fits"], "Which file kinds to ingest.", choices=("nifti", "fits"))
    fits: fits_io.FitsLayout = field(fits_io.FitsLayout(), "HDU layout of FITS inputs.")
    max_volume_mb: int = field(nifti.DEFAULT_MAX_VOLUME_MB,
                               "Largest 3-D NIfTI volume accepted, MiB in memory after scaling; a file whose "
                               "header claims more is rejected before any voxel is read (Spark holds no "
                               "value of 2 GiB or more).", min=1, max=2047)
    task_mb: int = field(nifti.DEFAULT_TASK_MB,
                         "NIfTI files smaller than this (MiB on disk) share a Spark task, about this much "
                         "per task; a larger file has a task of its own.", min=1, max=1 << 20)


def _write(ctx: JobContext, name: str, rows: DataFrame, rejected: DataFrame, count_name: str) -> int:
    with ctx.step(f"ingest {name}") as step:
        path = ctx.output / f"{name}.parquet"
        rows.write.mode("overwrite").parquet(str(path))
        written = ctx.spark.read.parquet(str(path))
        step.counts[count_name] = written.count()
        step.counts["files"] = written.select("path").distinct().count()
        ctx.reject(rejected)
        return step.counts["files"]


class IngestJob(Job[IngestConfig]):
    """``scilens ingest``: NIfTI and FITS images -> Parquet tensor tables."""

    name = "ingest"
    summary = "Read NIfTI (.nii, .nii.gz + .bval/.bvec) and FITS images into Parquet tensor tables."
    config_class = IngestConfig

    def run(self, ctx: JobContext[IngestConfig]) -> int:
        """Read every input of the configured formats and write its table(s)."""
        config = ctx.config
        suffixes = {"nifti": nifti.NIFTI_SUFFIXES, "fits": fits_io.FITS_SUFFIXES}
        wanted = tuple(s for kind in config.formats for s in suffixes[kind])
        with ctx.step("list inputs") as step:
            paths = ctx.list_inputs(wanted)  # an unlistable directory is rejected, not skipped
            by_kind = {kind: [p for p in paths if p.lower().endswith(suffixes[kind])] for kind in config.formats}
            # A file named for neither kind (given explicitly) goes to the first reader, which rejects it.
            leftovers = [p for p in paths if not any(p in v for v in by_kind.values())]
            by_kind[config.formats[0]] += leftovers
            step.counts.update({kind: len(v) for kind, v in by_kind.items()})
        succeeded = 0
        if by_kind.get("nifti"):
            with cached_batch_rows(ctx.spark, 1):  # a volume per cached batch, not a subject
                volumes, rejected = nifti.read_volumes(ctx.spark, by_kind["nifti"], max_volume_mb=config.max_volume_mb,
                                                       task_mb=config.task_mb)
                succeeded += _write(ctx, "volumes", volumes, rejected, "volumes")
        if by_kind.get("fits"):
            images, rejected = fits_io.read_images(ctx.spark, by_kind["fits"], config.fits)
            succeeded += _write(ctx, "images", images, rejected, "images")
        return succeeded


JOB = IngestJob
