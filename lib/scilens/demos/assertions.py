"""Demo of ``scilens assert``: the glaucoma assertion set on the glaucoma demo's inference output."""

from __future__ import annotations

from pathlib import Path

from scilens.demos.index import Shown


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
    from scilens.cli import main
    from scilens.demos.glaucoma import infer

    source = infer(root.parent / "glaucoma-infer")
    out = root / "output"
    if main(["assert", "--input", str(source), "--output", str(out), "--set", "assertions=glaucoma"]) != 0:
        raise RuntimeError("assert demo: the glaucoma assertion set failed")
    return [(out / "report.html", "flags per assertion and the top-flagged eyes"),
            (out / "top.png", "the top-flagged eyes' OCT probability per B-scan"),
            (out / "severity.parquet", "every flag: assertion, key, severity, detail")]
