"""Group statistics of the glaucoma study (dissertation Ch. 3 §3.1.1, Tables 3.1-3.6).

* :func:`ancova` -- ANCOVA of a measure on group with a covariate (age), by statsmodels OLS and a
  type-II ANOVA table: the F test of group, and each group's difference from the reference with
  its 95% CI (Table 3.1);
* :func:`dunn_test` -- Dunn's pairwise test after Kruskal-Wallis, ranks with ties averaged and the
  tie-corrected variance, z = (mean rank a - mean rank b) / se, two-sided p, Bonferroni
  adjustment over the comparisons made (Tables 3.2-3.6; the sign says which group ranks higher).

Plain functions on pandas; the job collects the (small) group tables to the driver.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats as sps

__all__ = ["ancova", "dunn_test", "kruskal_wallis"]


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
