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

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from scilens.core import tensor
from scilens.core.config import ConfigError, field
from scilens.core.inputs import InputError, paths_frame
from scilens.core.job import Job, JobConfig, JobContext
from scilens.core.quarantine import REJECTED_TYPE, guard_rows, split_rejected, with_rejected_field
from scilens.glaucoma.preprocess import FundusPreprocessConfig, OctPreprocessConfig
from scilens.io import retina as retina_io

LABELS = ("glaucoma", "healthy", "ptg")

OCT_SCAN_SCHEMA = T.StructType([
    T.StructField("eid", T.LongType(), False), T.StructField("eye", T.StringType(), False),
    T.StructField("visit", T.IntegerType(), False), T.StructField("scan", T.IntegerType(), False),
    T.StructField("path", T.StringType(), False), T.StructField("shift_axial", T.IntegerType(), False),
    T.StructField("shift_lateral", T.IntegerType(), False), tensor.tensor_field("image", nullable=False),
])
FUNDUS_SCHEMA = T.StructType([
    T.StructField("eid", T.LongType(), False), T.StructField("eye", T.StringType(), False),
    T.StructField("visit", T.IntegerType(), False), T.StructField("path", T.StringType(), False),
    T.StructField("disc_row", T.DoubleType(), False), T.StructField("disc_col", T.DoubleType(), False),
    tensor.tensor_field("image", nullable=False),
])


@dataclass
class GlaucomaImagesConfig(JobConfig):
    """Config of ``scilens glaucoma-images``."""

    cohort: str = field("", "eyes.parquet written by scilens glaucoma-cohort (or its output directory): "
                        "which eyes, their labels and splits. Required.")
    modalities: list[str] = field(["oct", "cfp"], "Image kinds to process.", choices=("oct", "cfp"))
    n_scans: int = field(128, "B-scans every OCT volume must have.", min=1)
    scan_height: int | None = field(512, "Height every B-scan must have, pixels (null: any, one per volume).",
                                    min=1)
    scan_width: int | None = field(650, "Width every B-scan must have, pixels (null: any, one per volume).",
                                   min=1)
    oct: OctPreprocessConfig = field(OctPreprocessConfig(), "OCT preprocessing.")
    cfp: FundusPreprocessConfig = field(FundusPreprocessConfig(), "Fundus photo preprocessing.")
    figure_eyes: int = field(4, "Eyes shown in the example figures.", min=0)
    files_per_task: int = field(1, "Image files one Spark task reads: 1 for full-size volumes (40 MB each); more "
                                "for many small files, where the per-task overhead dominates.", min=1)

    def validate(self) -> None:
        if (self.scan_height is None) != (self.scan_width is None):
            raise ConfigError("scan_height, scan_width: give both or neither")


def cohort_path(cohort: str) -> Path:
    """The ``eyes.parquet`` a ``cohort`` setting names (the table or the glaucoma-cohort output holding it)."""
    from scilens.glaucoma.cohort import eyes_table

    if not cohort:
        raise ConfigError("cohort: required; give the eyes.parquet of scilens glaucoma-cohort")
    return eyes_table(cohort)


def read_cohort(ctx: JobContext, cohort: str) -> DataFrame:
    """Eye rows of the cohort (``eid``, ``eye``, ``label``, ``split``, ``visit``), checked."""
    path = cohort_path(cohort)
    eyes = ctx.spark.read.parquet(str(path))
    missing = {"eid", "eye", "label", "split", "visit"} - set(eyes.columns)
    if missing:
        raise InputError(f"cohort {path}: no column {', '.join(sorted(missing))}; "
                         f"is it the eyes.parquet of glaucoma-cohort?")
    bad = eyes.where(~F.col("label").isin(*LABELS)).select("label").distinct().limit(5).collect()
    if bad:
        raise InputError(f"cohort {path}: labels {[r.label for r in bad]} are not {', '.join(LABELS)}")
    return eyes.select(F.col("eid").cast("long"), "eye", "label", "split", F.col("visit").cast("int"))


def _reject_unknown_eyes(good: DataFrame, eyes: DataFrame, cohort: str, step: str) -> tuple[DataFrame, DataFrame]:
    """Rows of eyes in the cohort (with label and split) and one rejection per file of an eye that is not."""
    keyed = good.join(eyes.withColumnRenamed("visit", "cohort_visit"), ["eid", "eye"], "left")
    labelled = keyed.where(F.col("label").isNotNull() & (F.col("visit") == F.col("cohort_visit"))).drop(
        "cohort_visit")
    unknown = keyed.where(F.col("label").isNull() | (F.col("visit") != F.col("cohort_visit")))
    message = F.when(
        F.col("label").isNull(),
        F.format_string("%s: eid %d %s eye is not in the cohort %s, so it has no label", F.col("path"),
                        F.col("eid"), F.col("eye"), F.lit(cohort)),
    ).otherwise(F.format_string("%s: image of visit %d, but the cohort uses visit %d of eid %d %s eye",
                                F.col("path"), F.col("visit"), F.col("cohort_visit"), F.col("eid"), F.col("eye")))
    rejected = unknown.select(
        F.struct(F.col("path"), F.format_string("eid %d %s eye", F.col("eid"), F.col("eye")).alias("record"),
                 F.lit(step).alias("step"), F.lit("NotInCohort").alias("error_type"),
                 message.alias("message")).cast(REJECTED_TYPE).alias("r")).select("r.*").distinct()
    return labelled, rejected


def read_oct_scans(ctx: JobContext, paths: list[str], config: GlaucomaImagesConfig) -> tuple[DataFrame, DataFrame]:
    """Read, check and preprocess OCT volumes on the executors: (scan rows, rejected files)."""
    from scilens.glaucoma.preprocess import OctPreprocessStep

    step_config, n_scans = config.oct, config.n_scans
    shape = (config.scan_height, config.scan_width) if config.scan_height else None
    columns = OCT_SCAN_SCHEMA.fieldNames()

    def produce(row: pd.Series) -> Iterator[dict[str, Any]]:
        path = row["path"]
        key = retina_io.parse_image_name(path)
        if key.modality != "oct":
            raise ValueError(f"{path}: a {key.modality.upper()} file where an OCT volume was expected")
        volume = retina_io.read_oct(path, shape)
        if len(volume) < n_scans:
            raise ValueError(f"{path}: has {len(volume)} B-scans, fewer than the {n_scans} configured")
        if len(volume) > n_scans:
            raise ValueError(f"{path}: has {len(volume)} B-scans, more than the {n_scans} configured")
        scans, alignment = OctPreprocessStep(step_config).run(volume, key.eye)
        for j, scan in enumerate(scans):
            yield {"eid": key.eid, "eye": key.eye, "visit": key.visit, "scan": j, "path": path,
                   "shift_axial": int(alignment.shifts[j, 0]), "shift_lateral": int(alignment.shifts[j, 1]),
                   "image": tensor.encode(scan)}

    def read(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            # All scans of a volume in one frame: a volume is one record, 128 small rows.
            yield from guard_rows(batch, produce, "read_oct", columns, rows_per_frame=n_scans)

    frame = paths_frame(ctx.spark, paths, files_per_partition=config.files_per_task)
    out = frame.mapInPandas(read, with_rejected_field(OCT_SCAN_SCHEMA))
    return split_rejected(out, on="path")


def read_fundus(ctx: JobContext, paths: list[str], config: GlaucomaImagesConfig) -> tuple[DataFrame, DataFrame]:
    """Read and preprocess fundus photos on the executors: (photo rows, rejected files)."""
    from scilens.glaucoma.preprocess import FundusPreprocessStep

    step_config = config.cfp
    columns = FUNDUS_SCHEMA.fieldNames()

    def produce(row: pd.Series) -> Iterator[dict[str, Any]]:
        path = row["path"]
        key = retina_io.parse_image_name(path)
        if key.modality != "cfp":
            raise ValueError(f"{path}: an {key.modality.upper()} file where a fundus photo was expected")
        image, disc = FundusPreprocessStep(step_config).run(retina_io.read_fundus(path), key.eye)
        yield {"eid": key.eid, "eye": key.eye, "visit": key.visit, "path": path, "disc_row": disc[0],
               "disc_col": disc[1], "image": tensor.encode(image)}

    def read(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            yield from guard_rows(batch, produce, "read_fundus", columns)

    frame = paths_frame(ctx.spark, paths, files_per_partition=config.files_per_task)
    out = frame.mapInPandas(read, with_rejected_field(FUNDUS_SCHEMA))
    return split_rejected(out, on="path")


def _figures(ctx: JobContext, config: GlaucomaImagesConfig, oct_rows: DataFrame | None,
             fundus_rows: DataFrame | None, rejected_oct: DataFrame | None) -> list[str]:
    """Example figures (a handful of images, so read on the driver)."""
    from scilens.glaucoma import figures as retina_figures

    figures = ctx.output / "figures"
    written = []
    n = config.figure_eyes
    if n == 0:
        return written
    if oct_rows is not None:
        central = config.n_scans // 2
        picks = (oct_rows.where(F.col("scan") == central).select("eid", "eye", "label", "path", "image")
                 .orderBy("label", "eid", "eye").limit(n).collect())
        if picks:
            written.append(str(retina_figures.oct_examples(
                [(r.path, central, f"{r.eid} {r.eye} ({r.label})", tensor.decode(r.image)) for r in picks],
                figures / "oct_preprocessing.png")))
    if rejected_oct is not None:
        excluded = rejected_oct.where(F.col("step") == "read_oct").where(
            F.col("message").contains("cannot be aligned")).limit(n).collect()
        if excluded:
            written.append(str(retina_figures.excluded_oct([(r.path, r.message) for r in excluded],
                                                           figures / "excluded_oct.png")))
    if fundus_rows is not None:
        picks = (fundus_rows.select("eid", "eye", "label", "path", "image").orderBy("label", "eid", "eye")
                 .limit(n).collect())
        if picks:
            written.append(str(retina_figures.fundus_examples(
                [(r.path, f"{r.eid} {r.eye} ({r.label})", tensor.decode(r.image)) for r in picks],
                figures / "cfp_preprocessing.png")))
    return written


class GlaucomaImagesJob(Job[GlaucomaImagesConfig]):
    name = "glaucoma-images"
    summary = "Retinal OCT volumes and fundus photos of a cohort -> preprocessed, labelled Parquet tables."
    config_class = GlaucomaImagesConfig

    def run(self, ctx: JobContext[GlaucomaImagesConfig]) -> int:
        config = ctx.config
        cohort = str(cohort_path(config.cohort))
        with ctx.step("list inputs") as step:
            eyes = read_cohort(ctx, config.cohort).persist()
            paths = ctx.list_inputs(retina_io.IMAGE_SUFFIXES)
            oct_paths = [p for p in paths if p.lower().endswith((".tif", ".tiff"))]
            cfp_paths = [p for p in paths if p not in oct_paths]
            step.counts.update({"cohort_eyes": eyes.count(), "oct_files": len(oct_paths),
                                "cfp_files": len(cfp_paths)})
        succeeded = 0
        written: dict[str, DataFrame] = {}
        rejected_oct = None
        steps = {"oct": ("oct volumes", read_oct_scans, oct_paths, "oct_scans.parquet"),
                 "cfp": ("fundus photos", read_fundus, cfp_paths, "fundus.parquet")}
        for modality in config.modalities:
            name, reader, files, table = steps[modality]
            if not files:
                continue
            with ctx.step(name) as step:
                rows, rejected = reader(ctx, files, config)
                rows, unknown = _reject_unknown_eyes(rows, eyes, cohort, "cohort")
                rows.write.mode("overwrite").parquet(str(ctx.output / table))
                written[modality] = ctx.spark.read.parquet(str(ctx.output / table))
                rejected = rejected.unionByName(unknown)
                ctx.reject(rejected)
                counts = written[modality].agg(F.count("*").alias("rows"), F.countDistinct("path").alias("files"))
                step.counts["images"], step.counts["files"] = counts.first()
                succeeded += step.counts["files"]
                if modality == "oct":
                    rejected_oct = rejected
        with ctx.step("figures") as step:
            step.counts["figures"] = len(_figures(ctx, config, written.get("oct"), written.get("cfp"), rejected_oct))
        return succeeded


JOB = GlaucomaImagesJob
