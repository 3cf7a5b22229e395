"""``scilens activations``: the activation store of a model for a set of items (a sample, or everything).

Input: an image table and a saved Keras model (``model``). The items are the
ids of ``ids_from`` (any Parquet with an ``id`` column, e.g. one sample of
``scilens sample``: ``<out>/samples/technique=maxmargin/fraction=0.05``) and
``ids``, or every row when both are empty; an id missing from the table is
an error before any inference. All chosen layers (every layer that computes
something by default) come from one inference pass.

The config is :class:`scilens.diagnosis.config.ActivationsConfig`; the passes are in
:mod:`scilens.diagnosis.stages`.

Outputs (:mod:`scilens.diagnosis.activations`):

* ``activations.parquet`` -- id, label, prediction, correct, one ``array<float>`` column per layer;
* ``layers.json`` -- each layer's shape and the bytes written; ``report.html``, ``storage.png``.
"""

from __future__ import annotations

from scilens.core.job import Job, JobContext
from scilens.diagnosis import stages
from scilens.diagnosis.config import ActivationsConfig
from scilens.diagnosis.image_table import model_info, open_image_table
from scilens.diagnosis.report import write_activations_report

__all__ = ["JOB", "ActivationsConfig", "ActivationsJob"]


class ActivationsJob(Job[ActivationsConfig]):
    """Store a Keras model's activations (all or chosen layers) for a sample of ids, or all, as Parquet."""

    name = "activations"
    summary = "Store a Keras model's activations (all or chosen layers) for a sample of ids, or all, as Parquet."
    config_class = ActivationsConfig

    def run(self, ctx: JobContext[ActivationsConfig]) -> int:
        """Check model, ids and table, compute the layers in one pass, write the store and report.

        Parameters
        ----------
        ctx : JobContext

        Returns
        -------
        int
            Items stored.
        """
        cfg = ctx.config
        with ctx.step("check model, ids and data") as step:
            info = model_info(cfg.model)
            layers = stages.chosen_layers(info, cfg.layers)
            table = open_image_table(ctx.spark, ctx.inputs, cfg.data, info)
            ctx.reject(table.rejected)
            frame, wanted = stages.select_ids(ctx.spark, table.frame, table.source, cfg.ids_from, cfg.ids)
            if wanted is not None:
                step.counts["ids"] = wanted.count()
            step.counts["layers"] = len(layers)
        with ctx.step(f"compute {len(layers)} layers") as step:
            store = stages.write_activations(frame, info, layers, table.layout, cfg.batch_size, ctx.output)
            neurons = sum(store.layer_size(n) for n in store.layers)
            step.counts.update(rows=store.rows, bytes=store.bytes, neurons_per_item=neurons)
        with ctx.step("report"):
            write_activations_report(ctx.output, store)
        return store.rows


JOB = ActivationsJob
