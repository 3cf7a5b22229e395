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

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from scilens.core.config import field
from scilens.core.job import Job, JobConfig, JobContext, JobFailed
from scilens.glaucoma import cohort as cohort_rules
from scilens.glaucoma.features import EYE_FEATURES
from scilens.glaucoma.report import markdown_table
from scilens.glaucoma.splits import SplitConfig, assign_splits
from scilens.io import ukb

EYE_COLUMNS = ["eid", "eye", "label", "split", "visit", *EYE_FEATURES]
"""Columns of ``eyes.parquet`` and ``ptg_post.parquet``, in order."""


@dataclass
class GlaucomaCohortConfig(JobConfig):
    """Config of ``scilens glaucoma-cohort``."""

    fields: str = field("ukb_fields.yaml", "Field map: a YAML path, or a name looked up in the config directories.")
    rules: cohort_rules.CohortRules = field(cohort_rules.CohortRules(), "Cohort classes and exclusion rules.")
    healthy_per_glaucoma: float | None = field(
        0.893, "Healthy subjects drawn per glaucoma subject (null: keep every eligible one). The dissertation "
        "has 771 healthy per 863 glaucoma subjects and does not say how controls were drawn; we draw at random.",
        min=0.0)
    splits: SplitConfig = field(SplitConfig(), "Test and validation split sizes; its seed also draws the controls.")
    buckets: int = field(16, "Participant batches the selection runs in (Spark tasks).", min=1)


def _counts_table(eyes: pd.DataFrame, exclusions: pd.DataFrame) -> pd.DataFrame:
    """Subjects and eyes per class (and eyes per split), then exclusions per reason, as the paper reports."""
    rows = []
    for label in cohort_rules.LABELS:
        mine = eyes[eyes["label"] == label]
        row = {"group": label, "subjects": mine["eid"].nunique(), "eyes": len(mine)}
        for split in ("train", "validation", "test", "ptg"):
            row[f"eyes_{split}"] = int((mine["split"] == split).sum())
        rows.append(row)
    for reason, n in exclusions["reason"].value_counts().sort_index().items():
        rows.append({"group": f"excluded: {reason}", "subjects": int(n),
                     "eyes": None, "note": cohort_rules.REASONS.get(reason, "")})
    return pd.DataFrame(rows)


class GlaucomaCohortJob(Job[GlaucomaCohortConfig]):
    name = "glaucoma-cohort"
    summary = "Select the glaucoma study's eyes (glaucoma, healthy, PTG) from a UK Biobank export, with splits."
    config_class = GlaucomaCohortConfig

    def run(self, ctx: JobContext[GlaucomaCohortConfig]) -> int:
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
            keys = rows.where(F.col("kind") != "ptg_post").select("eid", "kind", "label", "reason").toPandas()
            eligible = keys[keys["kind"] == "eye"]
            subjects = eligible.drop_duplicates("eid").groupby("label").size()
            for label in cohort_rules.LABELS:
                step.counts[f"{label}_subjects"] = int(subjects.get(label, 0))
            step.counts["excluded"] = int((keys["kind"] == "excluded").sum())

        with ctx.step("draw controls and splits") as step:
            healthy = eligible.loc[eligible["label"] == "healthy", "eid"].unique()
            n_glaucoma = int(subjects.get("glaucoma", 0))
            if config.healthy_per_glaucoma is None:
                drawn = set(healthy.tolist())
            else:
                drawn = cohort_rules.sample_controls(healthy, round(config.healthy_per_glaucoma * n_glaucoma),
                                                     config.splits.seed)
            not_drawn = sorted(set(healthy.tolist()) - drawn)
            kept = eligible[(eligible["label"] != "healthy") | eligible["eid"].isin(drawn)]["eid"].unique()
            kept_frame = spark.createDataFrame(pd.DataFrame({"eid": kept.astype("int64")}))
            eye_rows = rows.where(F.col("kind") == "eye").join(F.broadcast(kept_frame), "eid")
            split_keys = eye_rows.select("eid", "eye", "label").toPandas()
            split_keys["split"] = assign_splits(split_keys, config.splits)  # SplitError before anything is written
            split_frame = spark.createDataFrame(split_keys[["eid", "eye", "split"]],
                                                T.StructType([T.StructField("eid", T.LongType()),
                                                              T.StructField("eye", T.StringType()),
                                                              T.StructField("split", T.StringType())]))
            step.counts["healthy_drawn"] = len(drawn)
            step.counts["eyes"] = len(split_keys)

        with ctx.step("write outputs") as step:
            eyes = eye_rows.join(F.broadcast(split_frame), ["eid", "eye"]).select(*EYE_COLUMNS).orderBy("eid", "eye")
            self._write(eyes, ctx.output / "eyes.parquet")
            post = (rows.where(F.col("kind") == "ptg_post").withColumn("split", F.lit("ptg_post"))
                    .select(*EYE_COLUMNS).orderBy("eid", "eye"))
            self._write(post, ctx.output / "ptg_post.parquet")
            excluded = keys.loc[keys["kind"] == "excluded", ["eid", "reason"]]
            excluded = pd.concat([excluded, pd.DataFrame({"eid": not_drawn, "reason": "not_sampled"})],
                                 ignore_index=True).sort_values("eid")
            excluded["eid"] = excluded["eid"].astype("int64")
            spark.createDataFrame(excluded).coalesce(1).write.mode("overwrite").parquet(
                str(ctx.output / "exclusions.parquet"))
            counts = _counts_table(split_keys, excluded)
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
