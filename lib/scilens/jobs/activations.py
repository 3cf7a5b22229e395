"""``scilens activations``: the activation store of a model for a set of items (a sample, or everything).

Input: an image table and a saved Keras model (``model``). The items are the
ids of ``ids_from`` (any Parquet with an ``id`` column, e.g. one sample of
``scilens sample``: ``<out>/samples/technique=maxmargin/fraction=0.05``) and
``ids``, or every row when both are empty; an id missing from the table is
an error before any inference. All chosen layers (every layer that computes
something by default) come from one inference pass.

Outputs (:mod:`scilens.diagnosis.activations`):

* ``activations.parquet`` -- id, label, prediction, correct, one ``array<float>`` column per layer;
* ``layers.json`` -- each layer's shape and the bytes written; ``report.html``, ``storage.png``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from scilens.core.config import field
from scilens.core.inputs import InputError, list_files
from scilens.core.job import Job, JobConfig, JobContext
from scilens.core.session import ARROW_BATCH_BUDGET, arrow_batch_bytes
from scilens.diagnosis.image_table import ImageTableConfig, model_info, open_image_table

MISSING_SHOWN = 10


@dataclass
class ActivationsConfig(JobConfig):
    """Config of ``scilens activations``."""

    model: str | None = field(None, "Saved Keras model (.keras); readable from every executor.")
    data: ImageTableConfig = field(ImageTableConfig(), "Columns of the input image table.")
    layers: list[str] = field([], "Layers to store; empty: every layer that computes something (input copies, "
                              "reshapes and dropout left out), logits included.")
    ids_from: str | None = field(None, "Parquet file or directory with an id column (e.g. a sample of "
                                 "`scilens sample`): store only these items.")
    ids: list[int] = field([], "More ids to store (with ids_from empty too: every row).")
    batch_size: int = field(128, "Images per model call.", min=1)


def _wanted_ids(ctx: JobContext, cfg: ActivationsConfig) -> DataFrame | None:
    frames = []
    if cfg.ids_from:
        files = list_files([cfg.ids_from], (".parquet",))
        chosen = ctx.spark.read.parquet(*files)
        if "id" not in chosen.columns:
            raise InputError(f"ids_from {cfg.ids_from}: no id column; columns are {', '.join(chosen.columns)}")
        frames.append(chosen.select(F.col("id").cast("long")))
    if cfg.ids:
        frames.append(ctx.spark.createDataFrame([(int(i),) for i in cfg.ids], "id long"))
    if not frames:
        return None
    wanted = frames[0]
    for frame in frames[1:]:
        wanted = wanted.unionByName(frame)
    return wanted.where(F.col("id").isNotNull()).distinct()


class ActivationsJob(Job[ActivationsConfig]):
    name = "activations"
    summary = "Store a Keras model's activations (all or chosen layers) for a sample of ids, or all, as Parquet."
    config_class = ActivationsConfig

    def run(self, ctx: JobContext[ActivationsConfig]) -> int:
        from scilens.diagnosis.activations import ActivationStore, compute_activations
        from scilens.vision.inference import resolve_outputs

        cfg = ctx.config
        with ctx.step("check model, ids and data") as step:
            info = model_info(cfg.model)
            layers = resolve_outputs(info, cfg.layers or [n for n in info.hidden_layers() if n != "probabilities"])
            table = open_image_table(ctx.spark, ctx.inputs, cfg.data, info)
            ctx.reject(table.rejected)
            frame = table.frame
            wanted = _wanted_ids(ctx, cfg)
            if wanted is not None:
                wanted = wanted.persist()
                missing = [r["id"] for r in wanted.join(frame.select("id"), "id", "left_anti")
                           .orderBy("id").limit(MISSING_SHOWN + 1).collect()]
                if missing:
                    shown = ", ".join(map(str, missing[:MISSING_SHOWN])) + (", ..." if len(missing) > MISSING_SHOWN
                                                                            else "")
                    raise InputError(f"ids absent from {table.source} (or rejected there): {shown}")
                frame = frame.join(F.broadcast(wanted), "id", "left_semi")
                step.counts["ids"] = wanted.count()
            step.counts["layers"] = len(layers)
        neurons = sum(int(np.prod(info.output_shape(n))) for n in layers)
        with ctx.step(f"compute {len(layers)} layers") as step:
            rows = compute_activations(frame, info, layers, table.layout, cfg.batch_size)
            row_bytes = 4 * neurons
            budget = min(cfg.batch_size * row_bytes, ARROW_BATCH_BUDGET)
            with arrow_batch_bytes(ctx.spark, row_bytes, budget, raise_limit=True):
                store = ActivationStore.write(rows, ctx.output, info, layers)
            step.counts.update(rows=store.rows, bytes=store.bytes, neurons_per_item=neurons)
        with ctx.step("report"):
            self._report(ctx, store)
        return store.rows

    @staticmethod
    def _report(ctx: JobContext, store) -> None:
        from scilens.diagnosis.report import bar_figure, html_table, write_html

        names = list(store.layers)
        per_item = [4 * int(np.prod(store.layers[n])) for n in names]
        bar_figure(ctx.output / "storage.png", names, {"float32 bytes per item": per_item}, "bytes per item",
                   f"Activations per item by layer ({store.rows} items, {store.bytes / 2**20:.1f} MiB on disk)")
        rows = [{"layer": n, "shape": "x".join(map(str, store.layers[n])), "neurons": b // 4,
                 "raw MiB": b * store.rows / 2**20} for n, b in zip(names, per_item)]
        write_html(ctx.output / "report.html", "scilens activations", [
            ("Store", html_table([{"model": store.model, "items": store.rows,
                                   "Parquet bytes": store.bytes}])),
            ("Layers", html_table(rows)), ("Storage", "<img src='storage.png'>")])


JOB = ActivationsJob
