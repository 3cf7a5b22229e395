"""``scilens select``: the rows of a table reaching a recall (or precision) target at 1 - delta, from a sample.

Input: one Parquet table with an ``id`` column, a proxy column (scores in [0,
1]) and an oracle column (0/1: the expensive model's flag or the true label),
optionally restricted by ``where``. SUPG or SUPG++ (:mod:`scilens.guarantees.selection`)
draws ``budget`` rows by importance on the proxy, evaluates the oracle on them
only (fetched from the table by id and counted) and finds the proxy cut; the
selection is the Spark filter ``proxy >= threshold`` union the sampled positives
(:func:`scilens.guarantees.stages.select_spark`). The proxy column is
collected to the driver (one double per row: ~10^8 rows at most on a default
driver). The oracle may instead be a saved Keras classifier (``oracle_model``,
a 0/1 flag: ``oracle_class`` predicted, or its probability >= ``oracle_threshold``)
run with ``predict_batch_udf`` on the sampled rows' images only
(:class:`scilens.guarantees.stages.ModelOracle`), counted the same way. The
config is :class:`scilens.guarantees.config.SelectConfig`.

Outputs:

* ``selected.parquet`` -- ``id`` and the proxy of every selected row, written by Spark;
* ``answer.json`` -- target, threshold, selected rows, oracle calls, rows, method, bound;
* ``sample.parquet`` -- the rows the oracle evaluated, in the order first drawn (``draw``), with
  ``draws`` (times drawn: the draws are with replacement), ``id``, ``proxy``, ``oracle`` and
  ``mass`` (the importance mass ``(1/|D|) / q``);
* ``recall.png`` -- recall against the proxy cut: on the sample, and importance-weighted;
* ``report.html``.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from scilens.core.config import ConfigError
from scilens.core.job import Job, JobContext
from scilens.guarantees.config import SelectConfig

__all__ = ["JOB", "SelectConfig", "SelectJob", "recall_curve"]

SELECTED_TABLE = "selected.parquet"


def recall_curve(sample: pd.DataFrame) -> pd.DataFrame:
    """Recall of the cut ``proxy >= c`` at every sampled proxy value ``c``, descending.

    Parameters
    ----------
    sample : pandas.DataFrame
        ``proxy``, ``oracle`` (0/1), ``mass`` and ``draws`` (times drawn) of the evaluated rows.

    Returns
    -------
    pandas.DataFrame
        ``cut``, ``sample_recall`` (share of the sampled positives above the cut) and
        ``weighted_recall`` (every draw weighted by its importance mass: SUPG's estimate of the
        population's recall of the cut).
    """
    ordered = sample.sort_values("proxy", ascending=False, kind="stable")
    positive = ordered["oracle"].to_numpy() > 0
    mass = ordered["mass"].to_numpy() * ordered["draws"].to_numpy() * positive
    count = np.cumsum(positive) / max(int(positive.sum()), 1)
    weighted = np.cumsum(mass) / (mass.sum() if mass.sum() > 0 else 1.0)
    curve = pd.DataFrame({"cut": ordered["proxy"].to_numpy(), "sample_recall": count, "weighted_recall": weighted})
    return curve.groupby("cut", sort=False).last().reset_index()  # ties: the cut takes all rows at that score


class SelectJob(Job[SelectConfig]):
    """The ``select`` job."""

    name = "select"
    summary = "Rows reaching a recall or precision target at 1 - delta (SUPG), evaluating an oracle on a sample."
    config_class = SelectConfig

    def run(self, ctx: JobContext[SelectConfig]) -> int:
        """Select; write the selected ids, the answer, the sample and the report.

        Parameters
        ----------
        ctx : JobContext

        Returns
        -------
        int
            Rows selected.
        """
        from scilens.guarantees import stages

        cfg = ctx.config
        with ctx.step("check the table"):
            if cfg.oracle_model is not None and cfg.oracle_output != "flag":
                raise ConfigError(f"oracle_output: select needs a 0/1 oracle (flag), not {cfg.oracle_output}")
            table = stages.open_table(ctx.spark, ctx.inputs, cfg.where)
            oracle = cfg.oracle_source(table)
        with ctx.step(f"select ({cfg.method}, {cfg.bound})") as step:
            found = stages.select_spark(table, cfg.proxy, oracle, cfg.target, cfg.target_value, cfg.delta,
                                        cfg.budget, cfg.method, cfg.bound, cfg.seed)
            found.selected.select("id", cfg.proxy).orderBy("id").write.parquet(str(ctx.output / SELECTED_TABLE))
            selected = ctx.spark.read.parquet(str(ctx.output / SELECTED_TABLE)).count()
            answer = found.selection
            step.counts.update(rows=found.rows, oracle_calls=answer.oracle_calls, selected=selected)
        with ctx.step("write"):
            threshold = answer.threshold if np.isfinite(answer.threshold) else None
            result = {"target": cfg.target, "target_value": cfg.target_value, "delta": cfg.delta,
                      "threshold": threshold, "selected": selected, "oracle_calls": answer.oracle_calls,
                      "budget": cfg.budget, "rows": found.rows, "method": answer.method, "bound": answer.bound,
                      "seed": cfg.seed, "proxy": cfg.proxy, "oracle": str(oracle), "where": cfg.where}
            (ctx.output / "answer.json").write_text(json.dumps(result, indent=2) + "\n")
            found.sample.to_parquet(ctx.output / "sample.parquet", index=False)
            self._report(ctx, result, recall_curve(found.sample))
        return selected

    @staticmethod
    def _report(ctx: JobContext[SelectConfig], result: dict, curve: pd.DataFrame) -> None:
        import matplotlib

        from scilens.diagnosis.report import html_table, save_figure, write_html

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        ax.step(curve["cut"], curve["sample_recall"], where="post", label="recall on the sample")
        ax.step(curve["cut"], curve["weighted_recall"], where="post", label="importance-weighted recall")
        if result["threshold"] is not None:
            ax.axvline(result["threshold"], color="k", lw=0.8, ls="--", label=f"cut {result['threshold']:.4f}")
        if result["target"] == "recall":
            ax.axhline(result["target_value"], color="r", lw=0.8, ls=":", label=f"target {result['target_value']}")
        ax.set(xlabel=f"proxy cut ({result['proxy']} >= cut)", ylabel="recall", ylim=(0, 1.02),
               title=f"{result['method']} ({result['bound']}): recall of the proxy-ordered cut")
        ax.invert_xaxis()
        ax.legend()
        save_figure(fig, ctx.output / "recall.png")
        shown = curve.iloc[np.unique(np.linspace(0, len(curve) - 1, min(len(curve), 20)).astype(int))]
        figure = "<img src='recall.png'>" + html_table(shown.to_dict("records"))
        write_html(ctx.output / "report.html", "scilens select",
                   [("Answer", html_table([result])),
                    ("Recall of the proxy-ordered cut", figure)])


JOB = SelectJob
