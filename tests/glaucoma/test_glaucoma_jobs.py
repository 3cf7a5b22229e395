"""glaucoma-cohort -> glaucoma-clinical -> glaucoma-stats on a synthetic cohort with known truth."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xgboost

from scilens import cli
from scilens.glaucoma import features, metrics, models
from scilens.glaucoma.report import Report


@pytest.fixture(scope="module")
def run(glaucoma_run):
    out = dict(glaucoma_run)
    out["metrics"] = json.loads((out["clinical"] / "metrics.json").read_text())
    out["eyes"] = pd.read_parquet(out["cohort"] / "eyes.parquet")
    out["truth"] = json.loads((out["export"].parent / "truth.json").read_text())
    return out


def test_cohort_outputs_keep_the_contract(run):
    eyes = run["eyes"]
    assert list(eyes.columns[:5]) == ["eid", "eye", "label", "split", "visit"]
    assert set(features.EYE_FEATURES) <= set(eyes.columns) and str(eyes["eid"].dtype) == "int64"
    assert eyes.groupby("eid")["split"].nunique().max() == 1             # subjects whole
    test = eyes[eyes["split"] == "test"]["label"].value_counts()
    assert test["glaucoma"] == test["healthy"] == 100
    assert (eyes["split"] == "validation").sum() == 170
    assert set(eyes.loc[eyes["label"] == "ptg", "split"]) == {"ptg"} and (eyes["label"] == "ptg").sum() >= 30
    # healthy_per_glaucoma = 1: as many healthy subjects as glaucoma subjects
    subjects = eyes.drop_duplicates("eid")["label"].value_counts()
    assert subjects["healthy"] == subjects["glaucoma"]
    # the selection recovers the generator's truth: glaucoma eyes are diagnosed, healthy ones never
    truth = pd.read_parquet(run["export"].parent / "truth.parquet").set_index("eid")
    at = truth.loc[eyes["eid"], "diagnosed_at"].to_numpy()
    label = eyes["label"].to_numpy()
    assert (at[label == "glaucoma"] < 0).all() and (at[label == "ptg"] > 0).all()
    assert not truth.loc[eyes.loc[label == "healthy", "eid"], ["glaucoma_0", "glaucoma_1", "glaucoma_2"]].any().any()
    post = pd.read_parquet(run["cohort"] / "ptg_post.parquet")
    assert len(post) == (label == "ptg").sum() and (post["visit"].to_numpy() > 0).all()
    counts = pd.read_csv(run["cohort"] / "counts.csv").set_index("group")
    assert counts.loc["glaucoma", "eyes"] == (label == "glaucoma").sum()
    excluded = pd.read_parquet(run["cohort"] / "exclusions.parquet")
    assert not set(excluded["eid"]) & set(eyes["eid"])


def test_baseline_models_rank_as_the_paper(run):
    # The generator gives BM2's features (FVC, PEF: treatment; BMI: risk) and BM3's (IOP: the
    # strongest risk) real information, so each model must beat the one it extends.
    m = run["metrics"]["models"]
    assert m["BM1"]["auc"] < m["BM2"]["auc"] < m["BM3"]["auc"]
    assert m["BM1"]["ci_low"] > 0.5  # age alone separates the classes: better than chance
    for result in m.values():
        assert result["ci_low"] <= result["auc"] <= result["ci_high"]
        assert result["ptg_ci_low"] <= result["ptg_accuracy"] <= result["ptg_ci_high"]
        assert result["n_test"] == 200 and result["rounds"] <= 600


def test_strongest_risk_factors_top_bm3_shap(run):
    strongest = run["truth"]["risk_factors_strongest_first"][:2]
    assert set(strongest) == {"iop", "age"}
    top3 = [name for name, _ in run["metrics"]["models"]["BM3"]["top_features"][:3]]
    assert set(strongest) <= set(top3)
    # features with no generating effect on risk and no treatment effect carry little
    means = dict(run["metrics"]["models"]["BM3"]["top_features"])
    assert means.get("caffeine", 0) < 0.2 * means["iop"]


def test_spark_model_equals_its_booster_and_single_node_xgboost(run):
    eyes, clinical = run["eyes"], run["clinical"]
    names = features.BM3
    booster = xgboost.Booster()
    booster.load_model(str(clinical / "models" / "BM3.json"))
    best = run["metrics"]["models"]["BM3"]["best_iteration"]
    test = eyes[eyes["split"] == "test"].sort_values(["eid", "eye"]).reset_index(drop=True)
    matrix = xgboost.DMatrix(test[names].astype(float).to_numpy(), missing=np.nan)
    predictions = pd.read_parquet(clinical / "predictions.parquet")
    ours = predictions[(predictions["model"] == "BM3") & (predictions["split"] == "test")].sort_values(["eid", "eye"])
    assert np.allclose(ours["probability"], booster.predict(matrix, iteration_range=(0, best + 1)), atol=1e-6)
    # TreeSHAP from pred_contrib_col equals the booster's contributions (same trees)
    shap = pd.read_parquet(clinical / "shap.parquet")
    shap = shap[(shap["model"] == "BM3") & (shap["split"] == "test")].pivot_table(
        index=["eid", "eye"], columns="feature", values="shap")[names]
    contributions = booster.predict(matrix, pred_contribs=True, iteration_range=(0, best + 1))[:, :-1]
    assert np.allclose(shap.to_numpy(), contributions, atol=1e-5)
    # single-node xgboost with the same parameters on the same split
    local = models.fit_xgb_local(eyes[eyes["split"] == "train"], eyes[eyes["split"] == "validation"], names,
                                 models.XGBParams(n_estimators=600))
    y = test["label"].isin(models.POSITIVE_LABELS).to_numpy()
    single = metrics.roc_auc(y, local.predict_proba(test[names].astype(float))[:, 1])
    assert abs(single - run["metrics"]["models"]["BM3"]["auc"]) < 0.01


def test_interactions_equal_the_booster(run):
    clinical = run["clinical"]
    values = pd.read_parquet(clinical / "interactions.parquet").merge(run["eyes"], on=["eid", "eye"])
    assert len(values) == 40
    booster = xgboost.Booster()
    booster.load_model(str(clinical / "models" / "BM3.json"))
    best = run["metrics"]["models"]["BM3"]["best_iteration"]
    phi = booster.predict(xgboost.DMatrix(values[features.BM3].astype(float).to_numpy(), missing=np.nan),
                          pred_interactions=True, iteration_range=(0, best + 1))
    i, j = features.BM3.index("age"), features.BM3.index("iop")
    assert np.allclose(values["interaction_age__iop"], phi[:, i, j] + phi[:, j, i], atol=1e-5)


def test_report_plots_and_mlflow(run):
    clinical = run["clinical"]
    html = (clinical / "report.html").read_text()
    for title in ("Cohort", "Baseline models", "Progress-to-glaucoma", "SHAP", "SHAP interactions"):
        assert f"<h2>{title}</h2>" in html
    assert html.count("data:image/png;base64,") == len(list((clinical / "plots").glob("*.png"))) >= 15
    report = Report.load(clinical)  # another job adds the final model next to BM1-BM3
    report.add("Final model", "imaging + clinical", figures={"x.png": b"\x89PNG"}, after="Baseline models")
    assert [s.title for s in report.sections][:3] == ["Cohort", "Baseline models", "Final model"]

    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{run['root'] / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("scilens-glaucoma")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    for name, result in run["metrics"]["models"].items():
        logged = runs[f"glaucoma-clinical-{name}"]
        assert logged.info.run_id == result["mlflow_run_id"]
        assert logged.data.metrics["auc"] == pytest.approx(result["auc"])
        assert logged.data.params["learning_rate"] == "0.001"
        artifacts = {a.path for a in client.list_artifacts(logged.info.run_id)}
        assert f"{name}.json" in artifacts


def test_group_statistics_recover_the_generated_effects(run):
    document = json.loads((run["stats"] / "stats.json").read_text())
    truth = run["truth"]["treatment_effects"]
    fvc = document["ancova"]["fvc"]
    # Treated glaucoma loses 0.5 L of FVC and PTG before diagnosis nothing; risk does not depend
    # on sex or lung function, so the age-adjusted differences from healthy estimate exactly these.
    assert fvc["effects"]["glaucoma"]["ci_low"] < truth["fvc_l"] < fvc["effects"]["glaucoma"]["ci_high"]
    assert fvc["effects"]["ptg"]["ci_low"] < 0 < fvc["effects"]["ptg"]["ci_high"]
    assert fvc["p"] < 1e-6
    pef = document["ancova"]["pef"]
    assert pef["effects"]["glaucoma"]["ci_low"] < truth["pef_l_per_min"] < pef["effects"]["glaucoma"]["ci_high"]
    dunn = {(r["group_a"], r["group_b"]): r for r in document["dunn"]["iop"]}
    # untreated PTG eyes keep the high pressure that selected them; treated glaucoma eyes are lower
    assert dunn[("glaucoma", "ptg")]["z"] < 0 and dunn[("glaucoma", "ptg")]["p_adjusted"] < 0.05
    assert dunn[("healthy", "glaucoma")]["z"] < 0 and dunn[("healthy", "glaucoma")]["p_adjusted"] < 1e-6
    tables = (run["stats"] / "tables.md").read_text()
    assert "Glaucoma vs. PTG (post-diagnosis)" in tables and "ANCOVA" in tables
    assert len(pd.read_csv(run["stats"] / "dunn_iop.csv")) == 6


def test_clinical_job_refuses_unusable_input(run, tmp_path):
    eyes = run["eyes"]
    broken = tmp_path / "cohort"
    broken.mkdir()
    eyes[eyes["split"] != "validation"].to_parquet(broken / "eyes.parquet")
    out = tmp_path / "clinical"
    assert cli.main(["glaucoma-clinical", "--input", str(broken), "--output", str(out)]) == 1
    assert not out.exists()
    assert cli.main(["glaucoma-clinical", "--input", str(broken), "--output", str(out),
                     "--set", "interaction_model=BM2"]) == 2  # iop is not a BM2 feature: config error
