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
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pyspark.sql import SparkSession

from scilens.core.config import ConfigError, field
from scilens.core.inputs import InputError
from scilens.core.job import Job, JobConfig, JobContext
from scilens.glaucoma import plots
from scilens.glaucoma import stats as group_stats
from scilens.glaucoma.cohort import eyes_table
from scilens.glaucoma.report import Report, markdown_table

GROUPS = ("healthy", "glaucoma", "ptg", "ptg_post")
PAIRS = [("healthy", "glaucoma"), ("healthy", "ptg"), ("glaucoma", "ptg"), ("healthy", "ptg_post"),
         ("glaucoma", "ptg_post"), ("ptg", "ptg_post")]
"""Comparisons in the order of the dissertation's tables."""
TITLES = {"healthy": "Healthy", "glaucoma": "Glaucoma", "ptg": "PTG", "ptg_post": "PTG (post-diagnosis)"}
UNITS = {"fvc": "L", "pef": "L/min", "age": "years", "bmi": "kg/m2", "iop": "mmHg"}


@dataclass
class GlaucomaStatsConfig(JobConfig):
    """Config of ``scilens glaucoma-stats``."""

    ancova: list[str] = field(["fvc", "pef"], "Measures analysed by ANCOVA on group with the covariate.")
    covariate: str = field("age", "ANCOVA covariate.")
    dunn: list[str] = field(["fvc", "pef", "age", "bmi", "iop"], "Measures compared pairwise by Dunn's test.")
    per_eye: list[str] = field(["iop"], "Measures taken per eye (analysed per eye; the rest per subject).")
    adjust: str = field("bonferroni", "p-value adjustment of Dunn's test.", choices=("bonferroni", "none"))

    def validate(self) -> None:
        if self.covariate in self.ancova:
            raise ConfigError(f"ancova: {self.covariate!r} is the covariate")


def group_table(spark: SparkSession, cohort: Path, columns: list[str]) -> pd.DataFrame:
    """Eye rows of the four groups (``group`` column) from a glaucoma-cohort output directory."""
    eyes_file, post_file = cohort / "eyes.parquet", cohort / "ptg_post.parquet"
    for path in (eyes_file, post_file):
        if not path.exists():
            raise InputError(f"input {cohort}: no {path.name} (run scilens glaucoma-cohort first)")
    eyes = spark.read.parquet(str(eyes_file)).toPandas()
    post = spark.read.parquet(str(post_file)).toPandas().assign(label="ptg_post")
    frame = pd.concat([eyes, post], ignore_index=True)
    missing = [c for c in ("eid", "eye", "label", *columns) if c not in frame.columns]
    if missing:
        raise InputError(f"{eyes_file}: no column {', '.join(missing)}")
    return frame.rename(columns={"label": "group"})


def subject_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (group, subject): systemic measures are the same for both eyes."""
    return frame.sort_values(["group", "eid", "eye"]).drop_duplicates(["group", "eid"])


class GlaucomaStatsJob(Job[GlaucomaStatsConfig]):
    name = "glaucoma-stats"
    summary = "ANCOVA (FVC, PEF ~ group + age) and Dunn's tests across healthy, glaucoma, PTG, PTG post-diagnosis."
    config_class = GlaucomaStatsConfig

    def run(self, ctx: JobContext[GlaucomaStatsConfig]) -> int:
        config = ctx.config
        cohort = eyes_table(ctx.inputs[0]).parent
        variables = sorted({*config.ancova, *config.dunn, config.covariate})
        with ctx.step("read groups") as step:
            frame = group_table(ctx.spark, cohort, variables)
            subjects = subject_rows(frame)
            for group in GROUPS:
                step.counts[f"{group}_subjects"] = int((subjects["group"] == group).sum())
        tables, markdown, document = {}, [], {"ancova": {}, "dunn": {}}
        with ctx.step("ANCOVA") as step:
            rows = []
            three = subjects[subjects["group"].isin(GROUPS[:3])]
            for measure in config.ancova:
                result = group_stats.ancova(three, measure, "group", config.covariate, reference="healthy")
                document["ancova"][measure] = result
                rows.append({"dependent variable": measure.upper(), "df": f"{result['df_group']},"
                             f"{result['df_residual']}", "F": result["f"], "p": result["p"], "n": result["n"],
                             **{f"{TITLES[g]} - Healthy": f"{e['difference']:.3g} "
                                f"({e['ci_low']:.3g}, {e['ci_high']:.3g})" for g, e in result["effects"].items()}})
            tables["ancova"] = pd.DataFrame(rows)
            markdown.append(f"## ANCOVA on group (healthy, glaucoma, PTG), covariate {config.covariate}\n\n"
                            + markdown_table(tables["ancova"]))
            step.counts["tests"] = len(rows)
        with ctx.step("Dunn's tests") as step:
            for measure in config.dunn:
                data = frame if measure in config.per_eye else subjects
                result = group_stats.dunn_test(data[measure], data["group"], order=list(GROUPS), adjust=config.adjust)
                result = result.set_index(["group_a", "group_b"]).loc[PAIRS].reset_index()
                table = pd.DataFrame({"groups": [f"{TITLES[a]} vs. {TITLES[b]}" for a, b in PAIRS],
                                      "Z": result["z"], "P (unadjusted)": result["p_unadjusted"],
                                      "P (adjusted)": result["p_adjusted"], "n": result["n_a"].astype(str) + ", "
                                      + result["n_b"].astype(str)})
                tables[f"dunn_{measure}"] = table
                document["dunn"][measure] = result.to_dict(orient="records")
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
            figures = {}
            for measure in config.dunn:
                data = frame if measure in config.per_eye else subjects
                groups = {g: data.loc[data["group"] == g, measure].dropna().to_numpy() for g in GROUPS}
                figures[f"distribution_{measure}.png"] = plots.distributions(groups, measure.upper(),
                                                                               UNITS.get(measure, ""))
            (ctx.output / "plots").mkdir()
            for name, png in figures.items():
                (ctx.output / "plots" / name).write_bytes(png)
            report = Report("Glaucoma screening: group statistics")
            report.add("ANCOVA", f"Age-adjusted group differences of {', '.join(config.ancova)} (Table 3.1).",
                       tables={"ANCOVA": tables["ancova"]})
            report.add("Dunn's tests", "Pairwise rank comparisons, Bonferroni-corrected (Tables 3.2-3.6).",
                       tables={name: t for name, t in tables.items() if name.startswith("dunn")}, figures=figures)
            report.save(ctx.output)
            step.counts["tables"] = len(tables)
        return int(subjects["eid"].nunique())


JOB = GlaucomaStatsJob
