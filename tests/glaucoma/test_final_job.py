"""`scilens glaucoma-final`: the image probabilities add to BM3, and the result joins the clinical report."""

from __future__ import annotations

import json

from scilens.glaucoma.report import Report


def test_final_model_beats_or_matches_bm3_on_the_same_eyes(glaucoma_final):
    metrics = json.loads((glaucoma_final / "metrics.json").read_text())
    final, bm3 = metrics["models"]["final"], metrics["models"]["BM3 (same eyes)"]
    assert final["n_test"] == bm3["n_test"] == 30  # one test set: 15 glaucoma and 15 healthy eyes
    assert final["auc"] >= bm3["auc"]
    assert final["ci_low"] <= final["auc"] <= final["ci_high"]
    assert len(final["features"]) == 8 + 1 + len(bm3["features"])  # scan probabilities, fundus, BM3
    # The OCT scans carry the strongest signal of this cohort: they lead the SHAP ranking.
    top = [name for name, _ in final["top_features"]]
    assert len(top) == 10 and top[0].startswith("p_oct_scan_")
    assert final["ptg_accuracy"] is not None and 0 <= final["ptg_accuracy"] <= 1


def test_sections_are_added_next_to_the_baseline_models(glaucoma_final):
    report = Report.load(glaucoma_final)
    titles = [s.title for s in report.sections]
    assert titles == ["Cohort", "Baseline models", "Imaging models", "Final model", "SHAP"]
    final = report.sections[titles.index("Final model")]
    assert {"roc_final.png", "shap_top_final.png"} <= set(final.figures)
    assert "Final model" in (glaucoma_final / "report.html").read_text()
