"""`scilens glaucoma-infer`: predictions on the executors, the per-retina ensemble, saliency masks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from scilens.core import tensor
from scilens.vision import inference
from tests.glaucoma.conftest import N_SCANS


def test_spark_predictions_equal_the_model_in_one_process(spark, glaucoma_inference, retina_images, oct_training):
    predictions = spark.read.parquet(str(glaucoma_inference / "oct_predictions.parquet")).toPandas()
    scans = spark.read.parquet(str(retina_images / "oct_scans.parquet")).toPandas()
    assert len(predictions) == len(scans)  # every scan of every eye, every split
    sample = scans.sort_values(["eid", "eye", "scan"]).head(40)
    info = inference.describe_model(oct_training / "model.keras")
    expected = inference.predict_numpy(info, ["probabilities"], np.stack(tensor.decode_column(sample["image"])))
    got = sample[["eid", "eye", "scan"]].merge(predictions, on=["eid", "eye", "scan"])["probability"]
    assert np.allclose(got, expected["probabilities"][:, 0], atol=1e-5)
    # The retina vector of an eye is its scan probabilities in scan order.
    vectors = spark.read.parquet(str(glaucoma_inference / "retina_vectors.parquet")).toPandas()
    eye = vectors.iloc[0]
    mine = predictions[(predictions.eid == eye.eid) & (predictions.eye == eye.eye)].sort_values("scan")
    assert np.allclose([eye[f"p_oct_scan_{s:03d}"] for s in range(N_SCANS)], mine["probability"])
    assert vectors["p_cfp"].notna().all() and len(vectors) == len(scans) // N_SCANS


def test_superior_and_inferior_scans_tell_glaucoma_best(glaucoma_inference):
    # The generator thins the nerve-fibre and ganglion-cell layers 0.3x as much at the central scans as at the
    # superior and inferior edges: single-scan AUC must be higher at the edges (the paper's Fig. 3.4A).
    per_scan = pd.read_csv(glaucoma_inference / "scan_auc.csv")
    edges = per_scan.loc[per_scan["scan"].isin([0, N_SCANS - 1]), "auc"].mean()
    centre = per_scan.loc[per_scan["scan"].isin([N_SCANS // 2 - 1, N_SCANS // 2]), "auc"].mean()
    assert edges > centre
    metrics = json.loads((glaucoma_inference / "imaging_metrics.json").read_text())
    ensemble = metrics["oct_ensemble"]
    assert ensemble["ci_low"] <= ensemble["auc"] <= ensemble["ci_high"]
    # The per-retina ensemble leans on the edge scans (Fig. 3.4B): its most important scan is not central.
    shap = np.array(ensemble["mean_abs_shap_by_scan"])
    assert shap.shape == (N_SCANS,) and int(np.argmax(shap)) not in (N_SCANS // 2 - 1, N_SCANS // 2)
    assert (glaucoma_inference / "oct_ensemble" / "shap_by_scan.png").exists()
    assert (glaucoma_inference / "scan_auc.png").exists()


def test_saliency_masks_are_stored_complete_and_drawn(spark, glaucoma_inference, oct_training):
    masks = spark.read.parquet(str(glaucoma_inference / "saliency.parquet")).toPandas()
    assert set(masks["method"]) == {"integrated_gradients", "smoothgrad"} and set(masks["modality"]) == {"oct", "cfp"}
    assert set(masks.loc[masks.modality == "oct", "scan"]) == {0, 4}  # the central scan and stride 4
    for row in masks.itertuples():
        assert tensor.decode(row.mask).shape == tensor.decode(row.image).shape[:2]
    # Keys for mask-index: one mask id per mask; each OCT scan's retinal band, as the kernel finds it.
    assert masks["mask_id"].is_unique and masks["band_top"].isna().tolist() == (masks.modality == "cfp").tolist()
    from scilens.glaucoma.preprocess import retinal_band

    for row in masks[masks.modality == "oct"].itertuples():
        assert (row.band_top, row.band_bottom) == retinal_band(tensor.decode(row.image))
    from scilens.vision.inference import load_keras_model

    model = load_keras_model(oct_training / "model.keras")
    ig = masks[(masks.method == "integrated_gradients") & (masks.modality == "oct")]
    for row in ig.itertuples():
        x = tensor.decode(row.image).astype(np.float32)[None, ..., None]
        difference = float(model(x)[0, 0] - model(np.zeros_like(x))[0, 0])
        # Completeness of the stored mask: it sums to F(x) - F(black) up to the quadrature error of 32
        # trapezoid steps (a few per cent of the difference here; test_saliency shows it falls with the steps),
        # and the gap the job stores is that error, measured.
        gap = tensor.decode(row.mask).sum() - difference
        assert abs(gap) < 0.1 * abs(difference) + 0.005
        assert row.completeness_gap == pytest.approx(gap, abs=1e-4)
    assert len(list((glaucoma_inference / "saliency").glob("*.png"))) == 2
