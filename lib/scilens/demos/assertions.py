"""Demo of ``scilens assert``: the glaucoma assertion set on the glaucoma demo's inference output."""

from __future__ import annotations

from pathlib import Path

from scilens.demos.index import Shown
from scilens.demos.run import run_job


def demo(root: Path) -> list[Shown]:
    """Run the built-in glaucoma assertions over glaucoma-infer's per-scan and per-photo probabilities.

    Parameters
    ----------
    root : pathlib.Path
        The demo's directory.

    Returns
    -------
    list of Shown
        The report (flags per assertion, the top-flagged eyes and their per-scan curves) and the tables.
    """
    from scilens.demos.glaucoma import infer

    source = infer(root.parent / "glaucoma-infer")
    out = root / "output"
    run_job("assert", source, out, ["assertions=glaucoma"], "assert (the glaucoma assertion set)")
    return [(out / "report.html", "flags per assertion and the top-flagged eyes"),
            (out / "top.png", "the top-flagged eyes' OCT probability per B-scan"),
            (out / "severity.parquet", "every flag: assertion, key, severity, detail")]
