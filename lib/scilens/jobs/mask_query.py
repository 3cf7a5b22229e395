"""``scilens mask-query``: an exact query over the masks of a mask index, deciding most masks from the index.

Input: a mask index (``scilens mask-index``'s output). The query (``form``:
``filter``, ``topk``, ``aggregate`` or ``cp``; the box ``roi``, whose entries
may name indexed key columns for a box per mask; ``threshold``; the measure
``by``: count, fraction of the box or share of the mask) runs by
filter-verify (:class:`scilens.masks.query.MaskIndex`): CHI bounds decide most
masks and only the undecided ones are read from the mask table, by id. The
config is :class:`scilens.masks.config.MaskQueryConfig`.

Outputs:

* ``result.parquet`` and ``result.csv`` -- the answer (mask id, score where
  the form has one, the indexed key columns), in answer order;
* ``stats.json`` -- masks decided by the index, masks decoded, bytes read, seconds;
* ``matches.png`` -- the first ``shown`` returned masks over their images
  (the table's ``image_column``, when it has one);
* ``report.html``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from scilens.core.config import ConfigError
from scilens.core.inputs import InputError
from scilens.core.job import Job, JobContext
from scilens.masks.config import MaskQueryConfig

__all__ = ["JOB", "MaskQueryConfig", "MaskQueryJob"]


class MaskQueryJob(Job[MaskQueryConfig]):
    """The ``mask-query`` job."""

    name = "mask-query"
    summary = "Answer an exact query over masks (filter, top-k, aggregate, CP) from a mask index, decoding few masks."
    config_class = MaskQueryConfig

    def run(self, ctx: JobContext[MaskQueryConfig]) -> int:
        """Run the query; return the number of masks it ranged over (an empty answer is an answer)."""
        from scilens.masks.query import MaskIndex

        cfg = ctx.config
        with ctx.step("open the index") as step:
            if len(ctx.inputs) != 1:
                raise InputError(f"give exactly one mask index as input, got {len(ctx.inputs)}")
            path = ctx.inputs[0].removeprefix("file://")
            try:
                index = MaskIndex.open(path, table=cfg.table or None)
            except (OSError, ValueError) as err:  # no index, or a table that changed since indexing
                raise InputError(str(err)) from err
            try:
                roi = index.boxes(cfg.roi)
            except ValueError as err:
                raise ConfigError(f"roi: {err}") from err
            step.counts["masks"] = index.index.rows
        with ctx.step(f"{cfg.form} query") as step:
            answer = _answer(index, cfg, roi)
            stats = index.last_stats
            if cfg.form != "aggregate":  # an aggregate's rows are groups, not masks
                answer = _with_keys(index, answer)
            answer.to_parquet(ctx.output / "result.parquet", index=False)
            answer.to_csv(ctx.output / "result.csv", index=False)
            stats_dict = asdict(stats) if stats is not None else {}
            (ctx.output / "stats.json").write_text(json.dumps(stats_dict, indent=2))
            step.counts.update(rows=len(answer), decoded=stats_dict.get("decoded", 0),
                               decided_by_index=stats_dict.get("decided_by_index", 0))
        with ctx.step("figure and report"):
            self._report(ctx, index, answer, stats_dict)
        return int(stats_dict.get("masks", index.index.rows))

    @staticmethod
    def _report(ctx: JobContext[MaskQueryConfig], index: Any, answer: pd.DataFrame, stats: dict) -> None:
        from scilens.diagnosis.report import html_table, write_html

        cfg = ctx.config
        sections = [("Query", html_table([{k: v for k, v in cfg.to_dict().items() if k != "spark"}])),
                    ("Cost", html_table([stats]))]
        id_column = index.meta.get("id_column", "id")
        shown = answer.head(cfg.shown) if cfg.form != "aggregate" else answer.head(0)
        if len(shown):
            _matches_figure(ctx.output / "matches.png", index, shown, id_column, cfg)
            sections.append((f"First {len(shown)} of {len(answer)} returned", "<img src='matches.png'>"))
        elif answer.empty:
            sections.append(("Returned", f"<p>No mask of the {stats.get('masks', 0)} queried meets the condition.</p>"))
        sections.append(("Answer", html_table(answer.head(200).to_dict("records"))))
        write_html(ctx.output / "report.html", "scilens mask-query", sections)


def _answer(index: Any, cfg: MaskQueryConfig, roi: Any) -> pd.DataFrame:
    """Dispatch ``cfg.form`` to the index (the errors of a wrong combination name the config keys)."""
    try:
        if cfg.form == "cp":
            return index.CP(roi, cfg.threshold)
        if cfg.form == "filter":
            if cfg.value is None:
                raise ConfigError("form=filter needs value")
            return index.filter(roi, cfg.threshold, cfg.op, cfg.value, by=cfg.by)
        if cfg.form == "topk":
            if cfg.k is None:
                raise ConfigError("form=topk needs k")
            return index.topk(roi, cfg.threshold, min(cfg.k, index.index.rows), by=cfg.by, order=cfg.order)
        if cfg.group_by is None:
            raise ConfigError("form=aggregate needs group_by (an indexed key column)")
        if cfg.k is not None:
            return index.aggregate(roi, cfg.threshold, cfg.group_by, k=cfg.k, order=cfg.order)
        if cfg.value is None:
            raise ConfigError("form=aggregate needs k, or op and value")
        return index.aggregate(roi, cfg.threshold, cfg.group_by, op=cfg.op, value=cfg.value)
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(str(err)) from err


def _with_keys(index: Any, answer: pd.DataFrame) -> pd.DataFrame:
    """The answer with the mask id under its table's name and every indexed key column beside it."""
    id_column = index.meta.get("id_column", "id")
    rows = np.searchsorted(index.index.ids, answer["id"].to_numpy())
    out = answer.rename(columns={"id": id_column})
    for key, values in sorted(index.index.keys.items()):
        if key not in out.columns:
            out[key] = values[rows]
    return out


def _matches_figure(path: Any, index: Any, shown: pd.DataFrame, id_column: str, cfg: MaskQueryConfig) -> None:
    from scilens.core import tensor
    from scilens.vision.figures import contact_sheet

    ids = shown[id_column].to_numpy(np.int64)
    masks, _ = index.source.fetch(ids)
    images: list[np.ndarray] = [np.zeros(m.shape, np.float32) for m in masks]
    table = getattr(index.source, "table", None)
    if cfg.image_column and table is not None and cfg.image_column in table.files[0].schema_arrow.names:
        got, _ = table.read(ids, [cfg.image_column])
        images = [np.asarray(im) for im in tensor.decode_column(pd.Series(got.column(0).to_pylist()))]
    score = shown["score"] if "score" in shown.columns else shown.get("cp", pd.Series(np.zeros(len(shown))))
    # the mask id, its score and the values of up to three other keys (not the box's) name each panel
    keys = [k for k in shown.columns if k not in (id_column, "score", "cp", *map(str, cfg.roi))][:3]
    captions = [f"{id_column} {r[id_column]}: {s:.3g}\n" + " ".join(str(r[k]) for k in keys)
                for (_, r), s in zip(shown.iterrows(), score.astype(float), strict=True)]
    contact_sheet(path, images, ids.tolist(), score.astype(float).tolist(),
                  f"mask-query: {cfg.form} by {cfg.by}, threshold {cfg.threshold}", overlays=list(masks),
                  captions=captions)


JOB = MaskQueryJob
