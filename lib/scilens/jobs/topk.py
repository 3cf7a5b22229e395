"""``scilens topk``: an exact top-k activation query over an index of ``scilens activation-index``.

Input: an index directory. ``query=highest`` returns the ``k`` items with the
highest aggregate (``agg``) activation over the neuron group ``neurons`` of
``layer``; ``query=nearest`` the ``k`` items nearest (L2) to ``item`` in that
group. Candidate activations come from what the index was built from (its
``index.json`` ``source.kind``): read from the activation store
(``activation_store``), or, for an index built from an image table plus a
model (``inference``), computed by re-running the model on the candidate rows
only. A store, model or image table changed since (digest mismatch) is
refused before any work, naming what changed.

Outputs: ``result.parquet`` (rank, id, score), ``stats.json`` (the query's
cost and the source used: ``source_kind`` ``store`` or ``inference``),
``contact_sheet.png`` (the returned images with id and score: with
``images``, or by default the image table of an index built by inference)
and ``report.html``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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
    images: str | None = field(None, "The image table the store was computed from: draw the returned images "
                               "(default for an index built by inference: its image table).")


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
        from scilens.diagnosis.topk import ActivationIndex

        cfg = ctx.config
        with ctx.step("open index and source"):
            _check(cfg)
            if len(ctx.inputs) != 1 or not (Path(ctx.inputs[0]) / "index.json").is_file():
                raise InputError(f"input must be one index directory (with index.json), got {ctx.inputs}")
            meta = json.loads((Path(ctx.inputs[0]) / "index.json").read_text())
            source, built_from = _open_source(ctx, meta["source"])
            try:
                index = ActivationIndex.open(ctx.inputs[0], source)
            except (OSError, ValueError) as err:
                raise InputError(f"{built_from}: {err}") from err
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
            stats = {**asdict(index.last_stats), "source_kind": source.kind, **_where(meta["source"])}
            (ctx.output / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
            step.counts.update(rows=len(result), fetched=int(stats["rows_fetched"]))
        with ctx.step("report"):
            self._report(ctx, result, stats, source)
        return len(result)

    @staticmethod
    def _report(ctx: JobContext[TopkConfig], result, stats: dict, source: Any) -> None:
        from scilens.diagnosis.report import html_table, write_html
        from scilens.diagnosis.topk_stages import InferenceSource

        cfg = ctx.config
        what = (f"{cfg.query} k={cfg.k} layer {cfg.layer} neurons {list(cfg.neurons)}"
                + (f" agg={cfg.agg}" if cfg.query == "highest" else f" item {cfg.item}"))
        sections = [("Query", f"<p>{what}</p>"), ("Cost", html_table([stats]))]
        table = None
        if cfg.images:
            from scilens.diagnosis.image_table import ImageTableConfig, open_image_table

            table = open_image_table(ctx.spark, [cfg.images], ImageTableConfig())
        elif isinstance(source, InferenceSource):
            table = source.opened()[1]  # the index's own image table, already opened by the query
        if table is not None:
            from scilens.diagnosis.topk_report import images_by_id
            from scilens.vision.figures import contact_sheet

            found = images_by_id(table, result["id"].tolist())
            missing = [int(i) for i in result["id"] if int(i) not in found]
            if missing:
                raise InputError(f"images {table.source}: no image for ids {missing[:10]}")
            contact_sheet(ctx.output / "contact_sheet.png", [found[int(i)] for i in result["id"]],
                          result["id"].tolist(), result["score"].tolist(), what)
            sections.append(("Images", "<img src='contact_sheet.png'>"))
        sections.append(("Result", html_table(result.to_dict("records"))))
        write_html(ctx.output / "report.html", "scilens topk", sections)


def _where(source: dict[str, Any]) -> dict[str, Any]:
    """What stats.json says the candidates were fetched from."""
    if source.get("kind") == "inference":
        return {"model": source.get("model"), "images": source.get("images")}
    return {"store": source.get("path")}


def _open_source(ctx: JobContext[TopkConfig], built: dict[str, Any]) -> tuple[Any, str]:
    """The activation source of an index's ``source`` record, refused (naming what changed) if changed."""
    from scilens.diagnosis.topk import ParquetSource
    from scilens.jobs.activation_index import store_digest

    kind = built.get("kind")
    if kind == "activation_store":
        store = Path(built["path"])
        try:
            return ParquetSource(store / "activations.parquet", store_digest(store)), f"store {store}"
        except (OSError, ValueError) as err:
            raise InputError(f"store {store}: {err}") from err
    if kind == "inference":
        return _inference_source(ctx, built), f"model {built.get('model')} over {built.get('images')}"
    raise InputError(f"the index was built from a source of unknown kind {kind!r} (expected activation_store or "
                     "inference)")


def _inference_source(ctx: JobContext[TopkConfig], built: dict[str, Any]) -> Any:
    from scilens.diagnosis.config import ImageTableConfig
    from scilens.diagnosis.topk_stages import InferenceSource

    model, images = str(built["model"]), [str(p) for p in built["images"]]
    try:
        source = InferenceSource(ctx.spark, images, model, ImageTableConfig.from_dict(built.get("data")),
                                 int(built.get("batch_size", 128)))
    except (OSError, ValueError) as err:
        raise InputError(f"model {model} over {', '.join(images)}: {err}") from err
    if source.digest != built.get("digest"):
        recorded = built.get("parts", {})
        changed = [f"the {name}" for part, name in (("model", f"model {model}"),
                                                    ("images", f"image table {', '.join(images)}"))
                   if recorded.get(part) != source.parts[part]]
        raise InputError(f"digest mismatch: {' and '.join(changed) or 'the inputs'} changed since the index was "
                         f"built (digest {built.get('digest')}, now {source.digest}); rebuild the index")
    return source


JOB = TopkJob
