"""``scilens glaucoma-images``: retinal image files of a cohort's eyes -> preprocessed, labelled Parquet tables.

Input: a directory (or glob) of OCT volumes (``.tif``) and fundus photos
(``.png``) named as :mod:`scilens.io.retina` says; ``cohort``: the
``eyes.parquet`` of ``scilens glaucoma-cohort`` (labels and splits). Each file
is read on an executor and preprocessed as the paper did
(:mod:`scilens.glaucoma.preprocess`).

Outputs:

* ``oct_scans.parquet`` -- one row per B-scan: ``eid``, ``eye``, ``visit``,
  ``scan`` (0 = most superior), ``label``, ``split``, ``path``, the applied
  motion-correction shift (``shift_axial``, ``shift_lateral``, pixels) and
  ``image`` (uint8 tensor, size x size);
* ``fundus.parquet`` -- one row per photo: ``eid``, ``eye``, ``visit``,
  ``label``, ``split``, ``path``, the optic-disc centre found (``disc_row``,
  ``disc_col``, in the flipped photo) and ``image`` (uint8 tensor, size x size x 3);
* ``figures/`` -- raw and preprocessed examples (the paper's Fig. 3.11) and the
  first scans of excluded OCT volumes (Fig. 3.8), PNG;
* ``_rejected/`` -- unreadable files, B-scans of the wrong size, volumes with
  fewer scans than ``n_scans``, volumes translation cannot align, images of
  eyes absent from the cohort, each with the reason.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from scilens.core.job import Job, JobContext
from scilens.glaucoma.config import GlaucomaImagesConfig
from scilens.io import retina as retina_io

__all__ = ["JOB", "GlaucomaImagesConfig", "GlaucomaImagesJob"]


class GlaucomaImagesJob(Job[GlaucomaImagesConfig]):
    """Retinal image files -> preprocessed, labelled tables (see the module doc)."""

    name = "glaucoma-images"
    summary = "Retinal OCT volumes and fundus photos of a cohort -> preprocessed, labelled Parquet tables."
    config_class = GlaucomaImagesConfig

    def run(self, ctx: JobContext[GlaucomaImagesConfig]) -> int:
        """Read, check and preprocess every image file; the number of files stored."""
        from scilens.glaucoma import pipeline, stages

        config = ctx.config
        cohort = str(pipeline.cohort_path(config.cohort))
        with ctx.step("list inputs") as step:
            eyes = stages.read_cohort(ctx.spark, config.cohort).persist()
            paths = ctx.list_inputs(retina_io.IMAGE_SUFFIXES)
            oct_paths = [p for p in paths if p.lower().endswith((".tif", ".tiff"))]
            cfp_paths = [p for p in paths if p not in oct_paths]
            step.counts.update({"cohort_eyes": eyes.count(), "oct_files": len(oct_paths),
                                "cfp_files": len(cfp_paths)})
        succeeded = 0
        written: dict[str, DataFrame] = {}
        rejected_oct = None
        steps = {"oct": ("oct volumes", stages.read_oct_scans, oct_paths, "oct_scans.parquet"),
                 "cfp": ("fundus photos", stages.read_fundus, cfp_paths, "fundus.parquet")}
        for modality in config.modalities:
            name, reader, files, table = steps[modality]
            if not files:
                continue
            with ctx.step(name) as step:
                rows, rejected = reader(ctx.spark, files, config)
                rows, unknown = stages.reject_unknown_eyes(rows, eyes, cohort, "cohort")
                rows.write.mode("overwrite").parquet(str(ctx.output / table))
                written[modality] = ctx.spark.read.parquet(str(ctx.output / table))
                rejected = rejected.unionByName(unknown)
                ctx.reject(rejected)
                counts = written[modality].agg(F.count("*").alias("rows"), F.countDistinct("path").alias("files"))
                step.counts["images"], step.counts["files"] = counts.first() or (0, 0)
                succeeded += step.counts["files"]
                if modality == "oct":
                    rejected_oct = rejected
        with ctx.step("figures") as step:
            step.counts["figures"] = len(stages.example_figures(config, written.get("oct"), written.get("cfp"),
                                                                rejected_oct, ctx.output / "figures"))
        return succeeded


JOB = GlaucomaImagesJob
