"""View consistency under mirroring (the diagnosis set with a model): the flags are the brute-force set.

A LeNet trained for a few seconds on scikit-learn's real digits and its embeddings (what ``scilens sample``
writes); then ``scilens assert`` with the diagnosis set and the model computes the model's class on every
digit and on its left-right mirror on the executors, and flags the digits where the two differ. A mirrored
2, 3, 4, 7 or 9 is no longer that digit, so many do: the flagged set must be exactly the one a direct
``model.predict`` on the flipped arrays gives.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from scilens import cli
from scilens.core.tensor import decode_column

ITEMS = 600
"""Digits checked (of 1,797; every class present): the job's cost is TensorFlow starting on the executors
and the learned assertion's densities, not the images."""
MIRROR = "view consistency under mirroring"
LEARNED = "confidence and centroid distance likely for the predicted class"
TOLERANCE = 64 * float(np.finfo(np.float32).eps)
"""Float32 outputs of one model in two processes differ by a few ulps of their scale (the diagnosis tests'
``INFERENCE_TOLERANCE``): a class decision closer than this to a tie is not a decision either side can hold
the other to."""


@pytest.fixture(scope="module")
def digits_run(spark, tmp_path_factory):
    """The model, the digits, a sample-job-like output, and the assert job's output with the model.

    The sample job's ``embeddings.parquet`` is computed here in one process by the inference helper it uses
    (``predict_numpy``), and its ``manifest.json`` holds what the assert job reads of it (the image table's
    inputs and columns): running ``scilens sample`` would start TensorFlow on the executors once more.
    """
    from scilens.diagnosis import datasets
    from scilens.vision.inference import describe_model, predict_numpy
    from scilens.vision.training import ClassifierModel, TrainingConfig

    root = tmp_path_factory.mktemp("views")
    train = datasets.digits("train")
    fit = ClassifierModel(TrainingConfig(epochs=2, batch_size=32, seed=0), n_classes=10).fit(train.images,
                                                                                            train.labels)
    model = fit.save(root / "lenet.keras")
    digits = datasets.digits("all").subset(slice(0, ITEMS))
    table = datasets.write_image_table(root / "digits", digits, rows_per_file=2000)
    sample = root / "sample"
    sample.mkdir()
    info = describe_model(model)
    out = predict_numpy(info, [info.latent_layer, "logits", "prediction"], digits.images, model=fit.model)
    pd.DataFrame({"id": digits.ids, "label": digits.labels, "prediction": out["prediction"],
                  "correct": out["prediction"] == digits.labels, "latent": list(out[info.latent_layer]),
                  "logits": list(out["logits"])}).to_parquet(sample / "embeddings.parquet")
    (sample / "manifest.json").write_text(json.dumps({"job": "sample", "inputs": [str(table)], "config": {
        "model": str(model), "data": {"id_column": "id", "label_column": "label", "image_column": "image",
                                      "image_shape": None}}}))
    out = root / "assert"
    assert cli.main(["assert", "--input", str(sample), "--output", str(out), "--set", "assertions=diagnosis",
                     "--set", f"model={model}"]) == 0
    return fit.model, digits, sample, out


def _flags(out) -> pd.DataFrame:
    flags = pd.read_parquet(out / "severity.parquet")
    return flags.assign(id=[int(dict(k)["id"]) for k in flags["key"]])


def test_view_consistency_flags_exactly_the_brute_force_disagreement_set(digits_run):
    model, digits, _, out = digits_run
    x = digits.images.astype(np.float32)
    scores = model.predict(x, verbose=0)
    mirrored = model.predict(np.flip(x, axis=2), verbose=0)  # (n, height, width, 1): axis 2 is left-right
    for s in (scores, mirrored):  # every decision is clear of float32 rounding, so exact equality is owed
        top2 = np.sort(s, axis=1)[:, -2:]
        assert (top2[:, 1] - top2[:, 0] > TOLERANCE * s.max(axis=1)).all()
    want = set(digits.ids[scores.argmax(1) != mirrored.argmax(1)].tolist())
    flags = _flags(out)
    got = flags[flags.assertion == MIRROR]
    print(f"\nview consistency under mirroring: {len(got)} of {len(digits)} digits flagged "
          f"(brute force {len(want)})")
    assert set(got["id"]) == want and len(got) == len(want)
    assert 0.05 * len(digits) < len(want) < 0.95 * len(digits)  # the test can tell a wrong flip from none
    assert (got["severity"] == 1.0).all() and (got["table"] == "mirror_pairs").all()
    # The model view the job wrote holds the model's own class on each digit and on its mirror.
    view = pd.read_parquet(out / "model_views" / "mirrored.parquet").sort_values("id")
    assert (view["prediction"].to_numpy() == scores.argmax(1)).all()
    assert (view["view_prediction"].to_numpy() == mirrored.argmax(1)).all()
    assert (flags.assertion == LEARNED).any()


def test_without_a_model_the_mirror_assertion_is_skipped_with_its_reason(digits_run, job_log, spark, tmp_path):
    _, _, sample, _ = digits_run
    out = tmp_path / "o"
    assert cli.main(["assert", "--input", str(sample), "--output", str(out), "--set", "assertions=diagnosis"]) == 0
    assert set(_flags(out).assertion) == {LEARNED}
    assert not (out / "model_views").exists()
    assert "Skipped" in (out / "report.html").read_text() and "give the model" in (out / "report.html").read_text()
    assert any("mirror_pairs skipped" in line and MIRROR in line and "--set model=" in line for line in job_log)


def test_a_model_that_does_not_exist_is_refused_naming_the_path(digits_run, job_log, spark, tmp_path):
    _, _, sample, _ = digits_run
    missing = tmp_path / "no" / "such_model.keras"
    assert cli.main(["assert", "--input", str(sample), "--output", str(tmp_path / "o"),
                     "--set", "assertions=diagnosis", "--set", f"model={missing}"]) != 0
    assert any(str(missing) in line and "no such file" in line for line in job_log)
    assert not (tmp_path / "o" / "severity.parquet").exists()


@pytest.mark.parametrize(("layout", "shape", "axes"), [("tensor", (5, 7, 2), (2, 1)), ("array", (5, 7, 2), (2, 1)),
                                                    ("tensor", (1, 5, 7), (3, 2))])
def test_transformed_images_are_the_flipped_arrays_in_either_layout(spark, tmp_path, layout, shape, axes):
    """Mirrored and upside-down copies are the arrays reversed along width and height (of the batch (n, *shape))."""
    from scilens.assertions.consistency import VIEW_COLUMN, transformed_images
    from scilens.diagnosis import datasets
    from scilens.diagnosis.config import ImageTableConfig
    from scilens.diagnosis.image_table import open_image_table

    rng = np.random.default_rng(5)
    images = rng.integers(0, 255, (12, *shape), dtype=np.uint8)  # not square: a wrong axis cannot pass
    table = datasets.write_image_table(tmp_path / layout, datasets.ImageSet(
        np.arange(12, dtype=np.int64), np.arange(12) % 2, images, ("a", "b")), layout=layout)
    opened = open_image_table(spark, [str(table)], ImageTableConfig(image_shape=list(shape)))
    for transform, axis in zip(("mirror", "vertical_flip"), axes, strict=True):
        frame, _ = transformed_images(opened.frame, opened.layout, opened.shape, transform)
        rows = frame.orderBy("id").toPandas()
        if layout == "tensor":
            got = np.stack(decode_column(rows[VIEW_COLUMN]))
        else:
            got = np.stack(rows[VIEW_COLUMN].to_numpy()).reshape(images.shape)
        np.testing.assert_array_equal(got, np.flip(images, axis), err_msg=f"{layout} {shape} {transform}")


def test_an_image_table_the_manifest_records_but_that_is_gone_is_refused_naming_it(digits_run, job_log, tmp_path):
    _, _, sample, _ = digits_run
    moved = tmp_path / "sample"
    moved.mkdir()
    (moved / "embeddings.parquet").symlink_to(sample / "embeddings.parquet")
    (moved / "manifest.json").write_text(json.dumps({"job": "sample", "inputs": ["gone/digits"], "config": {}}))
    model = sample.parent / "lenet.keras"
    assert cli.main(["assert", "--input", str(moved), "--output", str(tmp_path / "o"),
                     "--set", "assertions=diagnosis", "--set", f"model={model}"]) != 0
    assert any("gone/digits" in line and "--set images=" in line for line in job_log)


def test_sets_refuse_an_unknown_transform_and_a_table_needing_no_model_view(tmp_path):
    from scilens.assertions.sets import load_set
    from scilens.core.config import ConfigError

    path = tmp_path / "s.yaml"
    assertion = "assertions: [{kind: cross, table: t, left: prediction, right: view_prediction}]\n"
    path.write_text("model_views: {m: rotate}\ntables: {t: {sql: SELECT * FROM m, key: [id], needs: [m]}}\n"
                    + assertion)
    with pytest.raises(ConfigError, match="transform 'rotate'; use one of"):
        load_set(str(path))
    path.write_text("model_views: {m: mirror}\ntables: {t: {sql: SELECT * FROM m, key: [id], needs: [n]}}\n"
                    + assertion)
    with pytest.raises(ConfigError, match="table 't' needs 'n', neither a model nor an optional view of the set"):
        load_set(str(path))
    path.write_text("model_views: {m: vertical_flip}\ntables: {t: {sql: SELECT * FROM m, key: [id], needs: [m]}}\n"
                    + assertion)
    chosen = load_set(str(path))
    assert chosen.model_views == {"m": "vertical_flip"} and chosen.tables[0].needs == ["m"]
