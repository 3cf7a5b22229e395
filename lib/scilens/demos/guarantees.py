"""Demo of ``scilens estimate`` and ``scilens select`` on the glaucoma demo cohort.

The oracle is the OCT ensemble (``glaucoma-infer``'s per-retina XGBoost over the scan
probabilities): an eye is flagged when its probability is at least 0.5. The proxy is BM3's
probability (``glaucoma-clinical``'s clinical model, no images). Questions: the share of eyes the
OCT model flags, within +-0.03 at 95%, and the eyes it would flag at recall 0.9. The cohort's
imaged eyes are few (a few hundred), so a guaranteed interval of +-0.03 costs a census there;
the CLT's ``uniform`` (finite-population corrected, asymptotic) is shown beside it.
"""

from __future__ import annotations

from pathlib import Path

from scilens.demos.index import Shown
from scilens.demos.run import run_job

FLAG = 0.5
"""The OCT ensemble's probability at which an eye is flagged."""


def eyes_table(root: Path) -> Path:
    """One row per imaged eye: ``id``, BM3's and the OCT ensemble's probabilities, the OCT flag.

    Parameters
    ----------
    root : pathlib.Path
        The demo's directory; the glaucoma demos' outputs are found (or made) beside it.

    Returns
    -------
    pathlib.Path
        ``root/eyes.parquet``.
    """
    import pandas as pd

    from scilens.demos import glaucoma

    _, clinical = glaucoma.clinical(root)
    infer = glaucoma.infer(root.parent / "glaucoma-infer")
    oct_eyes = pd.read_parquet(infer / "oct_ensemble" / "predictions.parquet",
                               columns=["eid", "eye", "split", "label", "probability"])
    bm3 = pd.read_parquet(clinical / "predictions.parquet", columns=["eid", "eye", "model", "probability"])
    bm3 = bm3[bm3["model"] == "BM3"].drop(columns="model")
    eyes = oct_eyes.merge(bm3, on=["eid", "eye"], suffixes=("_oct", "_bm3"), validate="one_to_one")
    eyes["flag_oct"] = (eyes["probability_oct"] >= FLAG).astype("float64")
    eyes.insert(0, "id", eyes["eid"] * 2 + (eyes["eye"] == "right").astype("int64"))  # unique per eye
    path = root / "eyes.parquet"
    root.mkdir(parents=True, exist_ok=True)
    eyes.sort_values("id").to_parquet(path, index=False)
    return path


def demo(root: Path) -> list[Shown]:
    """The share of eyes the OCT ensemble flags (+-0.03 at 95%) and the eyes it flags at recall 0.9.

    Parameters
    ----------
    root : pathlib.Path
        The demo's directory.

    Returns
    -------
    list of Shown
        The reports and figures of each run, and the eyes table.
    """
    table = str(eyes_table(root))
    common = ["proxy=probability_bm3", "oracle=flag_oct", "spark.master=local[2]"]
    shown: list[Shown] = []
    for method in ("blazeit++", "uniform"):
        out = root / f"estimate_{method.replace('+', 'p')}"
        settings = [*common, f"method={method}", "error=0.03", "delta=0.05"]
        run_job("estimate", table, out, settings, f"guarantees (estimate, {method})")
        shown += [(out / "report.html", f"share of eyes the OCT ensemble flags, +-0.03 at 95% ({method})"),
                  (out / "interval.png", f"{method}: the interval against the oracle calls")]
    out = root / "select_recall"
    settings = [*common, "target=recall", "target_value=0.9", "budget=200", "method=supg", "bound=clt"]
    run_job("select", table, out, settings, "guarantees (select)")
    shown += [(out / "report.html", "the eyes the OCT ensemble would flag at recall 0.9 (SUPG, 200 draws)"),
              (out / "recall.png", "recall against BM3's cut: on the sample and importance-weighted"),
              (root / "eyes.parquet", "the table: id, BM3's and the OCT ensemble's probability, the OCT flag")]
    return shown
