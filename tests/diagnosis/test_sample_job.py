"""`scilens sample` on real digits: embeddings equal Keras, samples equal the pure samplers, bad input named."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from scilens import cli
from scilens.core.inputs import InputError
from scilens.diagnosis import datasets
from scilens.diagnosis.image_table import ImageTableConfig, open_image_table
from scilens.diagnosis.sampling import sample_latent
from scilens.vision.inference import describe_model
from tests.diagnosis.conftest import SAMPLED_TECHNIQUES as TECHNIQUES
from tests.diagnosis.conftest import assert_inference_close, assert_same_predictions


def test_embeddings_equal_a_direct_keras_predict(spark, sampled, trained_digits):
    from tensorflow import keras

    emb = spark.read.parquet(str(sampled / "embeddings.parquet")).toPandas().sort_values("id")
    digits = trained_digits.digits
    assert emb["id"].tolist() == digits.ids.tolist()  # the three bad rows are not embedded
    model = trained_digits.model
    probe = keras.Model(model.inputs, [model.get_layer("fc2").output, model.get_layer("logits").output])
    latent, logits = probe.predict(digits.images.astype(np.float32), verbose=0)
    # Float32 inference in a Spark worker against this process: equal up to summation order.
    assert_inference_close(np.stack(emb["latent"].to_numpy()), latent, err_msg="latent")
    assert_inference_close(np.stack(emb["logits"].to_numpy()), logits, err_msg="logits")
    assert_same_predictions(emb["prediction"].to_numpy(), logits)
    # What the worker stored is consistent with itself (its prediction is the argmax of its softmax, which
    # can round two close logits to one probability: the same tie rule as above).
    assert_same_predictions(emb["prediction"].to_numpy(), np.stack(emb["logits"].to_numpy()))
    assert np.array_equal(emb["correct"].to_numpy(), emb["prediction"].to_numpy() == digits.labels)


def test_samples_equal_the_pure_samplers_on_the_embeddings(spark, sampled):
    emb = spark.read.parquet(str(sampled / "embeddings.parquet")).toPandas().sort_values("id")
    latent = np.stack(emb["latent"].to_numpy()).astype(np.float64)
    ids, labels, predictions = emb["id"].to_numpy(), emb["label"].to_numpy(), emb["prediction"].to_numpy()
    written = spark.read.parquet(str(sampled / "samples")).toPandas()
    assert set(written["technique"]) == set(TECHNIQUES)
    for technique in TECHNIQUES:
        expected = sample_latent(technique, latent, labels, predictions, [0.05, 0.2])
        for fraction, sample in expected.items():
            got = written[(written.technique == technique) & np.isclose(written.fraction, fraction)]
            assert sorted(got["id"]) == sorted(ids[sample.index]), (technique, fraction)
            assert (sampled / "samples" / f"technique={technique}").is_dir()
    mm = written[(written.technique == "maxmargin") & np.isclose(written.fraction, 0.05)]
    assert set(mm["end"]) == {"boundary", "exemplar"}
    # j = 0.7: per class round(0.7 k_c) from the boundary end, so about 70 % overall.
    assert abs(np.mean(mm["end"] == "boundary") - 0.7) < 0.05
    boundary = mm[mm.end == "boundary"]
    assert (boundary["likelihood_ratio"] < mm[mm.end == "exemplar"]["likelihood_ratio"].min()).mean() > 0.9
    summary = json.loads((sampled / "summary.json").read_text())
    assert summary["layer"] == "fc2" and summary["rows"] == len(ids)
    # The driver path ran MaxMargin in the paper's setting (the default), and the summary says so.
    assert summary["path"] == "driver" and summary["maxmargin"] == "paper (C=1)"
    for name in ("report.html", "latent.png", "composition.png"):
        assert (sampled / name).stat().st_size > 1000
    assert "paper (C=1)" in (sampled / "report.html").read_text()  # the report shows the setting too


def test_bad_rows_are_quarantined_by_id(spark, sampled, digits_with_bad_rows):
    rejected = spark.read.parquet(str(sampled / "_rejected" / "rejected.parquet")).toPandas()
    by_record = dict(zip(rejected["record"], rejected["message"]))
    assert set(by_record) == {"id=9001", "id=9002", "id=9003"}
    assert "image has shape 8x9x1, the model expects 8x8x1" in by_record["id=9001"]
    assert "label is null" in by_record["id=9002"]
    assert "label 12 is outside the classes 0..9" in by_record["id=9003"]
    assert all("part-bad.parquet" in m for m in by_record.values())
    manifest = json.loads((sampled / "manifest.json").read_text())
    assert manifest["counts"] == {"succeeded": 1797, "rejected": 3}


def test_spark_path_draws_the_same_strata_sizes(spark, trained_digits, tmp_path):
    out = tmp_path / "out"
    assert cli.main(["sample", "--input", str(trained_digits.array_table), "--output", str(out),
                     "--set", f"model={trained_digits.model_path}", "--set", "data.image_shape=[8,8,1]",
                     "--set", "techniques=[stratified_cm]", "--set", "fractions=[0.1]", "--set", "fit=spark"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["path"] == "spark" and summary["maxmargin"] is None  # no MaxMargin technique ran
    got = spark.read.parquet(str(out / "samples")).toPandas()
    emb = spark.read.parquet(str(out / "embeddings.parquet")).toPandas()
    cells = emb["label"] * 10 + emb["prediction"]
    expected = cells.value_counts().map(lambda n: max(1, int(np.floor(0.1 * n + 0.5))))
    drawn = (got["label"] * 10 + got["prediction"]).value_counts()
    assert drawn.sort_index().to_dict() == expected.sort_index().to_dict()
    assert set(got["id"]) <= set(emb["id"])


def test_bad_configs_fail_before_spark(capsys, trained_digits, tmp_path):
    base = ["sample", "--input", str(trained_digits.table), "--output", str(tmp_path / "o"),
            "--set", f"model={trained_digits.model_path}"]
    assert cli.main([*base, "--set", "fractions=[0.05,1.5]"]) == 2
    assert "fractions: [0.05, 1.5] is not allowed; a non-empty list of values in (0, 1]" in capsys.readouterr().err
    assert cli.main([*base, "--set", "sampling.tuning_factor=-0.1"]) == 2
    assert "sampling.tuning_factor: -0.1 is below the minimum 0.0" in capsys.readouterr().err
    assert cli.main([*base, "--set", "techniques=[vas]", "--set", "fit=spark"]) == 2
    assert "cannot run vas" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_missing_layer_and_model_mismatch_fail_before_inference(spark, trained_digits, tmp_path, job_log):
    base = ["sample", "--input", str(trained_digits.table), "--output", str(tmp_path / "o"),
            "--set", f"model={trained_digits.model_path}"]
    assert cli.main([*base, "--set", "layer=conv9"]) == 1
    assert any("has no layer 'conv9'; its layers are" in line for line in job_log)
    assert cli.main([*base, "--set", "layer=prediction"]) == 1  # a model output, but not a latent space
    assert any("'prediction' is not a layer of" in line for line in job_log)
    assert cli.main(["sample", "--input", str(trained_digits.array_table), "--output", str(tmp_path / "o"),
                     "--set", f"model={trained_digits.model_path}", "--set", "data.image_shape=[4,16,1]"]) == 1
    assert any("have shape 4x16x1, but model" in line and "expects 8x8x1" in line for line in job_log)
    assert not (tmp_path / "o").exists()
    steps = [line for line in job_log if "done in" in line]
    assert not any("embed" in line for line in steps)  # nothing ran the model


def test_empty_class_and_duplicate_ids_are_named(spark, trained_digits, tmp_path):
    info = describe_model(trained_digits.model_path)
    digits = trained_digits.digits
    no_threes = datasets.write_image_table(tmp_path / "no3", digits.subset(digits.labels != 3))
    with pytest.raises(InputError, match=r"class 3 has no rows; every one of the 10 classes of the model"):
        open_image_table(spark, [str(no_threes)], ImageTableConfig(), info)
    twice = digits.subset(np.r_[0:20, 0:20])
    twice.labels = np.tile(np.arange(10), 4)
    dup = datasets.write_image_table(tmp_path / "dup", twice)
    with pytest.raises(InputError, match=r"ids must be unique; found id \d+ \(2 rows\)"):
        open_image_table(spark, [str(dup)], ImageTableConfig(), info)
    pd.DataFrame({"id": [1], "label": [0]}).to_parquet(tmp_path / "noimage.parquet")
    with pytest.raises(InputError, match="no column 'image'; columns are id, label"):
        open_image_table(spark, [str(tmp_path / "noimage.parquet")], ImageTableConfig(), info)
