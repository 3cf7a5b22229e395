"""``scilens activation-index``: the exact top-k activation index (DeepEverest) of a model's activations.

Two inputs:

* an activation store (the ``activations`` job's output): ``index.json``
  records the store's path and digest (source kind ``activation_store``), and
  queries fetch candidate activations from the store;
* an image table plus a model (``--set model=...``): every chosen layer
  (by default those the ``activations`` job stores) is computed in one
  inference pass over the table's rows (or over ``ids_from`` / ``ids``),
  held by Spark only while the index is built and never stored; rejected
  image rows go to ``_rejected``. ``index.json`` records the model, the
  table's inputs, its column settings and their digest (source kind
  ``inference``), and queries re-run the model on the candidate rows only
  (:class:`~scilens.diagnosis.topk_stages.InferenceSource`).

For each chosen layer and neuron it writes the MAI and NPI tables of
:mod:`scilens.diagnosis.topk_index` under ``<output>/<layer>/``, built with
Spark (:mod:`scilens.diagnosis.topk_stages`), plus ``ids.parquet``,
``index.json`` (with the digest, so that a query on a changed store, model
or table is refused) and ``report.html``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scilens.core.config import ConfigError, field
from scilens.core.inputs import InputError
from scilens.core.job import Job, JobConfig, JobContext
from scilens.diagnosis.config import ImageTableConfig


@dataclass
class ActivationIndexConfig(JobConfig):
    """Config of ``scilens activation-index``."""

    model: str | None = field(None, "Saved Keras model (.keras), readable from every executor: the input is then "
                              "an image table whose activations are computed in one inference pass (never stored) "
                              "and re-computed for a query's candidates only; empty: the input is an activation "
                              "store.")
    data: ImageTableConfig = field(ImageTableConfig(), "With model: columns of the input image table.")
    layers: list[str] = field([], "Layers to index; empty: every layer of the store (with model: every layer the "
                              "activations job stores by default).")
    ids_from: str | None = field(None, "With model: Parquet file or directory with an id column (e.g. a sample of "
                                 "`scilens sample`): index only these items.")
    ids: list[int] = field([], "With model: more ids to index (with ids_from empty too: every row).")
    batch_size: int = field(128, "With model: images per model call.", min=1)
    partitions: int = field(64, "NPI partitions P (the MAI is one of them).", min=2)
    ratio: float = field(0.05, "Fraction of items kept per neuron in the MAI.")


def store_digest(path: str | Path) -> str:
    """Digest of an activation store: its ``layers.json`` and its Parquet files' names, sizes and footers.

    Parameters
    ----------
    path : path-like
        The store directory.

    Returns
    -------
    str
        :func:`~scilens.core.digest.parquet_digest` of the store's table
        (names relative to the store, so a moved store keeps its digest).
    """
    from scilens.core.digest import parquet_digest
    from scilens.diagnosis.activations import LAYERS_FILE, STORE_TABLE

    root = Path(path)
    return parquet_digest([root / STORE_TABLE], root=root, extra=(root / LAYERS_FILE).read_bytes())


class ActivationIndexJob(Job[ActivationIndexConfig]):
    """The ``activation-index`` job."""

    name = "activation-index"
    summary = ("Build the exact top-k activation index (MAI + NPI per neuron) of an activation store, or of an image "
               "table plus a model.")
    config_class = ActivationIndexConfig

    def run(self, ctx: JobContext[ActivationIndexConfig]) -> int:
        """Build the index of the input store (or image table with ``model``); return the number of items indexed."""
        cfg = ctx.config
        if not 0 < cfg.ratio < 1:
            raise ConfigError(f"ratio must be in (0, 1), got {cfg.ratio}")
        if cfg.model:
            return self._from_inference(ctx)
        if cfg.ids or cfg.ids_from:
            raise ConfigError("ids, ids_from: only with model (an image table input); an activation store is "
                              "indexed whole")
        return self._from_store(ctx)

    def _from_store(self, ctx: JobContext[ActivationIndexConfig]) -> int:
        from scilens.diagnosis.activations import ActivationStore
        from scilens.diagnosis.topk_stages import build_index_spark

        cfg = ctx.config
        with ctx.step("check store and layers") as step:
            if len(ctx.inputs) != 1:
                raise InputError(f"give exactly one activation store as input, got {len(ctx.inputs)}")
            store = ActivationStore.open(ctx.inputs[0])
            layers = list(cfg.layers) or list(store.layers)
            for layer in layers:
                store.layer_size(layer)  # names an unknown layer before any work
            source = {"kind": "activation_store", "path": str(store.path.resolve()), "model": store.model,
                      "digest": store_digest(store.path)}
            step.counts.update(items=store.rows, layers=len(layers))
        with ctx.step(f"index {len(layers)} layers") as step:
            # the build reads its input about four times per layer
            frame = store.frame(ctx.spark).select("id", *layers).persist()
            try:
                meta = build_index_spark(frame, layers, ctx.output, source=source, n_partitions=cfg.partitions,
                                         ratio=cfg.ratio, shapes=store.layers)
            finally:
                frame.unpersist()
            step.counts["items"] = int(meta["N"])
        with ctx.step("report"):
            self._report(ctx, meta, {layer: math.prod(store.layers[layer]) for layer in layers},
                         f"store {meta['source']['path']}")
        return int(meta["N"])

    def _from_inference(self, ctx: JobContext[ActivationIndexConfig]) -> int:
        from pyspark import StorageLevel

        from scilens.diagnosis import stages
        from scilens.diagnosis.image_table import model_info, open_image_table
        from scilens.diagnosis.topk_stages import (
            INFERENCE_KIND,
            build_index_spark,
            digest_of_parts,
            inference_digest_parts,
        )

        cfg = ctx.config
        with ctx.step("check model, ids and data") as step:
            info = model_info(cfg.model)
            layers = stages.chosen_layers(info, cfg.layers)
            # absolute, so that a query from another directory re-reads the same table
            images = [str(Path(p.removeprefix("file://")).absolute()) for p in ctx.inputs]
            parts = inference_digest_parts(info.path, images, cfg.data)
            table = open_image_table(ctx.spark, images, cfg.data, info)
            ctx.reject(table.rejected)
            frame, wanted = stages.select_ids(ctx.spark, table.frame, table.source, cfg.ids_from, cfg.ids)
            source = {"kind": INFERENCE_KIND, "model": info.path, "images": images, "data": cfg.data.to_dict(),
                      "batch_size": cfg.batch_size, "parts": {"model": parts["model"], "images": parts["images"]},
                      "digest": digest_of_parts(parts)}
            step.counts["layers"] = len(layers)
        shapes = {layer: info.output_shape(layer) for layer in layers}
        with ctx.step(f"infer and index {len(layers)} layers") as step:
            acts = stages.compute_activations(frame, info, layers, table.layout, cfg.batch_size).select("id", *layers)
            # One inference pass: the build reads its input about four times per layer.
            acts = acts.persist(StorageLevel.MEMORY_AND_DISK)
            try:
                with stages.activation_batches(ctx.spark, info, layers, cfg.batch_size):
                    step.counts["inferred"] = acts.count()
                meta = build_index_spark(acts, layers, ctx.output, source=source, n_partitions=cfg.partitions,
                                         ratio=cfg.ratio, shapes=shapes)
            finally:
                acts.unpersist()
                if wanted is not None:
                    wanted.unpersist()
            step.counts["items"] = int(meta["N"])
        with ctx.step("report"):
            self._report(ctx, meta, {layer: math.prod(shape) for layer, shape in shapes.items()},
                         f"model {info.path} over {', '.join(images)}")
        return int(meta["N"])

    @staticmethod
    def _report(ctx: JobContext, meta: dict[str, Any], neurons: dict[str, int], built_from: str) -> None:
        from scilens.diagnosis.report import html_table, write_html

        rows = []
        for layer, info in meta["layers"].items():
            index_bytes = sum(int(v) for v in info.get("bytes", {}).values())
            raw = 4 * neurons[layer] * int(meta["N"])
            rows.append({"layer": layer, "neurons": neurons[layer], "index bytes": index_bytes,
                         "materialised float32 bytes": raw, "index / materialised": index_bytes / max(raw, 1)})
        head = {"N": meta["N"], "P": meta["P"], "ratio": meta["ratio"], "built from": built_from,
                "digest": meta["source"]["digest"]}
        write_html(ctx.output / "report.html", "scilens activation-index",
                   [("Index", html_table([head])), ("Bytes per layer", html_table(rows)),
                    ("index.json", f"<pre>{json.dumps(meta['source'], indent=2)}</pre>")])


JOB = ActivationIndexJob
