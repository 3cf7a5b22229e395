"""``scilens sample``: latent embeddings of a model on an image table, and decision-boundary samples of them.

Input: an image table (``id``, ``label``, image; :mod:`scilens.diagnosis.datasets`)
and a saved Keras model (``model``). Every row's last-hidden-layer
embedding, logits and prediction are computed in one inference pass
(``predict_batch_udf``, the model loaded once per Python worker), then each
technique draws a sample at each fraction (:mod:`scilens.diagnosis.samplers`)
-- on the driver, or with Spark MLlib when the latent table is large (``fit``;
see :mod:`scilens.diagnosis.stages`).

Outputs:

* ``embeddings.parquet`` -- id, label, prediction, correct, latent (``array<float>``), logits;
* ``samples/technique=<t>/fraction=<f>/part-*.parquet`` -- id, label, prediction,
  correct, stratum (class, cluster or cell), likelihood_ratio and its log,
  rank within the stratum (0 = nearest the boundary), end (boundary,
  exemplar, random, ...); ``eb_tree`` makes one sample, filed under the
  fraction it came to;
* ``summary.json``, ``report.html``, ``latent.png``, ``composition.png``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from scilens.core.config import ConfigError, field
from scilens.core.inputs import InputError
from scilens.core.job import Job, JobConfig, JobContext, JobFailed
from scilens.core.session import ARROW_BATCH_BUDGET, arrow_batch_bytes
from scilens.diagnosis.image_table import ImageTableConfig, model_info, open_image_table
from scilens.diagnosis.sampling import DRIVER_ONLY, TECHNIQUES, SamplingConfig, SparkSampler, sample_latent

SAMPLE_SCHEMA = T.StructType([
    T.StructField("id", T.LongType()), T.StructField("label", T.IntegerType()),
    T.StructField("prediction", T.IntegerType()), T.StructField("correct", T.BooleanType()),
    T.StructField("stratum", T.IntegerType()), T.StructField("likelihood_ratio", T.DoubleType()),
    T.StructField("log_likelihood_ratio", T.DoubleType()), T.StructField("rank", T.IntegerType()),
    T.StructField("end", T.StringType()), T.StructField("technique", T.StringType()),
    T.StructField("fraction", T.DoubleType()),
])
PLOT_ROWS = 5000


def _fractions_ok(values: list[float]) -> bool:
    return bool(values) and all(0 < f <= 1 for f in values)


@dataclass
class SampleConfig(JobConfig):
    """Config of ``scilens sample``."""

    model: str | None = field(None, "Saved Keras model (.keras) to diagnose; readable from every executor.")
    data: ImageTableConfig = field(ImageTableConfig(), "Columns of the input image table.")
    layer: str | None = field(None, "Latent layer; null: the last hidden layer (the one feeding the final dense "
                              "layer).")
    techniques: list[str] = field(["maxmargin"], "Sampling techniques to run.", choices=tuple(TECHNIQUES))
    fractions: list[float] = field([0.05, 0.1, 0.2, 0.4, 0.8], "Sample sizes as fractions of the rows.",
                                   check=_fractions_ok, check_doc="a non-empty list of values in (0, 1]")
    sampling: SamplingConfig = field(SamplingConfig(), "Sampler parameters: tuning_factor (j), seed, ...")
    fit: str = field("auto", "Where samplers run: driver (collect the latent table), spark (MLlib; not for "
                     "vas, eb_tree, gmm_spherical*), or auto: driver when rows x latent dims <= "
                     "driver_max_values.", choices=("auto", "driver", "spark"))
    driver_max_values: int = field(20_000_000, "auto: largest latent table (rows x dims) fitted on the driver.",
                                   min=1)
    batch_size: int = field(256, "Images per model call in inference.", min=1)

    def validate(self) -> None:
        if not self.techniques:
            raise ConfigError("techniques: name at least one technique")
        driver_only = [t for t in self.techniques if t in DRIVER_ONLY]
        if self.fit == "spark" and driver_only:
            raise ConfigError(f"fit: 'spark' cannot run {', '.join(driver_only)} (driver only); use fit=driver "
                              f"or auto")


def embed(ctx: JobContext, table, info, layer: str, batch_size: int) -> DataFrame:
    """Write ``embeddings.parquet`` (latent, logits, prediction of every valid row) and return it read back."""
    from scilens.vision.inference import model_outputs

    outputs = [layer, "logits", "prediction"]
    rows = (table.frame.withColumn("_out", model_outputs(info, outputs, table.layout, batch_size))
            .select("id", "label", F.col("_out.prediction").alias("prediction"),
                    (F.col("label") == F.col("_out.prediction")).alias("correct"),
                    F.col(f"_out.{layer}").alias("latent"), F.col("_out.logits").alias("logits")))
    itemsize = max(np.dtype(d).itemsize for d in table.layout.dtypes)
    row_bytes = int(np.prod(table.shape)) * itemsize + 4 * (int(np.prod(info.layers[layer])) + info.n_classes)
    path = ctx.output / "embeddings.parquet"
    # Small rows: batch_size of them per Arrow batch (the session default is sized for volumes).
    with arrow_batch_bytes(ctx.spark, row_bytes, min(batch_size * row_bytes, ARROW_BATCH_BUDGET), raise_limit=True):
        rows.write.mode("overwrite").parquet(str(path))
    return ctx.spark.read.parquet(str(path))


def _driver_samples(cfg: SampleConfig, emb: DataFrame) -> tuple[list[pd.DataFrame], dict[str, float]]:
    pdf = emb.select("id", "label", "prediction", "latent").orderBy("id").toPandas()
    latent = np.stack(pdf["latent"].to_numpy()).astype(np.float64)
    ids, labels, predictions = (pdf[c].to_numpy() for c in ("id", "label", "prediction"))
    frames, seconds = [], {}
    for technique in cfg.techniques:
        start = time.perf_counter()
        samples = sample_latent(technique, latent, labels, predictions, cfg.fractions, cfg.sampling)
        seconds[technique] = time.perf_counter() - start
        for fraction, sample in samples.items():
            frames.append(sample.to_frame(ids, labels, predictions).assign(technique=technique, fraction=fraction))
    return frames, seconds


def _spark_samples(cfg: SampleConfig, emb: DataFrame) -> tuple[list[DataFrame], dict[str, float]]:
    frames, seconds = [], {}
    for technique in cfg.techniques:
        start = time.perf_counter()
        for fraction, rows in SparkSampler(technique, cfg.sampling, latent="latent").run(emb, cfg.fractions).items():
            frames.append(rows.withColumn("technique", F.lit(technique))
                              .withColumn("fraction", F.lit(fraction).cast("double")).persist())
            frames[-1].count()
        seconds[technique] = time.perf_counter() - start
    return frames, seconds


def _report(ctx: JobContext, cfg: SampleConfig, emb: DataFrame, summary: list[dict], accuracy: float,
            layer: str, path: str) -> None:
    from scilens.diagnosis.report import bar_figure, html_table, latent_figure, write_html

    n = summary[0]["rows"] if summary else 0
    shown = emb if n <= PLOT_ROWS else emb.sample(fraction=PLOT_ROWS / n, seed=cfg.sampling.seed)
    pdf = shown.select("id", "label", "prediction", "latent").toPandas()
    first = summary[0]
    chosen_ids = {r["id"] for r in ctx.spark.read.parquet(str(ctx.output / "samples"))
                  .where((F.col("technique") == first["technique"]) & (F.col("fraction") == first["fraction"]))
                  .select("id").collect()}
    chosen = np.flatnonzero(pdf["id"].isin(chosen_ids).to_numpy())
    latent_figure(ctx.output / "latent.png", np.stack(pdf["latent"].to_numpy()), pdf["label"].to_numpy(),
                  pdf["prediction"].to_numpy(), chosen,
                  f"layer {layer}: {first['technique']} sample at {first['fraction']:g} (rings)")
    names = [f"{r['technique']} {r['fraction']:g}" for r in summary]
    bar_figure(ctx.output / "composition.png", names,
               {"correct": [r["size"] - r["misclassified"] for r in summary],
                "misclassified": [r["misclassified"] for r in summary]}, "items", "What each sample holds")
    write_html(ctx.output / "report.html", "scilens sample", [
        ("Run", html_table([{"model": cfg.model, "layer": layer, "rows": n, "model accuracy": accuracy,
                             "samplers ran on": path}])),
        ("Samples", html_table(summary)),
        ("Latent space", "<img src='latent.png'><p>First two principal axes of the latent vectors "
                         f"({'all' if n <= PLOT_ROWS else f'{PLOT_ROWS} random'} rows).</p>"),
        ("Composition", "<img src='composition.png'>"),
    ])


class SampleJob(Job[SampleConfig]):
    name = "sample"
    summary = "Embed an image table with a Keras model and write decision-boundary samples of its latent space."
    config_class = SampleConfig

    def run(self, ctx: JobContext[SampleConfig]) -> int:
        from scilens.vision.inference import resolve_outputs

        cfg = ctx.config
        with ctx.step("check model and data") as step:
            info = model_info(cfg.model)
            layer = cfg.layer or info.latent_layer
            resolve_outputs(info, [layer])
            if layer not in info.layers:
                raise InputError(f"layer: {layer!r} is not a layer of {cfg.model} with a latent output; "
                                 f"one of: {', '.join(info.layers)}")
            table = open_image_table(ctx.spark, ctx.inputs, cfg.data, info)
            ctx.reject(table.rejected)
            dims = int(np.prod(info.layers[layer]))
            step.counts.update(classes=info.n_classes, latent_dims=dims)
        with ctx.step(f"embed (layer {layer})") as step:
            emb = embed(ctx, table, info, layer, cfg.batch_size)
            n = step.counts["rows"] = emb.count()
            accuracy = emb.agg(F.avg(F.col("correct").cast("double"))).first()[0] if n else float("nan")
        if n == 0:
            return 0
        path = cfg.fit if cfg.fit != "auto" else ("driver" if n * dims <= cfg.driver_max_values else "spark")
        if path == "spark" and any(t in DRIVER_ONLY for t in cfg.techniques):
            raise JobFailed(f"the latent table ({n} x {dims}) exceeds driver_max_values={cfg.driver_max_values}, "
                            f"but {', '.join(t for t in cfg.techniques if t in DRIVER_ONLY)} run only on the "
                            f"driver; raise driver_max_values or drop them")
        with ctx.step(f"sample on the {path}") as step:
            if path == "driver":
                frames, seconds = _driver_samples(cfg, emb)
                samples = ctx.spark.createDataFrame(pd.concat(frames, ignore_index=True), SAMPLE_SCHEMA)
            else:
                spark_frames, seconds = _spark_samples(cfg, emb)
                samples = spark_frames[0]
                for frame in spark_frames[1:]:
                    samples = samples.unionByName(frame)
            samples.coalesce(1).write.mode("overwrite").partitionBy("technique", "fraction").parquet(
                str(ctx.output / "samples"))
            written = ctx.spark.read.parquet(str(ctx.output / "samples"))
            summary = [r.asDict() for r in written.groupBy("technique", "fraction").agg(
                F.count("*").alias("size"), F.sum((~F.col("correct")).cast("int")).alias("misclassified"),
                F.sum((F.col("end") == "boundary").cast("int")).alias("boundary"),
                F.sum((F.col("end") == "exemplar").cast("int")).alias("exemplar"),
            ).orderBy("technique", "fraction").collect()]
            for row in summary:
                row.update(rows=n, seconds=round(seconds[row["technique"]], 3))
            step.counts.update(samples=len(summary), rows=sum(r["size"] for r in summary))
        (ctx.output / "summary.json").write_text(json.dumps(
            {"model": cfg.model, "layer": layer, "rows": n, "latent_dims": dims, "model_accuracy": accuracy,
             "path": path, "samples": summary}, indent=2, default=float) + "\n")
        with ctx.step("report"):
            _report(ctx, cfg, emb, summary, accuracy, layer, path)
        return n


JOB = SampleJob
