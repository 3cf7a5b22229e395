"""Demo of the ``astro`` job: a small generated survey co-added and scored against its truth."""

from __future__ import annotations

import json
from pathlib import Path

from scilens.demos.index import Shown
from scilens.demos.run import run_job


def demo(root: Path) -> list[Shown]:
    """Generate a small survey (6 visits of a 2x2 CCD mosaic) and run the pipeline on it, scored against truth."""
    from scilens.synth import sky

    survey = root / "survey"
    sky.write_survey(sky.survey_preset("tiny"), survey)
    out = root / "output"
    run_job("astro", survey / "images", out, ["skymap.preset=tiny", f"report.truth={survey / 'truth.parquet'}"])
    steps = {s["name"]: s for s in json.loads((out / "manifest.json").read_text())["steps"]}
    sources = steps["write catalog"]["counts"]["sources"]
    return [(out / "report" / "index.html", "co-add with detections and truth, completeness vs magnitude"),
            (out / "catalog.parquet", f"{sources} sources (also catalog.fits)"),
            (out / "coadds", "co-added patches (IMAGE, MASK, VARIANCE, COUNT planes)"),
            (survey, "the generated survey: images/, truth.parquet, artifacts.parquet")]
