"""Demo of the ``astro`` job: a small generated survey co-added and scored against its truth."""

from __future__ import annotations

import json
from pathlib import Path


def demo(root: Path) -> str:
    """Generate a small survey (6 visits of a 2x2 CCD mosaic) and run the pipeline on it, scored against truth."""
    from scilens.cli import main
    from scilens.synth import sky

    survey = root / "survey"
    sky.write_survey(sky.survey_preset("tiny"), survey)
    out = root / "output"
    args = ["astro", "--input", str(survey / "images"), "--output", str(out), "--set", "skymap.preset=tiny",
            "--set", f"report.truth={survey / 'truth.parquet'}"]
    if main(args) != 0:
        raise RuntimeError("astro demo failed")
    steps = {s["name"]: s for s in json.loads((out / "manifest.json").read_text())["steps"]}
    sources = steps["write catalog"]["counts"]["sources"]
    return (f"{out / 'report' / 'index.html'}  co-add with detections and truth, completeness vs magnitude\n"
            f"{out / 'catalog.parquet'}  {sources} sources (also catalog.fits)\n"
            f"{out / 'coadds'}/  co-added patches (IMAGE, MASK, VARIANCE, COUNT planes)\n"
            f"{survey}/  the generated survey: images/, truth.parquet, artifacts.parquet")
