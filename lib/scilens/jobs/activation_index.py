"""``scilens activation-index``: the exact top-k activation index (DeepEverest) of an activation store.

Input: an activation store (the ``activations`` job's output). For each chosen
layer and neuron it writes the MAI and NPI tables of
:mod:`scilens.diagnosis.topk_index` under ``<output>/<layer>/``, built with
Spark (:mod:`scilens.diagnosis.topk_stages`), plus ``ids.parquet``,
``index.json`` (recording the store's path and digest, so that a query on a
changed store is refused) and ``report.html``.

Re-inference input (``model``: an image table plus a model) is not built yet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from scilens.core.config import ConfigError, field
from scilens.core.inputs import InputError
from scilens.core.job import Job, JobConfig, JobContext


@dataclass
class ActivationIndexConfig(JobConfig):
    """Config of ``scilens activation-index``."""

    model: str | None = field(None, "Re-inference input mode (image table plus model): not built yet; "
                              "leave empty and give an activation store as input.")
    layers: list[str] = field([], "Layers to index; empty: every layer of the store.")
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
    summary = "Build the exact top-k activation index (MAI + NPI per neuron) of an activation store."
    config_class = ActivationIndexConfig

    def run(self, ctx: JobContext[ActivationIndexConfig]) -> int:
        """Build the index of the input store; return the number of items indexed."""
        from scilens.diagnosis.activations import ActivationStore
        from scilens.diagnosis.topk_stages import build_index_spark

        cfg = ctx.config
        with ctx.step("check store and layers") as step:
            if cfg.model:
                raise ConfigError("model: the re-inference input mode (image table plus model) is not built "
                                  "yet; give an activation store (the activations job's output) as --input")
            if not 0 < cfg.ratio < 1:
                raise ConfigError(f"ratio must be in (0, 1), got {cfg.ratio}")
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
            self._report(ctx, store, meta)
        return int(meta["N"])

    @staticmethod
    def _report(ctx: JobContext, store, meta: dict) -> None:
        from scilens.diagnosis.report import html_table, write_html

        rows = []
        for layer, info in meta["layers"].items():
            index_bytes = sum(int(v) for v in info.get("bytes", {}).values())
            raw = 4 * store.layer_size(layer) * store.rows
            rows.append({"layer": layer, "neurons": store.layer_size(layer), "index bytes": index_bytes,
                         "materialised float32 bytes": raw, "index / materialised": index_bytes / max(raw, 1)})
        head = {"N": meta["N"], "P": meta["P"], "ratio": meta["ratio"],
                "store": meta["source"]["path"], "digest": meta["source"]["digest"]}
        write_html(ctx.output / "report.html", "scilens activation-index",
                   [("Index", html_table([head])), ("Bytes per layer", html_table(rows)),
                    ("index.json", f"<pre>{json.dumps(meta['source'], indent=2)}</pre>")])


JOB = ActivationIndexJob
