"""``scilens glaucoma-stats``: group differences of the glaucoma study (dissertation §3.1.1, Tables 3.1-3.6).

Input: the output directory of ``scilens glaucoma-cohort`` (``eyes.parquet``, ``ptg_post.parquet``).
Groups: healthy, glaucoma, PTG (before diagnosis) and PTG post-diagnosis. Outputs:

* ``ancova.csv`` / ``.md`` -- ANCOVA of each of ``ancova`` (FVC, PEF) on group (healthy, glaucoma,
  PTG) with age as covariate: F, degrees of freedom, p, and each group's age-adjusted difference
  from healthy with its 95% CI (Table 3.1);
* ``dunn_<variable>.csv`` / ``.md`` -- Dunn's test with Bonferroni correction over the six pairs of
  the four groups for each of ``dunn`` (FVC, PEF, age, BMI, IOP; Tables 3.2-3.6);
* ``tables.md`` (all tables), ``stats.json``, ``plots/*.png`` (Fig. 3.7 B-E), ``report.html``.

Unit of analysis: systemic variables (age, BMI, FVC, PEF) are one value per subject, so each
subject counts once; ocular ones (IOP) are per eye. The dissertation's tables appear to count
eyes throughout (e.g. df 1, 2403 in Table 3.1); counting a subject's two eyes as two
observations of their FVC would overstate the evidence.
"""

from __future__ import annotations

import json

import pandas as pd

from scilens.core.job import Job, JobContext
from scilens.glaucoma import plots
from scilens.glaucoma import stats as group_stats
from scilens.glaucoma.cohort import eyes_table
from scilens.glaucoma.config import GlaucomaStatsConfig
from scilens.glaucoma.report import markdown_table, stats_report

__all__ = ["JOB", "GlaucomaStatsConfig", "GlaucomaStatsJob"]


class GlaucomaStatsJob(Job[GlaucomaStatsConfig]):
    """Group statistics of the glaucoma study; see the module doc."""

    name = "glaucoma-stats"
    summary = "ANCOVA (FVC, PEF ~ group + age) and Dunn's tests across healthy, glaucoma, PTG, PTG post-diagnosis."
    config_class = GlaucomaStatsConfig

    def run(self, ctx: JobContext[GlaucomaStatsConfig]) -> int:
        """Read the groups, run the ANCOVAs and Dunn's tests, write the tables, figures and report."""
        config = ctx.config
        cohort = eyes_table(ctx.inputs[0]).parent
        variables = sorted({*config.ancova, *config.dunn, config.covariate})
        with ctx.step("read groups") as step:
            frame = group_stats.group_table(ctx.spark, cohort, variables)
            subjects = group_stats.subject_rows(frame)
            for group in group_stats.GROUPS:
                step.counts[f"{group}_subjects"] = int((subjects["group"] == group).sum())
        tables: dict[str, pd.DataFrame] = {}
        markdown: list[str] = []
        document: dict[str, dict] = {"ancova": {}, "dunn": {}}
        with ctx.step("ANCOVA") as step:
            tables["ancova"], document["ancova"] = group_stats.ancova_table(subjects, config.ancova,
                                                                            config.covariate)
            markdown.append(f"## ANCOVA on group (healthy, glaucoma, PTG), covariate {config.covariate}\n\n"
                            + markdown_table(tables["ancova"]))
            step.counts["tests"] = len(tables["ancova"])
        # Ocular measures are analysed per eye, systemic ones once per subject (see the module doc).
        analysed = {m: frame if m in config.per_eye else subjects for m in config.dunn}
        with ctx.step("Dunn's tests") as step:
            for measure in config.dunn:
                table, document["dunn"][measure] = group_stats.dunn_table(analysed[measure], measure, config.adjust)
                tables[f"dunn_{measure}"] = table
                unit = "eyes" if measure in config.per_eye else "subjects"
                markdown.append(f"## Dunn's test of {measure.upper()} ({unit}; {config.adjust} correction)\n\n"
                                + markdown_table(table))
            step.counts["tests"] = len(config.dunn)
        with ctx.step("write outputs") as step:
            for name, table in tables.items():
                table.to_csv(ctx.output / f"{name}.csv", index=False)
                (ctx.output / f"{name}.md").write_text(markdown_table(table))
            (ctx.output / "tables.md").write_text("# Group statistics\n\n" + "\n".join(markdown))
            (ctx.output / "stats.json").write_text(json.dumps(document, indent=2, default=float) + "\n")
            figures = plots.group_distributions(analysed, group_stats.GROUPS, group_stats.UNITS)
            (ctx.output / "plots").mkdir()
            for name, png in figures.items():
                (ctx.output / "plots" / name).write_bytes(png)
            stats_report(config, tables, figures).save(ctx.output)
            step.counts["tables"] = len(tables)
        return int(subjects["eid"].nunique())


JOB = GlaucomaStatsJob
