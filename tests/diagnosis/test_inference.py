"""Batch inference on Spark (predict_batch_udf) equals Keras run directly on the same images."""

from __future__ import annotations

import numpy as np
import pytest

from scilens.core.inputs import InputError
from scilens.vision import inference
from tests.diagnosis.conftest import assert_inference_close, assert_same_predictions


def _keras_outputs(model, images, layers):
    from tensorflow import keras

    probe = keras.Model(model.inputs, [model.get_layer(name).output for name in layers])
    results = probe.predict(images.astype(np.float32), verbose=0)
    return [r.reshape(len(images), -1) for r in results]


def test_spark_outputs_equal_keras_predict(spark, trained_digits):
    """On the flattened-array layout (the sample job's test covers tensor columns)."""
    info = inference.describe_model(trained_digits.model_path)
    assert info.latent_layer == "fc2" and info.n_classes == 10 and info.layers["conv2"] == (4, 4, 16)
    df = spark.read.parquet(str(trained_digits.array_table))
    layout = inference.image_layout(df, "image", shape=[8, 8, 1])
    assert inference.check_model_input(info, layout) == (8, 8, 1)
    outputs = ["conv2", "fc2", "logits", "probabilities", "prediction"]
    rows = (df.withColumn("out", inference.model_outputs(info, outputs, layout, batch_size=100))
              .select("id", "out.*").toPandas().sort_values("id"))
    digits = trained_digits.digits
    assert rows["id"].tolist() == digits.ids.tolist()
    conv2, fc2, logits, probabilities = _keras_outputs(trained_digits.model, digits.images,
                                                       ["conv2", "fc2", "logits", "probabilities"])
    # Same float32 graph on the same inputs in another process; batch composition may change summation order.
    for name, expected in [("conv2", conv2), ("fc2", fc2), ("logits", logits), ("probabilities", probabilities)]:
        assert_inference_close(np.stack(rows[name].to_numpy()), expected, err_msg=name)
    assert_same_predictions(rows["prediction"].to_numpy(), probabilities)
    # The worker's prediction is the argmax of the worker's own probabilities: same process, exact.
    assert np.array_equal(rows["prediction"].to_numpy(), np.stack(rows["probabilities"].to_numpy()).argmax(axis=1))
    # A trained model: most digits classified right (the split's test part is 30 %).
    assert np.mean(rows["prediction"].to_numpy() == digits.labels) > 0.9


def test_logits_of_a_model_without_a_logits_layer(tmp_path):
    """Logits recovered from the final softmax layer's input reproduce its probabilities."""
    from tensorflow import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((6,), name="x")
    hidden = keras.layers.Dense(5, activation="relu", name="hidden")(inputs)
    output = keras.layers.Dense(3, activation="softmax", name="out")(hidden)
    path = tmp_path / "plain.keras"
    keras.Model(inputs, output).save(path)
    info = inference.describe_model(path)
    assert (info.latent_layer, info.logits_layer, info.final_dense) == ("hidden", None, "out")
    x = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    got = inference.predict_numpy(info, ["logits", "probabilities"], x)
    logits = got["logits"].astype(np.float64)
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(softmax / softmax.sum(1, keepdims=True), got["probabilities"], rtol=1e-5)


def test_missing_layer_and_shape_mismatch_are_named(spark, trained_digits, tmp_path):
    info = inference.describe_model(trained_digits.model_path)
    with pytest.raises(InputError, match=r"has no layer 'conv9'; its layers are .*fc2"):
        inference.resolve_outputs(info, ["conv9"])
    df = spark.read.parquet(str(trained_digits.array_table))
    layout = inference.image_layout(df, "image", shape=[8, 4, 2])
    with pytest.raises(InputError, match=r"have shape 8x4x2, but model .* expects 8x8x1"):
        inference.check_model_input(info, layout)
    with pytest.raises(InputError, match="give the image shape"):
        inference.image_layout(df, "image")
    with pytest.raises(InputError, match="no such file"):
        inference.describe_model(tmp_path / "nothing.keras")
