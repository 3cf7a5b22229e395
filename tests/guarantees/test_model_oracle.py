"""A Keras model as the oracle: run on the executors on the sampled rows' images only, counted like a column."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scilens import cli
from scilens.core.inputs import InputError
from scilens.core.tensor import ARROW_TENSOR_TYPE, encode
from scilens.guarantees.oracle import BudgetExceeded
from scilens.guarantees.stages import ModelOracle, SparkOracle, estimate_mean_spark, select_spark

ROWS = 1000
SIDE = 8


@pytest.fixture(scope="module")
def model_table(tmp_path_factory) -> tuple[Path, Path]:
    """A fixed softmax over 8x8 images (two classes) and a table of images, a noisy proxy and the model's flags.

    ``model_flag`` holds the model's own outputs (class 1 predicted, by a Keras predict on the driver): the
    column oracle the model oracle must equal. No image lies within 1e-3 of the decision boundary, so
    float32 rounding in another process (a Spark worker, another batch) cannot flip a flag. One file: the
    sampled rows make one Spark task, so one Python worker loads TensorFlow.
    """
    from tensorflow import keras

    from scilens.vision.inference import PREDICTION, describe_model, predict_numpy

    root = tmp_path_factory.mktemp("model_oracle")
    rng = np.random.default_rng(11)
    inputs = keras.Input(shape=(SIDE, SIDE, 1))
    outputs = keras.layers.Dense(2, activation="softmax", name="out")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    weight = rng.normal(0.0, 1.0, (SIDE * SIDE, 2)).astype(np.float32)
    # class 1's margin over class 0 is centred at -1.7 (its sd is sqrt(64 x 2 / 12) = 3.3): ~30 % positives
    bias = np.array([0.0, -0.5 * float((weight[:, 1] - weight[:, 0]).sum()) - 1.7], np.float32)
    model.get_layer("out").set_weights([weight, bias])
    path = root / "oracle.keras"
    model.save(path)
    images = rng.uniform(0.0, 1.0, (ROWS, SIDE, SIDE, 1)).astype(np.float32)
    logits = images.reshape(ROWS, -1).astype(np.float64) @ weight + bias
    margin = logits[:, 1] - logits[:, 0]
    assert np.abs(margin).min() > 1e-3
    flags = predict_numpy(describe_model(path), [PREDICTION], images, model=model)[PREDICTION]
    assert np.array_equal(flags, margin > 0)
    # a proxy that knows the model's margin through noise: correlated, not equal
    proxy = 1.0 / (1.0 + np.exp(-margin / 2.0 - rng.normal(0.0, 1.0, ROWS)))
    ids = rng.permutation(ROWS).astype(np.int64) + 100
    table = root / "table"
    table.mkdir()
    pq.write_table(pa.table({"id": pa.array(ids), "proxy": pa.array(proxy),
                             "model_flag": pa.array(flags.astype(np.float64)),
                             "image": pa.array([encode(im) for im in images], type=ARROW_TENSOR_TYPE)}),
                   table / "part-0.parquet")
    return path, table


def _inferred(oracle: ModelOracle) -> np.ndarray:
    return np.concatenate(oracle.inferred) if oracle.inferred else np.empty(0, np.int64)


def test_model_oracle_runs_on_the_sampled_rows_only_and_equals_its_column(spark, model_table):
    """Estimate (several oracle calls) and selection: the model oracle's answers are its column's."""
    path, table = model_table
    df = spark.read.parquet(str(table))
    truth = df.select("id", "model_flag").toPandas().set_index("id")["model_flag"]
    assert 0.15 < truth.mean() < 0.45  # both classes present: the test can tell the model's flags from a constant

    model = ModelOracle(df, path, "image", oracle_class=1)
    found = estimate_mean_spark(df, "proxy", model, 0.06, 0.05, "uniform", seed=3)
    column = estimate_mean_spark(df, "proxy", "model_flag", 0.06, 0.05, "uniform", seed=3)
    got, expected = found.estimate, column.estimate
    assert (got.estimate, got.low, got.high, got.oracle_calls) == (expected.estimate, expected.low, expected.high,
                                                                    expected.oracle_calls)
    inferred = _inferred(model)
    assert got.oracle_calls == len(inferred) < ROWS  # the counter and the model's inputs agree: a sample
    assert len(set(inferred)) == len(inferred)  # each sampled image inferred once
    assert set(inferred) == set(found.sample["id"]) == set(got.sampled_ids)
    assert np.array_equal(found.sample["oracle"].to_numpy(), truth.loc[found.sample["id"]].to_numpy())

    model = ModelOracle(df, path, "image", oracle_class=1)
    found_sel = select_spark(df, "proxy", model, "recall", 0.9, 0.05, budget=150, method="supg++", seed=4)
    column_sel = select_spark(df, "proxy", "model_flag", "recall", 0.9, 0.05, budget=150, method="supg++", seed=4)
    assert found_sel.selection.threshold == column_sel.selection.threshold
    assert np.array_equal(found_sel.selection.ids, column_sel.selection.ids)
    inferred = _inferred(model)
    assert found_sel.selection.oracle_calls == len(inferred) <= 150
    assert set(inferred) == set(found_sel.sample["id"])


def test_model_oracle_probability_and_threshold(spark, model_table):
    """The probability output is the model's own (within float32 rounding); a threshold flags by it."""
    path, table = model_table
    df = spark.read.parquet(str(table))
    probability = ModelOracle(df, path, "image", oracle_class=1, output="probability")
    flag = ModelOracle(df, path, "image", oracle_class=1, threshold=0.3)
    rows = df.where("id < 160")
    p = probability.evaluate(rows).set_index("id")["oracle"].sort_index()
    f = flag.evaluate(rows).set_index("id")["oracle"].sort_index()
    truth = rows.select("id", "model_flag").toPandas().set_index("id")["model_flag"].sort_index()
    assert len(p) == len(f) == len(truth) == 60 and ((p >= 0) & (p <= 1)).all()
    assert np.array_equal((p > 0.5).to_numpy(), truth.to_numpy() > 0)  # argmax of two classes is p > 1/2
    decided = (p - 0.3).abs() > 1e-5  # away from the threshold, where float32 rounding cannot flip it
    assert decided.sum() > 50
    assert np.array_equal(f[decided].to_numpy(), (p[decided] >= 0.3).to_numpy().astype(float))
    assert f.sum() > truth.sum()  # a lower threshold flags more


def test_model_oracle_jobs_and_refusals(spark, model_table, tmp_path, job_log, capsys):
    """The estimate job wired to a model (one oracle call at error 0.1); what is refused, by name."""
    path, table = model_table
    out = tmp_path / "estimate"
    assert cli.main(["estimate", "--input", str(table), "--output", str(out), "--set", f"oracle_model={path}",
                     "--set", "method=uniform", "--set", "error=0.1", "--set", "seed=3"]) == 0
    answer = json.loads((out / "answer.json").read_text())
    column = estimate_mean_spark(spark.read.parquet(str(table)), "proxy", "model_flag", 0.1, 0.05, "uniform",
                                 seed=3).estimate
    assert (answer["estimate"], answer["oracle_calls"]) == (column.estimate, column.oracle_calls)
    assert str(path.name) in answer["oracle"]
    sample = pd.read_parquet(out / "sample.parquet")
    assert len(sample) == answer["oracle_calls"] < ROWS
    df = spark.read.parquet(str(table))
    with pytest.raises(InputError, match=r"nowhere\.keras: no such file"):
        ModelOracle(df, tmp_path / "nowhere.keras")
    with pytest.raises(InputError, match="oracle_class 2"):
        ModelOracle(df, path, oracle_class=2)
    with pytest.raises(InputError, match="no image column 'picture'"):
        ModelOracle(df, path, image="picture")
    # the budget is checked before the model runs: a call that would pass it infers nothing
    model = ModelOracle(df, path)
    with pytest.raises(BudgetExceeded):
        estimate_mean_spark(df, "proxy", model, 0.01, 0.05, "uniform", seed=3, budget=50)
    assert model.inferred == []
    # a sampled row whose image the model cannot take has no value: named by id, never guessed
    holed = tmp_path / "holed"
    holed.mkdir()
    rows = pq.read_table(table)
    bad = pa.table({"id": pa.array([7], pa.int64()), "proxy": pa.array([0.5]), "model_flag": pa.array([0.0]),
                    "image": pa.array([None], type=ARROW_TENSOR_TYPE)}).select(rows.column_names)
    pq.write_table(pa.concat_tables([rows, bad.cast(rows.schema)]), holed / "part-0.parquet")  # one task
    holed_df = spark.read.parquet(str(holed))
    with pytest.raises(InputError, match=r"malformed image gives none\) for ids 7$"):
        SparkOracle(holed_df, ModelOracle(holed_df, path))(pd.DataFrame({"id": [7, 100, 101]}))
    # select needs a 0/1 oracle; both sources at once are ambiguous
    assert cli.main(["select", "--input", str(table), "--output", str(tmp_path / "s"), "--set",
                     f"oracle_model={path}", "--set", "oracle_output=probability"]) != 0
    assert "select needs a 0/1 oracle" in "\n".join(job_log) + capsys.readouterr().err
    assert cli.main(["select", "--input", str(table), "--output", str(tmp_path / "t"), "--set",
                     f"oracle_model={path}", "--set", "oracle=model_flag"]) != 0
    assert "not both" in "\n".join(job_log) + capsys.readouterr().err
