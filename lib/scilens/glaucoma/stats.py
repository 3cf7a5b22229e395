"""Group statistics of the glaucoma study (dissertation Ch. 3 §3.1.1, Tables 3.1-3.6).

* :func:`ancova` -- ANCOVA of a measure on group with a covariate (age), by statsmodels OLS and a
  type-II ANOVA table: the F test of group, and each group's difference from the reference with
  its 95% CI (Table 3.1);
* :func:`dunn_test` -- Dunn's pairwise test after Kruskal-Wallis, ranks with ties averaged and the
  tie-corrected variance, z = (mean rank a - mean rank b) / se, two-sided p, Bonferroni
  adjustment over the comparisons made (Tables 3.2-3.6; the sign says which group ranks higher).

Plain functions on pandas; the job collects the (small) group tables to the driver with
:func:`group_table`. :func:`ancova_table` and :func:`dunn_table` lay the results out as the
dissertation's tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import stats as sps

from scilens.core.inputs import InputError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["GROUPS", "PAIRS", "TITLES", "UNITS", "ancova", "ancova_table", "dunn_table", "dunn_test",
           "group_table", "kruskal_wallis", "subject_rows"]

GROUPS = ("healthy", "glaucoma", "ptg", "ptg_post")
PAIRS = [("healthy", "glaucoma"), ("healthy", "ptg"), ("glaucoma", "ptg"), ("healthy", "ptg_post"),
         ("glaucoma", "ptg_post"), ("ptg", "ptg_post")]
"""Comparisons in the order of the dissertation's tables."""
TITLES = {"healthy": "Healthy", "glaucoma": "Glaucoma", "ptg": "PTG", "ptg_post": "PTG (post-diagnosis)"}
UNITS = {"fvc": "L", "pef": "L/min", "age": "years", "bmi": "kg/m2", "iop": "mmHg"}


def kruskal_wallis(values: pd.Series, groups: pd.Series) -> tuple[float, float]:
    """(H, p) of the Kruskal-Wallis test of ``values`` across ``groups``."""
    samples = [values[groups == g].to_numpy(float) for g in pd.unique(groups)]
    h, p = sps.kruskal(*samples)
    return float(h), float(p)


def dunn_test(values: Sequence[float], groups: Sequence[str], order: Sequence[str] | None = None,
              adjust: str = "bonferroni") -> pd.DataFrame:
    """Dunn's pairwise comparisons of ``values`` between ``groups``.

    Parameters
    ----------
    values, groups
        One value and its group per observation (NaN values are dropped).
    order
        Groups to compare, in this order (pairs (a, b) with a before b); default: as they appear.
    adjust
        ``bonferroni`` (p x number of comparisons, capped at 1) or ``none``.

    Returns
    -------
    DataFrame
        ``group_a``, ``group_b``, ``n_a``, ``n_b``, ``z``, ``p_unadjusted``, ``p_adjusted``.
    """
    frame = pd.DataFrame({"value": np.asarray(values, float), "group": np.asarray(groups, object)}).dropna()
    order = list(order) if order is not None else list(pd.unique(frame["group"]))
    frame = frame[frame["group"].isin(order)]
    n = len(frame)
    ranks = sps.rankdata(frame["value"])
    _, ties = np.unique(frame["value"], return_counts=True)
    # variance of a rank, less the tie correction (Dunn 1964)
    variance = n * (n + 1) / 12 - np.sum(ties**3 - ties) / (12 * (n - 1))
    mean_rank = pd.Series(ranks, index=frame.index).groupby(frame["group"]).mean()
    size = frame.groupby("group").size()
    rows = []
    for a, b in combinations(order, 2):
        se = np.sqrt(variance * (1 / size[a] + 1 / size[b]))
        z = (mean_rank[a] - mean_rank[b]) / se
        rows.append({"group_a": a, "group_b": b, "n_a": int(size[a]), "n_b": int(size[b]), "z": float(z),
                     "p_unadjusted": float(2 * sps.norm.sf(abs(z)))})
    out = pd.DataFrame(rows)
    if adjust == "bonferroni":
        out["p_adjusted"] = np.minimum(1.0, out["p_unadjusted"] * len(out))
    elif adjust == "none":
        out["p_adjusted"] = out["p_unadjusted"]
    else:
        raise ValueError(f"adjust {adjust!r}: choose bonferroni or none")
    return out


def ancova(frame: pd.DataFrame, response: str, group: str = "group", covariate: str = "age",
           reference: str | None = None) -> dict:
    """ANCOVA: ``response ~ C(group) + covariate`` by OLS, type-II F test of group.

    Returns
    -------
    dict
        ``f``, ``df_group``, ``df_residual``, ``p`` of the group effect; ``covariate_f``,
        ``covariate_p``; ``n``; ``effects``: per non-reference group the adjusted difference
        from ``reference`` with its 95% CI and p.
    """
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    data = frame[[response, group, covariate]].dropna()
    reference = reference or str(data[group].iloc[0])
    formula = f"{response} ~ C({group}, Treatment(reference={reference!r})) + {covariate}"
    fit = smf.ols(formula, data=data).fit()
    table = anova_lm(fit, typ=2)
    term = table.index[0]
    ci = fit.conf_int()
    effects = {}
    for name in fit.params.index:
        if name.startswith(f"C({group}"):
            level = name.split("[T.")[-1].rstrip("]")
            effects[level] = {"difference": float(fit.params[name]), "ci_low": float(ci.loc[name, 0]),
                              "ci_high": float(ci.loc[name, 1]), "p": float(fit.pvalues[name])}
    return {"response": response, "reference": reference, "n": len(data),
            "f": float(table.loc[term, "F"]), "df_group": int(table.loc[term, "df"]),
            "df_residual": int(table.loc["Residual", "df"]), "p": float(table.loc[term, "PR(>F)"]),
            "covariate_f": float(table.loc[covariate, "F"]), "covariate_p": float(table.loc[covariate, "PR(>F)"]),
            "effects": effects}


def group_table(spark: SparkSession, cohort: Path, columns: list[str]) -> pd.DataFrame:
    """Eye rows of the four groups (``group`` column) from a glaucoma-cohort output directory.

    Parameters
    ----------
    spark
        The session that reads the Parquet tables.
    cohort
        glaucoma-cohort's output (``eyes.parquet``, ``ptg_post.parquet``).
    columns
        Measures that must be present.

    Returns
    -------
    pandas.DataFrame
        The eye rows and the PTG eyes' post-diagnosis rows (group ``ptg_post``), ``label`` renamed ``group``.
    """
    eyes_file, post_file = cohort / "eyes.parquet", cohort / "ptg_post.parquet"
    for path in (eyes_file, post_file):
        if not path.exists():
            raise InputError(f"input {cohort}: no {path.name} (run scilens glaucoma-cohort first)")
    eyes: pd.DataFrame = spark.read.parquet(str(eyes_file)).toPandas()
    post: pd.DataFrame = spark.read.parquet(str(post_file)).toPandas()
    frame = pd.concat([eyes, post.assign(label="ptg_post")], ignore_index=True)
    missing = [c for c in ("eid", "eye", "label", *columns) if c not in frame.columns]
    if missing:
        raise InputError(f"{eyes_file}: no column {', '.join(missing)}")
    return frame.rename(columns={"label": "group"})


def subject_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (group, subject): systemic measures are the same for both eyes."""
    return frame.sort_values(["group", "eid", "eye"]).drop_duplicates(["group", "eid"])


def ancova_table(subjects: pd.DataFrame, measures: Sequence[str], covariate: str) -> tuple[pd.DataFrame, dict]:
    """ANCOVA of each measure on group (healthy, glaucoma, PTG) with ``covariate``, as Table 3.1.

    Parameters
    ----------
    subjects
        One row per subject (:func:`subject_rows`).
    measures
        Responses.
    covariate
        The covariate (age).

    Returns
    -------
    table : pandas.DataFrame
        Per measure df, F, p, n and each group's adjusted difference from healthy with its 95% CI.
    results : dict
        Per measure the :func:`ancova` result.
    """
    rows, results = [], {}
    three = subjects[subjects["group"].isin(GROUPS[:3])]
    for measure in measures:
        result = results[measure] = ancova(three, measure, "group", covariate, reference="healthy")
        rows.append({"dependent variable": measure.upper(), "df": f"{result['df_group']},"
                     f"{result['df_residual']}", "F": result["f"], "p": result["p"], "n": result["n"],
                     **{f"{TITLES[g]} - Healthy": f"{e['difference']:.3g} "
                        f"({e['ci_low']:.3g}, {e['ci_high']:.3g})" for g, e in result["effects"].items()}})
    return pd.DataFrame(rows), results


def dunn_table(data: pd.DataFrame, measure: str, adjust: str) -> tuple[pd.DataFrame, list[dict]]:
    """Dunn's test of ``measure`` over the :data:`PAIRS` of the four groups, as Tables 3.2-3.6.

    Parameters
    ----------
    data
        Rows (subjects or eyes) with ``group`` and the measure.
    measure
        The measure compared.
    adjust
        p-value adjustment (:func:`dunn_test`).

    Returns
    -------
    table : pandas.DataFrame
        Per pair Z, unadjusted and adjusted p and the two group sizes.
    records : list of dict
        The :func:`dunn_test` rows in :data:`PAIRS` order.
    """
    result = dunn_test(data[measure], data["group"], order=list(GROUPS), adjust=adjust)
    result = result.set_index(["group_a", "group_b"]).loc[PAIRS].reset_index()
    table = pd.DataFrame({"groups": [f"{TITLES[a]} vs. {TITLES[b]}" for a, b in PAIRS],
                          "Z": result["z"], "P (unadjusted)": result["p_unadjusted"],
                          "P (adjusted)": result["p_adjusted"], "n": result["n_a"].astype(str) + ", "
                          + result["n_b"].astype(str)})
    return table, result.to_dict(orient="records")
