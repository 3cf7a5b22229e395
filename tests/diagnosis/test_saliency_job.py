"""``scilens saliency`` on the trained digits model: the masks equal the single-process kernels, stored by id."""

from __future__ import annotations

import glob
import itertools

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from scilens import cli
from scilens.core import tensor
from scilens.diagnosis.saliency import image_saliency
from scilens.vision.saliency import SaliencyConfig

IDS = list(range(0, 60, 2))


@pytest.fixture(scope="module")
def masks(spark, trained_digits, digits_with_bad_rows, tmp_path_factory):
    out = tmp_path_factory.mktemp("saliency") / "out"
    assert cli.main(["saliency", "--input", str(digits_with_bad_rows), "--output", str(out),
                     "--set", f"model={trained_digits.model_path}", "--set", f"ids=[{','.join(map(str, IDS))}]",
                     "--set", "ig_steps=32", "--set", "smoothgrad_samples=8", "--set", "tasks=3"]) == 0
    return out


def test_masks_equal_the_single_process_kernels(masks, trained_digits):
    got = pd.read_parquet(masks / "masks.parquet").sort_values(["id", "method"])
    assert len(got) == 2 * len(IDS) and sorted(set(got["id"])) == IDS
    # One mask id per (image, method), in the order of the config's methods: what mask-index fetches by.
    position = got["method"].map({"integrated_gradients": 0, "smoothgrad": 1})
    assert got["mask_id"].tolist() == (2 * got["id"] + position).tolist() and got["mask_id"].is_unique
    config = SaliencyConfig(ig_steps=32, smoothgrad_samples=8)
    images = dict(zip(trained_digits.digits.ids.tolist(), trained_digits.digits.images))
    labels = dict(zip(trained_digits.digits.ids.tolist(), trained_digits.digits.labels.tolist()))
    for row in got.itertuples():
        want = {r["method"]: r for r in image_saliency(trained_digits.model, images[row.id], labels[row.id],
                                                       "predicted", config)}[row.method]
        assert (row.label, row.prediction, row.target) == (want["label"], want["prediction"], want["target"])
        assert row.target == row.prediction  # target=predicted
        mask = tensor.decode(row.mask)
        assert mask.shape == images[row.id].shape[:2] and mask.dtype == np.float32
        # The same kernel on the same image; executors and this process may batch differently inside
        # TensorFlow, so equal up to float32 summation order.
        np.testing.assert_allclose(mask, want["mask"], rtol=1e-4, atol=1e-6 * np.abs(want["mask"]).max())
        assert row.probability == pytest.approx(want["probability"], rel=1e-5)
    ig = got[got["method"] == "integrated_gradients"]
    # Completeness: the attributions add up to F(x) - F(black image), up to the 32-point quadrature
    # (a ReLU network's path integrand has kinks, so the error is a few hundredths at most here).
    gaps = np.abs(ig["completeness_gap"].to_numpy())
    assert gaps.max() < 0.1 and np.median(gaps) < 0.03


def test_masks_are_sorted_by_id_in_small_row_groups(masks):
    ranges = []
    for part in sorted(glob.glob(str(masks / "masks.parquet" / "*.parquet"))):
        ids = pq.read_table(part, columns=["id"]).column("id").to_numpy()
        if len(ids):
            assert np.all(np.diff(ids) >= 0), part
            ranges.append((ids[0], ids[-1]))
            meta = pq.ParquetFile(part).metadata
            assert all(meta.row_group(i).total_byte_size < 2 << 20 for i in range(meta.num_row_groups))
    ranges.sort()
    assert all(a[1] < b[0] for a, b in itertools.pairwise(ranges))  # files hold disjoint id ranges
    assert (masks / "masks.png").stat().st_size > 1000 and (masks / "report.html").is_file()


def test_a_given_class_is_explained(spark, trained_digits, tmp_path):
    out = tmp_path / "o"
    assert cli.main(["saliency", "--input", str(trained_digits.table), "--output", str(out),
                     "--set", f"model={trained_digits.model_path}", "--set", "ids=[5,7]", "--set", "target=3",
                     "--set", "methods=[integrated_gradients]", "--set", "ig_steps=16"]) == 0
    got = pd.read_parquet(out / "masks.parquet")
    assert got["target"].tolist() == [3, 3] and set(got["method"]) == {"integrated_gradients"}


@pytest.mark.parametrize("setting, named", [("target=10", "target must be predicted, label or a class in 0..9"),
                                            ("ids=[5,123456]", "ids absent from")])
def test_bad_settings_are_named(spark, trained_digits, tmp_path, job_log, setting, named):
    code = cli.main(["saliency", "--input", str(trained_digits.table), "--output", str(tmp_path / "o"),
                     "--set", f"model={trained_digits.model_path}", "--set", setting])
    assert code != 0 and not (tmp_path / "o").exists()
    assert any(named in line for line in job_log), job_log[-3:]


def test_an_array_layout_table_gives_the_tensor_layout_masks(spark, trained_digits, masks, tmp_path):
    # The same digits stored as flattened float arrays (the other image layout a scilens table may have).
    out = tmp_path / "o"
    assert cli.main(["saliency", "--input", str(trained_digits.array_table), "--output", str(out),
                     "--set", f"model={trained_digits.model_path}", "--set", "ids=[0,2,4]",
                     "--set", "data.image_shape=[8,8,1]", "--set", "ig_steps=32", "--set", "smoothgrad_samples=8"]) == 0
    got = pd.read_parquet(out / "masks.parquet").sort_values(["id", "method"])
    want = pd.read_parquet(masks / "masks.parquet").set_index(["id", "method"])
    assert got["id"].tolist() == [0, 0, 2, 2, 4, 4]
    for row in got.itertuples():
        ref = want.loc[(row.id, row.method)]
        assert (row.prediction, row.target) == (ref["prediction"], ref["target"])
        np.testing.assert_allclose(tensor.decode(row.mask), tensor.decode(ref["mask"]), rtol=1e-4, atol=1e-6)


def test_a_single_output_model_always_explains_its_one_output():
    from scilens.diagnosis.saliency import check_target, resolve_target

    for rule in ("predicted", "label", 0):
        assert resolve_target(rule, 1, np.array([0.8])) == 0
    assert resolve_target("predicted", 3, np.array([0.1, 0.7, 0.2])) == 1
    assert resolve_target("label", 2, np.array([0.1, 0.7, 0.2])) == 2
    with pytest.raises(ValueError, match="not a class"):
        resolve_target("label", 5, np.array([0.1, 0.7, 0.2]))
    with pytest.raises(ValueError, match=r"class in 0\.\.0"):
        check_target("1", 1)
