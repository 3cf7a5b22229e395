"""``scilens assert``: model assertions over a job's outputs, one severity table and the top-flagged items.

Input: a directory of model outputs (``glaucoma-infer``'s, ``sample``'s, ``astro``'s) and an assertion set
(``--set assertions=glaucoma|diagnosis|astro|<YAML>``, :mod:`scilens.assertions.sets`): the set's tables
are Spark SQL over the input's Parquet tables, and each table's assertions run in one pass
(:class:`scilens.assertions.checker.Checker`). The config is :class:`scilens.assertions.config.AssertConfig`.

Outputs:

* ``severity.parquet`` -- ``table``, ``assertion``, ``key`` (the judged row's or group's key columns, as a
  map), ``severity`` (> 0), ``detail``;
* ``counts.json`` -- flagged rows or groups per assertion;
* ``top.csv`` and ``report.html`` -- items ranked by their summed severity (the set's ``show.group``), with
  ``top.png``: the set's curve (e.g. an eye's OCT probability per B-scan) for each top item;
* ``model_views/<view>.parquet`` -- with ``--set model=...``: the model's outputs on every image of the table
  it reads and on the transformed copy (``id``, ``label``, ``prediction``, ``probabilities``,
  ``view_prediction``, ``view_probabilities``; :func:`scilens.assertions.consistency.view_predictions`);
* ``_rejected`` -- rows on which an assertion raised, naming it, and image rows the model could not read.

Assertions that need the model (tables naming a model view under ``needs``) run only when ``model`` is
given, and those that need an optional view (``optional_views``, e.g. the astro job's
``visit_sources.parquet``) only when the input holds it; otherwise they are skipped, the reason logged and
listed in the report. The images default to the
inputs the input directory's ``manifest.json`` records (the ``sample`` job's image table).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from scilens.assertions.config import AssertConfig
from scilens.core.inputs import InputError
from scilens.core.job import Job, JobContext

log = logging.getLogger("scilens")

__all__ = ["JOB", "AssertConfig", "AssertJob"]


class AssertJob(Job[AssertConfig]):
    """The ``assert`` job."""

    name = "assert"
    summary = "Run a set of model assertions (per-row, consistency, learned) over a job's outputs; rank flagged items."
    config_class = AssertConfig

    def run(self, ctx: JobContext[AssertConfig]) -> int:
        """Load the set, compute its model views, build its tables, run each table's assertions; return rows checked."""
        from pyspark.sql import functions as F

        from scilens.assertions.checker import Checker
        from scilens.assertions.sets import load_set

        cfg = ctx.config
        with ctx.step("load the assertion set and the views"):
            chosen = load_set(cfg.assertions)
            if len(ctx.inputs) != 1:
                raise InputError(f"give exactly one input directory, got {len(ctx.inputs)}")
            root = Path(ctx.inputs[0].removeprefix("file://"))
            needed = list(dict.fromkeys(v for t in chosen.tables for v in t.needs if v in chosen.model_views))
            # The model is checked (a missing file named) before any Spark work.
            info = _model(cfg, chosen.name, needed)
            for view, relative in chosen.views.items():
                path = root / relative
                if not path.exists():
                    raise InputError(f"assertion set {chosen.name}: view {view!r} needs {path}, which does not exist")
                ctx.spark.read.parquet(str(path)).createOrReplaceTempView(view)
            present = set()
            for view, relative in chosen.optional_views.items():
                if (root / relative).exists():
                    ctx.spark.read.parquet(str(root / relative)).createOrReplaceTempView(view)
                    present.add(view)
        if info is not None:
            _model_views(ctx, info, root, {v: chosen.model_views[v] for v in needed})
        with ctx.step("build the tables") as step:
            skipped = {t.name: _missing(t.needs, chosen, info is not None, present, root) for t in chosen.tables}
            skipped = {k: v for k, v in skipped.items() if v}
            for table in chosen.tables:
                if table.name in skipped:
                    log.info("assert: table %s skipped (%s): %s", table.name,
                             "; ".join(a.name for a in table.assertions), skipped[table.name])
            tables = [t for t in chosen.tables if t.name not in skipped]
            if not tables:
                raise InputError(f"assertion set {chosen.name}: every table was skipped: "
                                 + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
            frames = {}
            for table in tables:
                frames[table.name] = ctx.spark.sql(table.sql)
                frames[table.name].createOrReplaceTempView(table.name)
            step.counts.update(tables=len(frames), assertions=sum(len(t.assertions) for t in tables),
                               skipped=sum(len(t.assertions) for t in chosen.tables if t.name in skipped))
        severities, results, checked = [], [], 0
        for table in tables:
            with ctx.step(f"{table.name}: {len(table.assertions)} assertions") as step:
                checker = Checker(key=table.key)
                for assertion in table.assertions:
                    checker.register(assertion)
                # Lazy: the table's assertions run once, when the one severity table is written (their results
                # stay cached for the rejected rows).
                result = checker.run(frames[table.name])
                ctx.reject(result.rejected)
                rows = frames[table.name].count()
                checked += rows
                severities.append(result.severities.withColumn("table", F.lit(table.name)))
                results.append(result)
                step.counts.update(rows=rows)
        with ctx.step("severity table and report") as step:
            union = severities[0]
            for frame in severities[1:]:
                union = union.unionByName(frame)
            with results[0].sized_batches():
                union.select("table", "assertion", "key", "severity", "detail").write.parquet(
                    str(ctx.output / "severity.parquet"))
            # Annotated: pyspark's stub types toPandas() through a pandas alias that does not resolve without
            # pandas-stubs.
            flagged: pd.DataFrame = ctx.spark.read.parquet(str(ctx.output / "severity.parquet")).toPandas()
            counts = {f"{t}: {a}": int(n) for (t, a), n in flagged.groupby(["table", "assertion"]).size().items()}
            (ctx.output / "counts.json").write_text(json.dumps(counts, indent=2, sort_keys=True))
            top = _top_items(flagged, chosen.show.group if chosen.show else None, cfg.top)
            top.to_csv(ctx.output / "top.csv", index=False)
            _report(ctx, chosen, counts, top, frames, skipped)
            step.counts.update(flagged=len(flagged), top=len(top))
        return checked


def _missing(needs: list[str], chosen: Any, have_model: bool, present: set[str], root: Path) -> str:
    """Why a table that reads ``needs`` cannot run ('' when it can)."""
    why = []
    models = [v for v in needs if v in chosen.model_views]
    if models and not have_model:
        why.append(f"it reads model view(s) {', '.join(models)}; give the model with --set model=path/model.keras")
    absent = [v for v in needs if v in chosen.optional_views and v not in present]
    if absent:
        why.append("the input lacks " + ", ".join(str(root / chosen.optional_views[v]) for v in absent))
    return "; ".join(why)


def _model(cfg: AssertConfig, set_name: str, needed: list[str]) -> Any:
    """The model's description when the set has model views to compute, else None (a missing file is refused)."""
    if cfg.model is None:
        return None
    from scilens.diagnosis.image_table import model_info

    info = model_info(cfg.model)  # InputError naming the path when there is no such file
    if not needed:
        log.info("assert: set %s has no model view; the model %s is not used", set_name, cfg.model)
        return None
    return info


def _image_inputs(cfg: AssertConfig, root: Path) -> tuple[list[str], dict[str, Any]]:
    """The image table's inputs and columns: ``images`` and ``data``, or what the input's manifest records."""
    if cfg.images:
        return list(cfg.images), cfg.data.to_dict()
    manifest = root / "manifest.json"
    recorded = json.loads(manifest.read_text()) if manifest.is_file() else {}
    if not recorded.get("inputs"):
        raise InputError(f"the model views need the image table the model reads: give --set images=<table> "
                         f"(no manifest.json recording the inputs in {root})")
    inputs = [str(p) for p in recorded["inputs"]]
    # A run records its inputs as given: a relative path is read from here, not from where that run started.
    absent = [p for p in inputs if "://" not in p and not Path(p).exists()]
    if absent:
        raise InputError(f"the image table {', '.join(absent)} that {manifest} records is not there (relative paths "
                         f"are read from {Path.cwd()}); give it with --set images=<table>")
    return inputs, dict((recorded.get("config") or {}).get("data") or cfg.data.to_dict())


def _model_views(ctx: JobContext[AssertConfig], info: Any, root: Path, views: dict[str, str]) -> None:
    """Compute each model view (the model on every image and on its transformed copy) and register it."""
    from scilens.assertions.consistency import view_predictions
    from scilens.diagnosis.image_table import ImageTableConfig, open_image_table

    cfg = ctx.config
    with ctx.step(f"model views: {', '.join(views)}") as step:
        inputs, columns = _image_inputs(cfg, root)
        table = open_image_table(ctx.spark, inputs, ImageTableConfig.from_dict(columns, "data"), info,
                                 step="model views")
        ctx.reject(table.rejected)
        for view, transform in views.items():
            path = ctx.output / "model_views" / f"{view}.parquet"
            view_predictions(table.frame, info, table.layout, table.shape, transform,
                             cfg.batch_size).write.parquet(str(path))
            frame = ctx.spark.read.parquet(str(path))
            frame.createOrReplaceTempView(view)
            step.counts[view] = frame.count()


def _top_items(flagged: pd.DataFrame, group: list[str] | None, n: int) -> pd.DataFrame:
    """Items ranked by summed severity, with the assertions that flagged them (ties by the group's values)."""
    if flagged.empty:
        return pd.DataFrame(columns=[*(group or ["key"]), "severity", "assertions", "flags"])
    keys = flagged["key"].map(dict)
    if group:
        items = pd.DataFrame({c: keys.map(lambda k, c=c: k.get(c)) for c in group})
        mask = items.notna().all(axis=1)
    else:
        group = ["key"]
        items = pd.DataFrame({"key": keys.map(lambda k: ", ".join(f"{a}={b}" for a, b in sorted(k.items())))})
        mask = pd.Series(True, index=items.index)
    frame = pd.concat([items, flagged[["assertion", "severity"]]], axis=1)[mask]
    ranked = (frame.groupby(group, dropna=False)
              .agg(severity=("severity", "sum"), flags=("severity", "size"),
                   assertions=("assertion", lambda a: "; ".join(sorted(set(a)))))
              .reset_index().sort_values(["severity", *group], ascending=[False, *[True] * len(group)]))
    return ranked.head(n).reset_index(drop=True)


def _report(ctx: JobContext[AssertConfig], chosen: Any, counts: dict[str, int], top: pd.DataFrame,
            frames: dict[str, Any], skipped: dict[str, str]) -> None:
    from scilens.diagnosis.report import html_table, write_html

    sections = [("Assertion set", f"<p>{chosen.name}: {chosen.description}</p>"),
                ("Flagged per assertion", html_table([{"assertion": k, "flagged": v} for k, v in counts.items()])),
                (f"Top {len(top)} flagged items", html_table(top.to_dict("records")))]
    if skipped:
        sections.append(("Skipped", html_table(
            [{"table": t.name, "assertion": a.name, "why": skipped[t.name]} for t in chosen.tables
             if t.name in skipped for a in t.assertions])))
    show = chosen.show
    if show and show.table and show.x and show.y and len(top) and show.table in frames:
        _curves(ctx.output / "top.png", frames[show.table], top, show)
        sections.insert(2, ("The top items' curves", "<img src='top.png'>"))
    write_html(ctx.output / "report.html", "scilens assert", sections)


def _curves(path: Path, frame: Any, top: pd.DataFrame, show: Any) -> None:
    """One panel per top item: ``show.y`` against ``show.x`` over its rows of ``show.table``."""
    import matplotlib

    matplotlib.use("Agg")
    import functools
    import operator

    import matplotlib.pyplot as plt
    from pyspark.sql import functions as F

    # the top items' rows only: one OR of per-item ANDs over the group's columns (compared as text)
    items = [functools.reduce(operator.and_, [F.col(c).cast("string") == str(v)
                                              for c, v in zip(show.group, row, strict=True)])
             for row in top[show.group].itertuples(index=False)]
    rows = frame.where(functools.reduce(operator.or_, items)).select(*show.group, show.x, show.y).toPandas()
    n = len(top)
    cols = min(5, n)
    fig, axes = plt.subplots(-(-n // cols), cols, figsize=(2.6 * cols, 2.2 * -(-n // cols)), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (_, item) in zip(axes.ravel(), top.iterrows(), strict=False):
        mine = rows
        for column in show.group:
            mine = mine[mine[column].astype(str) == str(item[column])]
        mine = mine.sort_values(show.x)
        ax.axis("on")
        ax.plot(mine[show.x], mine[show.y], marker=".", lw=1)
        ax.set_title(" ".join(str(item[c]) for c in show.group) + f"\nseverity {item['severity']:.3g}", fontsize=8)
        ax.set_xlabel(show.x, fontsize=7)
        ax.set_ylabel(show.y, fontsize=7)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


JOB = AssertJob
