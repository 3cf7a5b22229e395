"""``scilens topk``: an exact top-k activation query over an index of ``scilens activation-index``.

Input: an index directory. ``query=highest`` returns the ``k`` items with the
highest aggregate (``agg``) activation over the neuron group ``neurons`` of
``layer``; ``query=nearest`` the ``k`` items nearest (L2) to ``item`` in that
group. Candidate activations are read from the activation store the index was
built from; a store changed since (digest mismatch) is refused.

Outputs: ``result.parquet`` (rank, id, score), ``stats.json`` (the query's
cost and the source used), ``contact_sheet.png`` (with ``images``: the
returned images with id and score) and ``report.html``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from scilens.core.config import ConfigError, field
from scilens.core.inputs import InputError
from scilens.core.job import Job, JobConfig, JobContext

QUERIES = ("highest", "nearest")


@dataclass
class TopkConfig(JobConfig):
    """Config of ``scilens topk``."""

    query: str = field("highest", "highest (largest aggregate activation) or nearest (L2 to item).")
    layer: str | None = field(None, "Indexed layer to query.")
    neurons: list[int] = field([], "The neuron group: flat neuron numbers of the layer.")
    k: int = field(10, "Items returned.", min=1)
    agg: str = field("sum", "Aggregate of the group for highest: sum, mean or max.")
    item: int | None = field(None, "Query item id (nearest).")
    images: str | None = field(None, "The image table the store was computed from: draw the returned images.")


def _check(cfg: TopkConfig) -> None:
    if cfg.query not in QUERIES:
        raise ConfigError(f"query must be one of {', '.join(QUERIES)}, got {cfg.query!r}")
    if not cfg.layer:
        raise ConfigError("layer: give the layer to query")
    if not cfg.neurons:
        raise ConfigError("neurons: give a non-empty list of neuron numbers")
    if cfg.query == "nearest" and cfg.item is None:
        raise ConfigError("item: nearest needs the query item id")


class TopkJob(Job[TopkConfig]):
    """The ``topk`` job."""

    name = "topk"
    summary = "Exact top-k activation query (highest or nearest) over an activation index, with a contact sheet."
    config_class = TopkConfig

    def run(self, ctx: JobContext[TopkConfig]) -> int:
        """Answer the query; return the number of items returned."""
        from scilens.diagnosis.topk import ActivationIndex, ParquetSource
        from scilens.jobs.activation_index import store_digest

        cfg = ctx.config
        with ctx.step("open index and store"):
            _check(cfg)
            if len(ctx.inputs) != 1 or not (Path(ctx.inputs[0]) / "index.json").is_file():
                raise InputError(f"input must be one index directory (with index.json), got {ctx.inputs}")
            meta = json.loads((Path(ctx.inputs[0]) / "index.json").read_text())
            store = Path(meta["source"]["path"])
            try:
                source = ParquetSource(store / "activations.parquet", store_digest(store))
                index = ActivationIndex.open(ctx.inputs[0], source)
            except (OSError, ValueError) as err:
                raise InputError(f"store {store}: {err}") from err
        with ctx.step(f"query {cfg.query}") as step:
            try:
                if cfg.query == "highest":
                    result = index.highest(str(cfg.layer), list(cfg.neurons), cfg.k, agg=cfg.agg)
                else:
                    result = index.nearest(str(cfg.layer), list(cfg.neurons), int(cfg.item or 0), cfg.k)
            except ValueError as err:  # the index names the bad layer, neuron, k or item before any fetch
                raise InputError(str(err)) from err
            result.insert(0, "rank", range(1, len(result) + 1))
            result.to_parquet(ctx.output / "result.parquet", index=False)
            if index.last_stats is None:  # every query sets it
                raise RuntimeError("the index recorded no stats for the query")
            stats = {**asdict(index.last_stats), "source_kind": source.kind, "store": str(store)}
            (ctx.output / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
            step.counts.update(rows=len(result), fetched=int(stats["rows_fetched"]))
        with ctx.step("report"):
            self._report(ctx, result, stats)
        return len(result)

    @staticmethod
    def _report(ctx: JobContext[TopkConfig], result, stats: dict) -> None:
        from scilens.diagnosis.report import html_table, write_html

        cfg = ctx.config
        what = (f"{cfg.query} k={cfg.k} layer {cfg.layer} neurons {list(cfg.neurons)}"
                + (f" agg={cfg.agg}" if cfg.query == "highest" else f" item {cfg.item}"))
        sections = [("Query", f"<p>{what}</p>"), ("Cost", html_table([stats]))]
        if cfg.images:
            from scilens.diagnosis.image_table import ImageTableConfig, open_image_table
            from scilens.diagnosis.topk_report import images_by_id
            from scilens.vision.figures import contact_sheet

            table = open_image_table(ctx.spark, [cfg.images], ImageTableConfig())
            found = images_by_id(table, result["id"].tolist())
            missing = [int(i) for i in result["id"] if int(i) not in found]
            if missing:
                raise InputError(f"images {cfg.images}: no image for ids {missing[:10]}")
            contact_sheet(ctx.output / "contact_sheet.png", [found[int(i)] for i in result["id"]],
                          result["id"].tolist(), result["score"].tolist(), what)
            sections.append(("Images", "<img src='contact_sheet.png'>"))
        sections.append(("Result", html_table(result.to_dict("records"))))
        write_html(ctx.output / "report.html", "scilens topk", sections)


JOB = TopkJob
