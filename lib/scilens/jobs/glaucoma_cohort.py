"""``scilens glaucoma-cohort``: a UK Biobank export -> the glaucoma study's eyes, classes and splits.

Input: a showcase export (CSV, TSV or Parquet; several files are stacked or joined on ``eid``).
Outputs under ``--output``:

* ``eyes.parquet`` -- one row per selected eye: ``eid`` (long), ``eye`` (``right``/``left``),
  ``label`` (``glaucoma``/``healthy``/``ptg``), ``split`` (``train``/``validation``/``test``/``ptg``;
  both eyes of a subject in one split), ``visit`` (the UK Biobank instance used) and the features
  of :data:`scilens.glaucoma.features.EYE_FEATURES`;
* ``ptg_post.parquet`` -- the PTG eyes again, at the visit of diagnosis (same columns, ``split`` =
  ``ptg_post``), for the group statistics;
* ``exclusions.parquet`` -- ``eid``, ``reason`` (:data:`scilens.glaucoma.cohort.REASONS`);
* ``counts.csv`` / ``counts.md`` -- subjects and eyes per class and split, and exclusions per reason;
* ``_rejected/`` -- participants whose records could not be read (text for a number, unknown code).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from scilens.core.job import Job, JobContext, JobFailed
from scilens.glaucoma import cohort as cohort_rules
from scilens.glaucoma.config import GlaucomaCohortConfig
from scilens.glaucoma.report import markdown_table
from scilens.glaucoma.splits import assign_splits
from scilens.io import ukb

__all__ = ["JOB", "GlaucomaCohortConfig", "GlaucomaCohortJob"]


class GlaucomaCohortJob(Job[GlaucomaCohortConfig]):
    """The glaucoma study's cohort from a UK Biobank export; see the module doc."""

    name = "glaucoma-cohort"
    summary = "Select the glaucoma study's eyes (glaucoma, healthy, PTG) from a UK Biobank export, with splits."
    config_class = GlaucomaCohortConfig

    def run(self, ctx: JobContext[GlaucomaCohortConfig]) -> int:
        """Read the export, select the cohort, draw controls and splits, write the tables."""
        config = ctx.config
        spark = ctx.spark
        field_map = ukb.load_field_map(config.fields)
        with ctx.step("read export") as step:
            paths = ctx.list_inputs(ukb.EXPORT_SUFFIXES)
            visits, rejected = ukb.read_export(spark, paths, field_map)
            ctx.reject(rejected)
            step.counts["files"] = len(paths)
            step.counts["visits"] = visits.count()
            participants = step.counts["participants"] = visits.select("eid").distinct().count()
            step.counts["rejected_participants"] = rejected.count()
        if participants == 0:
            raise JobFailed("no participant of the export could be read; see _rejected")

        with ctx.step("select cohort") as step:
            rows = cohort_rules.select_cohort(visits, config.rules, config.buckets)
            rows = rows.persist(StorageLevel.MEMORY_AND_DISK)
            keys: pd.DataFrame = rows.where(F.col("kind") != "ptg_post").select("eid", "kind", "label",
                                                                                 "reason").toPandas()
            eligible = keys[keys["kind"] == "eye"]
            subjects = eligible.drop_duplicates("eid").groupby("label").size()
            for label in cohort_rules.LABELS:
                step.counts[f"{label}_subjects"] = int(subjects.get(label, 0))
            step.counts["excluded"] = int((keys["kind"] == "excluded").sum())

        with ctx.step("draw controls and splits") as step:
            drawn, not_drawn, kept = cohort_rules.draw_controls(
                eligible, int(subjects.get("glaucoma", 0)), config.healthy_per_glaucoma, config.splits.seed)
            eye_rows = cohort_rules.kept_eye_rows(spark, rows, kept)
            split_keys: pd.DataFrame = eye_rows.select("eid", "eye", "label").toPandas()
            split_keys["split"] = assign_splits(split_keys, config.splits)  # SplitError before anything is written
            step.counts["healthy_drawn"] = len(drawn)
            step.counts["eyes"] = len(split_keys)

        with ctx.step("write outputs") as step:
            self._write(cohort_rules.split_eyes(spark, eye_rows, split_keys), ctx.output / "eyes.parquet")
            post = cohort_rules.ptg_post_rows(rows)
            self._write(post, ctx.output / "ptg_post.parquet")
            excluded = cohort_rules.exclusions_table(keys, not_drawn)
            self._write(spark.createDataFrame(excluded), ctx.output / "exclusions.parquet")
            counts = cohort_rules.counts_table(split_keys, excluded)
            counts.to_csv(ctx.output / "counts.csv", index=False)
            (ctx.output / "counts.md").write_text(markdown_table(counts))
            step.counts["eyes"] = len(split_keys)
            step.counts["ptg_post_eyes"] = post.count()
        rows.unpersist()
        return participants

    @staticmethod
    def _write(frame: DataFrame, path: Path) -> None:
        frame.coalesce(1).write.mode("overwrite").parquet(str(path))


JOB = GlaucomaCohortJob
