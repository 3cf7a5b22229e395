"""glaucoma-clinical through spark-submit on a real standalone cluster: XGBoost's barrier training
across two one-core workers gives the single-node model's test AUC."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from scilens.glaucoma import features, metrics, models
from tests.cluster import submit

pytestmark = pytest.mark.integration


def test_clinical_job_on_standalone_cluster(glaucoma_run, tmp_path, standalone_master):
    cohort = glaucoma_run["cohort"]
    out = tmp_path / "clinical"
    settings = ["--set", "models=[BM3]", "--set", "xgb.n_estimators=200", "--set", "shap_splits=[test]",
                "--set", "interaction_model=null", "--set", "dependence=[]", "--set", "mlflow.enabled=false"]
    master = standalone_master
    done = submit(master, "glaucoma-clinical", "--input", str(cohort), "--output", str(out),
                  "--config", "conf/glaucoma_clinical.yaml", *settings)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["spark_master"] == master  # it really ran there
    result = json.loads((out / "metrics.json").read_text())["models"]["BM3"]
    eyes = pd.read_parquet(cohort / "eyes.parquet")
    local = models.fit_xgb_local(eyes[eyes["split"] == "train"], eyes[eyes["split"] == "validation"], features.BM3,
                                 models.XGBParams(n_estimators=200))
    test = eyes[eyes["split"] == "test"]
    single = metrics.roc_auc(test["label"].isin(models.POSITIVE_LABELS),
                             local.predict_proba(test[features.BM3].astype(float))[:, 1])
    assert result["rounds"] == 200 and abs(result["auc"] - single) < 0.01
