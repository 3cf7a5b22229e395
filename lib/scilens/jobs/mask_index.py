"""``scilens mask-index``: the cumulative histogram index (MaskSearch CHI) of every mask of a mask table.

Input: one Parquet mask table: a tensor column of 2-D masks (``mask_column``)
and key columns, the first an integer mask id unique per mask (saliency masks
of ``scilens saliency`` or ``glaucoma-infer``, brain masks and FA slices,
co-add planes). ``where`` chooses rows (all masks of one index have one
shape). Each mask is normalised to [0, 1] by ``normalise``, quantised into
``bins`` levels and summarised by its CHI on a ``cell``-pixel grid
(:mod:`scilens.masks.chi`), computed by the executors
(:mod:`scilens.masks.stages`). The config is
:class:`scilens.masks.config.MaskIndexConfig`.

Outputs:

* ``chi.parquet`` -- the mask id, the other key columns and each mask's CHI,
  sorted by id;
* ``index.json`` -- bins, cell, normalisation, rows, shape, bytes, and the
  mask table's path and digest (a query on a changed table is refused);
* ``_rejected`` -- masks that cannot be indexed (NaN, infinite, not 2-D), named by id;
* ``report.html`` -- index bytes against the mask table's.
"""

from __future__ import annotations

from pathlib import Path

from scilens.core.inputs import InputError
from scilens.core.job import Job, JobContext
from scilens.masks.config import MaskIndexConfig

__all__ = ["JOB", "MaskIndexConfig", "MaskIndexJob"]


class MaskIndexJob(Job[MaskIndexConfig]):
    """The ``mask-index`` job."""

    name = "mask-index"
    summary = "Index every mask of a mask table (cumulative histograms, MaskSearch) for exact queries over masks."
    config_class = MaskIndexConfig

    def run(self, ctx: JobContext[MaskIndexConfig]) -> int:
        """Index the input mask table; return the number of masks indexed."""
        from scilens.core.digest import table_digest
        from scilens.masks.stages import build_index_spark

        cfg = ctx.config
        with ctx.step("check the mask table") as step:
            if len(ctx.inputs) != 1:
                raise InputError(f"give exactly one mask table as input, got {len(ctx.inputs)}")
            # absolute, so that a query from another directory reads (and digests) the same table
            table = Path(ctx.inputs[0].removeprefix("file://")).absolute()
            frame = ctx.spark.read.parquet(str(table))
            if cfg.where:
                frame = frame.where(cfg.where)
            source = {"kind": "parquet", "path": str(table), "where": cfg.where,
                      "digest": table_digest(table)}
            table_bytes = sum(p.stat().st_size for p in ([table] if table.is_file() else table.rglob("*.parquet")))
            step.counts["table_bytes"] = table_bytes
        with ctx.step("index") as step:
            meta, rejected = build_index_spark(frame, ctx.output, table=str(table), mask_column=cfg.mask_column,
                                               key_columns=cfg.key_columns, bins=cfg.bins, cell=cfg.cell,
                                               normalise=cfg.normalise, source=source)
            ctx.reject(rejected)
            step.counts.update(masks=int(meta["rows"]), index_bytes=int(meta["bytes"]["chi"]))
        with ctx.step("report"):
            self._report(ctx, meta, table_bytes)
        return int(meta["rows"])

    @staticmethod
    def _report(ctx: JobContext[MaskIndexConfig], meta: dict, table_bytes: int) -> None:
        import json

        from scilens.diagnosis.report import html_table, write_html

        head = {"masks": meta["rows"], "shape": "x".join(map(str, meta["shape"])), "bins": meta["bins"],
                "cell": meta["cell"], "normalise": meta["normalise"], "index bytes": meta["bytes"]["chi"],
                "mask table bytes": table_bytes, "index / table": meta["bytes"]["chi"] / max(table_bytes, 1)}
        write_html(ctx.output / "report.html", "scilens mask-index",
                   [("Index", html_table([head])),
                    ("index.json", f"<pre>{json.dumps(meta, indent=2, sort_keys=True)}</pre>")])


JOB = MaskIndexJob
