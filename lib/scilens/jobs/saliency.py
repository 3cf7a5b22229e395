"""``scilens saliency``: saliency masks of any Keras image classifier over a scilens image table.

Input: an image table (``id``, ``label``, image; :mod:`scilens.diagnosis.datasets`)
and a saved Keras model (``model``). For every image (or the ids of
``ids_from`` and ``ids``, e.g. one sample of ``scilens sample``) and every
method of ``methods`` (integrated gradients, SmoothGrad: the kernels the
glaucoma jobs use, :mod:`scilens.vision.saliency`), one mask explaining the
output chosen by ``target`` (:mod:`scilens.diagnosis.saliency`). The config is
:class:`scilens.diagnosis.config.SaliencyJobConfig`.

Outputs:

* ``masks.parquet`` -- mask_id (unique per mask: ``id x methods`` plus the
  method's position in ``methods``), id, label, prediction, method, target,
  probability (of the target output), completeness_gap (integrated
  gradients), mask (an (h, w) float32 tensor); sorted by mask_id (so by id)
  in small row groups, so fetching a few masks by id reads few row groups
  (:func:`scilens.core.parquet.write_sorted`); ``scilens mask-index
  --set key_columns=[mask_id,id,method]`` indexes it;
* ``report.html`` and ``masks.png`` (the first images with their masks over them).
"""

from __future__ import annotations

from dataclasses import fields

import pandas as pd

from scilens.core.config import ConfigError
from scilens.core.job import Job, JobContext
from scilens.diagnosis.config import SaliencyJobConfig
from scilens.vision.saliency import SaliencyConfig

__all__ = ["JOB", "SaliencyJob", "SaliencyJobConfig"]

SHOWN = 10
METHOD_SHORT = {"integrated_gradients": "IG", "smoothgrad": "SmoothGrad"}
MASKS_TABLE = "masks.parquet"


class SaliencyJob(Job[SaliencyJobConfig]):
    """Saliency masks (integrated gradients, SmoothGrad) of a Keras classifier over an image table."""

    name = "saliency"
    summary = "Saliency masks (integrated gradients, SmoothGrad) of a Keras classifier over an image table."
    config_class = SaliencyJobConfig

    def run(self, ctx: JobContext[SaliencyJobConfig]) -> int:
        """Check model, target, ids and table; compute and write the masks; report.

        Parameters
        ----------
        ctx : JobContext

        Returns
        -------
        int
            Masks written.
        """
        from scilens.core.parquet import write_sorted
        from scilens.diagnosis import stages
        from scilens.diagnosis.image_table import model_info, open_image_table
        from scilens.diagnosis.saliency import check_target, saliency_frame

        cfg = ctx.config
        with ctx.step("check model, ids and data") as step:
            info = model_info(cfg.model)
            try:
                target = check_target(cfg.target, info.n_classes)
            except ValueError as err:
                raise ConfigError(f"target: {err}") from err
            table = open_image_table(ctx.spark, ctx.inputs, cfg.data, info)
            ctx.reject(table.rejected)
            frame, wanted = stages.select_ids(ctx.spark, table.frame, table.source, cfg.ids_from, cfg.ids)
            images = (wanted if wanted is not None else frame).count()
            tasks = cfg.tasks or max(1, min(2 * ctx.spark.sparkContext.defaultParallelism, -(-images // 8)))
            step.counts.update(images=images, methods=len(cfg.methods), tasks=tasks)
        with ctx.step(f"saliency of {images} images x {len(cfg.methods)} methods") as step:
            settings = SaliencyConfig(**{f.name: getattr(cfg, f.name) for f in fields(SaliencyConfig)})
            masks = saliency_frame(frame, info, table.layout, settings, target, tasks)
            write_sorted(masks, ctx.output / MASKS_TABLE, ["mask_id"])
            written = ctx.spark.read.parquet(str(ctx.output / MASKS_TABLE))
            step.counts["masks"] = n_masks = written.count()
        with ctx.step("report"):
            self._report(ctx, table, written)
        return n_masks

    @staticmethod
    def _report(ctx: JobContext[SaliencyJobConfig], table, written) -> None:
        from scilens.core import tensor
        from scilens.diagnosis.report import html_table, write_html
        from scilens.diagnosis.topk_report import images_by_id
        from scilens.vision.figures import contact_sheet

        first = written.orderBy("id", "method").limit(SHOWN).toPandas()
        found = images_by_id(table, first["id"].tolist())
        contact_sheet(ctx.output / "masks.png", [found[int(i)] for i in first["id"]], first["id"].tolist(),
                      first["probability"].tolist(), "saliency masks over their images",
                      overlays=tensor.decode_column(first["mask"]),
                      captions=[f"id {r.id} {METHOD_SHORT.get(r.method, r.method)}\n"
                                f"class {r.target} p={r.probability:.3f}" for r in first.itertuples()])
        summary = (written.groupBy("method").agg({"completeness_gap": "max", "probability": "mean", "id": "count"})
                   .toPandas().rename(columns={"count(id)": "masks", "avg(probability)": "mean probability",
                                               "max(completeness_gap)": "max completeness gap"}))
        rows = first.drop(columns=["mask"]).to_dict("records")
        write_html(ctx.output / "report.html", "scilens saliency",
                   [("Masks per method", html_table(pd.DataFrame(summary).to_dict("records"))),
                    ("First masks", "<img src='masks.png'>" + html_table(rows))])


JOB = SaliencyJob
