"""``scilens sample``: latent embeddings of a model on an image table, and decision-boundary samples of them.

Input: an image table (``id``, ``label``, image; :mod:`scilens.diagnosis.datasets`)
and a saved Keras model (``model``). Every row's last-hidden-layer
embedding, logits and prediction are computed in one inference pass
(``predict_batch_udf``, the model loaded once per Python worker), then each
technique draws a sample at each fraction (:mod:`scilens.diagnosis.samplers`)
-- on the driver, or with Spark MLlib when the latent table is large (``fit``;
see :mod:`scilens.diagnosis.stages`). MaxMargin runs the paper's setting on
the driver by default (``--set sampling.maxmargin=paper|spark-parity``); the
Spark path has the spark-parity setting only, and ``summary.json`` says which
one ran (``maxmargin``).
The config is :class:`scilens.diagnosis.config.SampleConfig`.

Outputs:

* ``embeddings.parquet`` -- id, label, prediction, correct, latent (``array<float>``), logits;
* ``samples/technique=<t>/fraction=<f>/part-*.parquet`` -- id, label, prediction,
  correct, stratum (class, cluster or cell), likelihood_ratio and its log,
  rank within the stratum (0 = nearest the boundary), end (boundary,
  exemplar, random, ...); ``eb_tree`` makes one sample, filed under the
  fraction it came to;
* ``summary.json``, ``report.html``, ``latent.png``, ``composition.png``.
"""

from __future__ import annotations

import json

import numpy as np

from scilens.core.inputs import InputError
from scilens.core.job import Job, JobContext, JobFailed
from scilens.diagnosis import stages
from scilens.diagnosis.config import SampleConfig
from scilens.diagnosis.image_table import model_info, open_image_table
from scilens.diagnosis.report import PLOT_ROWS, write_sample_report

__all__ = ["JOB", "SampleConfig", "SampleJob"]


class SampleJob(Job[SampleConfig]):
    """Embed an image table with a Keras model and write decision-boundary samples of its latent space."""

    name = "sample"
    summary = "Embed an image table with a Keras model and write decision-boundary samples of its latent space."
    config_class = SampleConfig

    def run(self, ctx: JobContext[SampleConfig]) -> int:
        """Check, embed, sample on the driver or on Spark, summarise and report.

        Parameters
        ----------
        ctx : JobContext

        Returns
        -------
        int
            Rows embedded.
        """
        from scilens.vision.inference import resolve_outputs

        cfg = ctx.config
        with ctx.step("check model and data") as step:
            info = model_info(cfg.model)
            layer = cfg.layer or info.latent_layer
            resolve_outputs(info, [layer])
            if layer not in info.layers:
                raise InputError(f"layer: {layer!r} is not a layer of {cfg.model} with a latent output; "
                                 f"one of: {', '.join(info.layers)}")
            table = open_image_table(ctx.spark, ctx.inputs, cfg.data, info)
            ctx.reject(table.rejected)
            dims = int(np.prod(info.layers[layer]))
            step.counts.update(classes=info.n_classes, latent_dims=dims)
        with ctx.step(f"embed (layer {layer})") as step:
            emb = stages.embed(ctx.spark, table, info, layer, cfg.batch_size, ctx.output / "embeddings.parquet")
            n = step.counts["rows"] = emb.count()
            accuracy = stages.embedding_accuracy(emb, n)
        if n == 0:
            return 0
        path = cfg.sampling_path(n, dims)
        if path == "spark" and cfg.driver_only():
            raise JobFailed(f"the latent table ({n} x {dims}) exceeds driver_max_values={cfg.driver_max_values}, "
                            f"but {', '.join(cfg.driver_only())} run only on the "
                            f"driver; raise driver_max_values or drop them")
        with ctx.step(f"sample on the {path}") as step:
            draw = stages.sample_on_driver if path == "driver" else stages.sample_on_spark
            samples, seconds = draw(emb, cfg.techniques, cfg.fractions, cfg.sampling)
            summary = stages.write_samples(samples, ctx.output / "samples", n, seconds)
            step.counts.update(samples=len(summary), rows=sum(r["size"] for r in summary))
        setting = maxmargin_setting(cfg, path)
        (ctx.output / "summary.json").write_text(json.dumps(
            {"model": cfg.model, "layer": layer, "rows": n, "latent_dims": dims, "model_accuracy": accuracy,
             "path": path, "maxmargin": setting, "samples": summary},
            indent=2, default=float) + "\n")
        with ctx.step("report"):
            items, chosen = stages.plot_items(emb, ctx.output / "samples", summary, PLOT_ROWS, cfg.sampling.seed)
            write_sample_report(ctx.output, summary, items, chosen, cfg.model, layer, accuracy, path, setting)
        return n


def maxmargin_setting(cfg: SampleConfig, path: str) -> str | None:
    """The MaxMargin setting the samples were drawn with (None without a MaxMargin technique).

    Parameters
    ----------
    cfg : SampleConfig
    path : str
        ``driver`` or ``spark``.

    Returns
    -------
    str or None
        ``paper`` or ``spark-parity`` with its C, e.g. ``paper (C=1)``.
    """
    if not any(t.startswith("maxmargin") for t in cfg.techniques):
        return None
    setting = cfg.sampling.maxmargin if path == "driver" else "spark-parity"
    return f"{setting} (C={cfg.sampling.svm_c_of(setting):g})"


JOB = SampleJob
