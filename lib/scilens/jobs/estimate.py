"""``scilens estimate``: the mean of an expensive oracle over a table, within +-error at 1 - delta, from a sample.

Input: one Parquet table with an ``id`` column, a proxy column (cheap scores,
e.g. a small model's probability) and an oracle column (e.g. the expensive
model's flag, or the true label: evaluation), optionally restricted by
``where``. The proxy column is collected to the driver (one double per row:
~10^8 rows at most on a default driver); the oracle column is read only for the
rows the method samples, fetched from the table by id and counted
(:func:`scilens.guarantees.stages.estimate_mean_spark` over
:func:`scilens.guarantees.aggregation.estimate_mean`: uniform, ebs, ebs-cv,
blazeit++, abae). The oracle may instead be a saved Keras classifier
(``oracle_model``, with ``image``, ``oracle_class``, ``oracle_output``,
``oracle_threshold``): it runs with ``predict_batch_udf`` on the executors on
the sampled rows' images only (:class:`scilens.guarantees.stages.ModelOracle`),
counted the same way.
The config is :class:`scilens.guarantees.config.EstimateConfig`.

Outputs:

* ``answer.json`` -- estimate, low, high, oracle calls, rows, method, error, delta, seed;
* ``sample.parquet`` -- the rows the oracle evaluated, in draw order (``draw``; ``call``: the oracle
  call that evaluated it), with ``id``, ``proxy`` and ``oracle``;
* ``interval.png`` -- the interval at each check against the oracle calls spent;
* ``report.html``.
"""

from __future__ import annotations

import json

import pandas as pd

from scilens.core.config import ConfigError
from scilens.core.job import Job, JobContext
from scilens.guarantees.config import EstimateConfig

__all__ = ["JOB", "EstimateConfig", "EstimateJob"]


class EstimateJob(Job[EstimateConfig]):
    """The ``estimate`` job."""

    name = "estimate"
    summary = "Mean of an oracle column over a table within +-error at 1 - delta, evaluating only a sample."
    config_class = EstimateConfig

    def run(self, ctx: JobContext[EstimateConfig]) -> int:
        """Estimate the oracle's mean; write the answer, the sample and the report.

        Parameters
        ----------
        ctx : JobContext

        Returns
        -------
        int
            Rows the oracle evaluated.
        """
        from scilens.guarantees import stages

        cfg = ctx.config
        with ctx.step("check the table"):
            if cfg.relative and cfg.error >= 1.0:
                raise ConfigError(f"error: a relative error is a fraction of the mean, below 1, not {cfg.error}")
            if not cfg.value_low < cfg.value_high:
                raise ConfigError(f"value_low ({cfg.value_low}) must be below value_high ({cfg.value_high})")
            table = stages.open_table(ctx.spark, ctx.inputs, cfg.where)
            oracle = cfg.oracle_source(table)
        with ctx.step(f"estimate ({cfg.method})") as step:
            found = stages.estimate_mean_spark(table, cfg.proxy, oracle, cfg.error, cfg.delta, cfg.method, cfg.seed,
                                               value_range=(cfg.value_low, cfg.value_high), pilot=cfg.pilot,
                                               strata=cfg.strata, first_stage=cfg.first_stage,
                                               relative=cfg.relative)
            answer = found.estimate
            step.counts.update(rows=found.rows, oracle_calls=answer.oracle_calls)
        with ctx.step("write"):
            result = {"estimate": answer.estimate, "low": answer.low, "high": answer.high,
                      "oracle_calls": answer.oracle_calls, "rows": found.rows, "method": answer.method,
                      "error": cfg.error, "relative": cfg.relative, "delta": cfg.delta, "seed": cfg.seed,
                      "proxy": cfg.proxy, "oracle": str(oracle), "where": cfg.where}
            (ctx.output / "answer.json").write_text(json.dumps(result, indent=2) + "\n")
            found.sample.to_parquet(ctx.output / "sample.parquet", index=False)
            history = pd.DataFrame(answer.history, columns=["oracle_calls", "low", "high"])
            self._report(ctx, result, history)
        return answer.oracle_calls

    @staticmethod
    def _report(ctx: JobContext[EstimateConfig], result: dict, history: pd.DataFrame) -> None:
        import matplotlib

        from scilens.diagnosis.report import html_table, save_figure, write_html

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        middle, half = (history["low"] + history["high"]) / 2, (history["high"] - history["low"]) / 2
        ax.fill_between(history["oracle_calls"], history["low"], history["high"], alpha=0.2)
        ax.errorbar(history["oracle_calls"], middle, yerr=half, fmt="o", ms=3, capsize=4,
                    label=f"{1 - result['delta']:.0%} interval at each check")
        ax.axhline(result["estimate"], color="k", lw=0.8, ls="--", label=f"estimate {result['estimate']:.4f}")
        ax.set(xlabel="oracle calls", ylabel=f"mean of {result['oracle']}",
               title=f"{result['method']}: the interval as it narrowed (target +-{result['error']}"
                  f"{' of the mean' if result['relative'] else ''})")
        ax.legend()
        save_figure(fig, ctx.output / "interval.png")
        figure = "<img src='interval.png'>" + html_table(history.to_dict("records"))
        write_html(ctx.output / "report.html", "scilens estimate",
                   [("Answer", html_table([result])),
                    ("The interval as it narrowed", figure)])


JOB = EstimateJob
