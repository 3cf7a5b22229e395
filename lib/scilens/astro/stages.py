"""The Spark stages of ``scilens astro``: the per-record functions of :mod:`scilens.astro.pipeline` over Arrow.

1. :func:`scan` -- executors read every file's headers (``mapInPandas``); the
   driver collects the footprints (a few numbers per image) and builds the
   sky map.
2. :func:`coadd_catalog` -- one pass with one shuffle: executors read each
   image, pre-process it and warp it onto its patches (``mapInPandas``, one
   file per task, 1 to 6 rows out); the warps are grouped by patch
   (``applyInPandas``, the visit axis whole, one patch per task) and
   co-added, and each co-add is written as FITS and searched for sources in
   the same task. Only the catalog comes back to the driver.

An image that fails is all or nothing: its warps are computed before any is
emitted, and a failure emits one ``_rejected`` row instead. Those rows ride
along the same pass (with a null patch) to the driver, so no intermediate is
cached or computed twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import types as T

from scilens.astro import pipeline
from scilens.astro.config import AstroConfig
from scilens.astro.psf import PsfEstimate
from scilens.astro.skymap import PatchBox, SkyMap
from scilens.astro.warp import Warp
from scilens.core import tensor
from scilens.core.inputs import paths_frame
from scilens.core.placement import PLACE_COLUMN, place_groups
from scilens.core.quarantine import REJECTED_COLUMN, guard_rows, with_rejected_field

__all__ = ["CATALOG_SCHEMA", "SCAN_SCHEMA", "VISIT_SOURCE_SCHEMA", "WARP_SCHEMA", "StepTimers", "coadd_catalog",
           "scan", "visit_sources"]

SCAN_SCHEMA = T.StructType([
    T.StructField("path", T.StringType()),
    T.StructField("image_id", T.StringType()),
    T.StructField("ny", T.LongType()),
    T.StructField("nx", T.LongType()),
    T.StructField("wcs_header", T.StringType()),
    T.StructField("footprint_ra", T.ArrayType(T.DoubleType())),
    T.StructField("footprint_dec", T.ArrayType(T.DoubleType())),
])

WARP_SCHEMA = T.StructType([
    T.StructField("path", T.StringType()),
    T.StructField("image_id", T.StringType()),
    T.StructField("patch", T.StringType()),
    T.StructField("x0", T.LongType()),
    T.StructField("y0", T.LongType()),
    T.StructField("weight", T.DoubleType()),
    T.StructField("psf", T.StringType()),
    tensor.tensor_field("flux"),
    tensor.tensor_field("variance"),
    tensor.tensor_field("mask"),
])
"""One image warped onto one box of one patch (x0, y0: the box origin in patch pixels; psf: the image's
measured PSF as JSON)."""

_TYPES = {"id": T.LongType(), "tract": T.LongType(), "patch": T.StringType(), "npix": T.LongType(),
          "flags": T.LongType()}
CATALOG_SCHEMA = with_rejected_field(T.StructType(
    [T.StructField(c, _TYPES.get(c, T.DoubleType())) for c in pipeline.CATALOG_COLUMNS]))
_VISIT_TYPES = {"visit": T.StringType(), "image_id": T.StringType(), "id": T.LongType()}
VISIT_SOURCE_SCHEMA = T.StructType(
    [T.StructField(c, _VISIT_TYPES.get(c, T.DoubleType())) for c in pipeline.VISIT_SOURCE_COLUMNS])


class StepTimers:
    """Seconds spent inside each kernel, summed over all tasks (Spark accumulators)."""

    STEPS = ("read", "preprocess", "warp", "coadd", "write", "detect")

    def __init__(self, spark: SparkSession):
        self.acc = {s: spark.sparkContext.accumulator(0.0) for s in self.STEPS}

    def as_dict(self) -> dict[str, float]:
        """Seconds per step so far, rounded to milliseconds."""
        return {s: round(a.value, 3) for s, a in self.acc.items()}


def scan(spark: SparkSession, paths: list[str], config: AstroConfig) -> tuple[list[pipeline.ImageInfo],
                                                                                      pd.DataFrame]:
    """Read every file's headers on the executors; returns (image infos, rejected records) on the driver."""
    layout = config.fits
    columns = SCAN_SCHEMA.fieldNames()

    def produce(row: pd.Series) -> list[dict]:
        info = pipeline.scan(row["path"], layout)
        return [{"path": info.path, "image_id": info.image_id, "ny": info.shape[0], "nx": info.shape[1],
                 "wcs_header": info.wcs_header, "footprint_ra": info.footprint_ra.tolist(),
                 "footprint_dec": info.footprint_dec.tolist()}]

    def fn(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            yield from guard_rows(batch, produce, "scan", columns)

    # Headers are cheap: a few tasks per core, not one per file.
    tasks = min(len(paths), 4 * spark.sparkContext.defaultParallelism)
    # Annotated: pyspark's stub types toPandas() through a pandas alias that does not resolve without pandas-stubs.
    rows: pd.DataFrame = (paths_frame(spark, paths).coalesce(tasks).mapInPandas(fn, with_rejected_field(SCAN_SCHEMA))
                          .toPandas())
    bad = rows[REJECTED_COLUMN].notna()
    infos = [pipeline.ImageInfo(r.image_id, r.path, (int(r.ny), int(r.nx)), r.wcs_header,
                                np.asarray(r.footprint_ra, float), np.asarray(r.footprint_dec, float))
             for r in rows[~bad].itertuples()]
    return infos, pd.DataFrame(list(rows.loc[bad, REJECTED_COLUMN]))


def _warp_row(path: str, warp: Warp) -> dict:
    return {"path": path, "image_id": warp.image_id, "patch": warp.patch, "x0": warp.box.x0, "y0": warp.box.y0,
            "weight": warp.weight, "psf": json.dumps(warp.psf.as_dict()) if warp.psf else None,
            "flux": tensor.encode(warp.flux), "variance": tensor.encode(warp.variance),
            "mask": tensor.encode(warp.mask)}


def _rows_to_warps(pdf: pd.DataFrame) -> list[Warp]:
    warps = []
    for row, flux, var, mask in zip(pdf.itertuples(), tensor.decode_column(pdf["flux"]),
                                    tensor.decode_column(pdf["variance"]), tensor.decode_column(pdf["mask"])):
        if flux is None or var is None or mask is None:  # WARP_SCHEMA rows of a warp always carry all three
            raise ValueError(f"warp of {row.image_id} on patch {row.patch} lacks a plane")
        box = PatchBox(int(row.x0), int(row.y0), flux.shape[1], flux.shape[0])
        psf = PsfEstimate(**json.loads(row.psf)) if isinstance(row.psf, str) else None
        warps.append(Warp(row.image_id, row.patch, box, flux, var, mask, float(row.weight), psf))
    return warps


def coadd_catalog(spark: SparkSession, paths: list[str], skymap: SkyMap, config: AstroConfig,
                  output: Path, timers: StepTimers, patches: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pre-process and warp each image, then co-add, write and search each of ``patches``.

    Writes ``output/coadds/*.fits``; returns the catalog (not yet sorted) and
    the rejected records, on the driver.
    """
    acc = timers.acc
    warp_columns = WARP_SCHEMA.fieldNames()
    root = str(output)

    def produce(row: pd.Series) -> list[dict]:
        from scilens.io import fits as fits_io

        t0 = time.perf_counter()
        image = fits_io.read_image(row["path"], config.fits)
        t1 = time.perf_counter()
        calibrated = pipeline.prepare(image, config)
        t2 = time.perf_counter()
        rows = [_warp_row(row["path"], w) for w in pipeline.warp_image(calibrated, skymap, config)]
        acc["read"].add(t1 - t0)
        acc["preprocess"].add(t2 - t1)
        acc["warp"].add(time.perf_counter() - t2)
        return rows  # all or nothing: a failure above emits no warp of this image

    def warp_fn(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            yield from guard_rows(batch, produce, "preprocess+warp", warp_columns)

    def patch_fn(pdf: pd.DataFrame) -> pd.DataFrame:
        if pdf["patch"].isna().all():  # the group of rejected images: pass their records on
            out = pd.DataFrame({c: [None] * len(pdf) for c in pipeline.CATALOG_COLUMNS})
            out[REJECTED_COLUMN] = list(pdf[REJECTED_COLUMN])
            return out
        patch = pdf["patch"].iloc[0]
        t0 = time.perf_counter()
        coadd = pipeline.coadd_patch(_rows_to_warps(pdf), skymap, config)
        t1 = time.perf_counter()
        pipeline.write_coadd(root, coadd, patch, skymap)
        t2 = time.perf_counter()
        found = pipeline.detect_patch(coadd, patch, skymap, config)
        acc["coadd"].add(t1 - t0)
        acc["write"].add(t2 - t1)
        acc["detect"].add(time.perf_counter() - t2)
        found[REJECTED_COLUMN] = None
        return found

    warps = paths_frame(spark, paths).mapInPandas(warp_fn, with_rejected_field(WARP_SCHEMA))
    # One patch per task; the rejected images' records (patch null) go with the first.
    placed = place_groups(warps, ["patch"], [(p,) for p in patches], len(patches))
    out: pd.DataFrame = placed.groupBy(PLACE_COLUMN, "patch").applyInPandas(patch_fn, CATALOG_SCHEMA).toPandas()
    bad = out[REJECTED_COLUMN].notna()
    return out.loc[~bad, pipeline.CATALOG_COLUMNS].reset_index(drop=True), pd.DataFrame(
        list(out.loc[bad, REJECTED_COLUMN]))


def visit_sources(spark: SparkSession, paths: list[str], catalog: pd.DataFrame, config: AstroConfig, output: Path
                  ) -> tuple[int, pd.DataFrame]:
    """Match each image's own sources to the co-add ``catalog`` (:func:`pipeline.match_visit`); write the rows.

    One task per image, writing ``output/visit_sources.parquet``; returns (rows written, rejected records):
    an image whose detection fails is a rejected record and the others are written. The catalog's positions
    travel with the tasks (three numbers per source).
    """
    from pyspark.sql import functions as F

    columns = VISIT_SOURCE_SCHEMA.fieldNames()
    sources = catalog[["id", "ra", "dec"]].astype({"id": "int64", "ra": "float64", "dec": "float64"})

    def produce(row: pd.Series) -> list[dict]:
        from scilens.io import fits as fits_io

        calibrated = pipeline.prepare(fits_io.read_image(row["path"], config.fits), config)
        matched = pipeline.match_visit(calibrated, pipeline.visit_of(row["path"], config.detect.visit_key), sources,
                                       config)
        return matched.to_dict("records")

    def fn(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            yield from guard_rows(batch, produce, "single-visit sources", columns)

    # Used twice (the table, then its rejected records): kept on the executors in between.
    found = paths_frame(spark, paths).mapInPandas(fn, with_rejected_field(VISIT_SOURCE_SCHEMA)).persist()
    try:
        good = found.where(F.col(REJECTED_COLUMN).isNull()).select(*columns)
        good.write.mode("error").parquet(str(output / "visit_sources.parquet"))
        rejected: pd.DataFrame = found.where(F.col(REJECTED_COLUMN).isNotNull()).select(REJECTED_COLUMN).toPandas()
        return (spark.read.parquet(str(output / "visit_sources.parquet")).count(),
                pd.DataFrame(list(rejected[REJECTED_COLUMN])))
    finally:
        found.unpersist()
