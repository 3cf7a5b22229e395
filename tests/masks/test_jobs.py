"""The mask-index and mask-query jobs: a Spark build equal to the single-process one, exact answers, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import types as T

from scilens import cli
from scilens.core import tensor
from scilens.core.parquet import write_sorted
from scilens.masks.index import build_index, read_index
from scilens.masks.query import MaskIndex
from scilens.synth.masks import saliency_masks
from tests.cluster import submit

IMAGES, SIZE = 150, 48
METHODS = ("integrated_gradients", "smoothgrad")
SCHEMA = T.StructType([T.StructField("mask_id", T.LongType()), T.StructField("id", T.LongType()),
                       T.StructField("method", T.StringType()), T.StructField("band_top", T.IntegerType()),
                       T.StructField("band_bottom", T.IntegerType()),
                       T.StructField("mask", tensor.TENSOR_TYPE), T.StructField("image", tensor.TENSOR_TYPE)])


def _table(spark, path, masks, *, bad=()):
    """A saliency-like mask table: two methods per image, a per-image band, masks 2i and 2i+1 of image i."""
    rng = np.random.default_rng(3)
    rows = []
    for i, mask in enumerate(masks):
        m = mask.copy()
        if i in bad:
            m[5, 5] = np.nan
        top = int(rng.integers(0, SIZE // 2))
        rows.append((i, i // 2, METHODS[i % 2], top, int(top + rng.integers(4, SIZE // 2)), tensor.encode(m),
                     tensor.encode((mask * 255).astype(np.uint8))))
    write_sorted(spark.createDataFrame(rows, SCHEMA), path, ["mask_id"], files=2)
    return path


@pytest.fixture(scope="module")
def built(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("mask-jobs")
    masks, _ = saliency_masks(2 * IMAGES, SIZE, seed=11)
    table = _table(spark, root / "masks.parquet", masks, bad=(7, 120))
    out = root / "index"
    assert cli.main(["mask-index", "--input", str(table), "--output", str(out),
                     "--set", "key_columns=[mask_id, id, method, band_top, band_bottom]", "--set", "cell=8"]) == 0
    return {"root": root, "masks": masks, "table": table, "index": out}


def test_spark_build_equals_the_single_process_build(built):
    index, meta = read_index(built["index"])
    good = np.setdiff1d(np.arange(2 * IMAGES), [7, 120])
    want = build_index(built["masks"][good], ids=good, cell=8)
    assert np.array_equal(index.ids, want.ids) and np.array_equal(index.chi, want.chi)
    assert np.array_equal(index.keys["id"], good // 2) and index.keys["method"].tolist()[:2] == list(METHODS)
    assert meta["rows"] == len(good) and meta["shape"] == [SIZE, SIZE] and meta["id_column"] == "mask_id"
    assert meta["cell"] == 8 and meta["bins"] == 16 and meta["normalise"] == "per-mask-max"
    assert meta["source"]["path"] == str(built["table"]) and meta["source"]["digest"].startswith("parquet:")
    # The NaN masks are quarantined by id, the rest indexed.
    rejected = pd.read_parquet(built["index"] / "_rejected")
    assert sorted(rejected["record"]) == ["120", "7"]
    assert all("holds NaN" in m and "masks.parquet" in m for m in rejected["message"])


def _brute(masks, ids, boxes, t, by):
    v = build_index(masks[ids], ids=ids).normalisation.apply(masks[ids])
    inside = np.array([np.count_nonzero(v[i, b[0]:b[1], b[2]:b[3]] > t) for i, b in enumerate(boxes)])
    whole = np.count_nonzero(v > t, axis=(1, 2))
    return np.divide(inside, whole, out=np.zeros(len(ids)), where=whole > 0) if by == "share" else inside


def test_query_job_with_a_box_per_mask_is_exact(built):
    index, _ = read_index(built["index"])
    out = built["root"] / "query"
    assert cli.main(["mask-query", "--input", str(built["index"]), "--output", str(out), "--set", "form=topk",
                     "--set", "k=12", "--set", f"roi=[band_top, band_bottom, 0, {SIZE}]", "--set", "by=share",
                     "--set", "threshold=0.5", "--set", "order=asc", "--set", "shown=6"]) == 0
    got = pd.read_parquet(out / "result.parquet")
    boxes = np.stack([index.keys["band_top"], index.keys["band_bottom"], np.zeros(index.rows, int),
                      np.full(index.rows, SIZE)], axis=1)
    score = _brute(built["masks"], index.ids, boxes, 0.5, "share")
    top = np.lexsort((index.ids, score))[:12]
    assert got["mask_id"].tolist() == index.ids[top].tolist() and np.array_equal(got["score"], score[top])
    assert got["method"].tolist() == [METHODS[i % 2] for i in index.ids[top]]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["decoded"] + stats["decided_by_index"] == index.rows and stats["decoded"] < index.rows / 2
    assert (out / "matches.png").stat().st_size > 0 and "matches.png" in (out / "report.html").read_text()


def test_filter_and_aggregate_jobs_are_exact(built):
    index, _ = read_index(built["index"])
    out = built["root"] / "filter"
    assert cli.main(["mask-query", "--input", str(built["index"]), "--output", str(out), "--set", "form=filter",
                     "--set", "roi=[5, 30, 3, 41]", "--set", "threshold=0.3", "--set", "by=fraction",
                     "--set", "op=>=", "--set", "value=0.05"]) == 0
    frac = _brute(built["masks"], index.ids, np.tile([5, 30, 3, 41], (index.rows, 1)), 0.3, "count") / (25 * 38)
    assert pd.read_parquet(out / "result.parquet")["mask_id"].tolist() == index.ids[frac >= 0.05].tolist()
    out = built["root"] / "aggregate"
    assert cli.main(["mask-query", "--input", str(built["index"]), "--output", str(out), "--set", "form=aggregate",
                     "--set", "group_by=id", "--set", "k=5", "--set", "threshold=0.25"]) == 0
    got = MaskIndex.open(built["index"]).aggregate((0, SIZE, 0, SIZE), 0.25, "id", k=5)
    assert pd.read_parquet(out / "result.parquet").equals(got)


def test_bad_input_is_named(spark, built, tmp_path, job_log):
    masks = [np.zeros((SIZE, SIZE), np.float32)] * 3 + [np.zeros((32, 32), np.float32)]
    rows = [(i, i, "m", 0, 1, tensor.encode(m), tensor.encode(m)) for i, m in enumerate(masks)]
    mixed = tmp_path / "mixed.parquet"
    spark.createDataFrame(rows, SCHEMA).write.parquet(str(mixed))
    assert cli.main(["mask-index", "--input", str(mixed), "--output", str(tmp_path / "o1"),
                     "--set", "key_columns=[mask_id]"]) != 0
    assert f"32x32 (1 masks), {SIZE}x{SIZE} (3 masks)" in "\n".join(job_log)
    assert not (tmp_path / "o1" / "index.json").exists()
    assert cli.main(["mask-index", "--input", str(mixed), "--output", str(tmp_path / "o2"),
                     "--set", "key_columns=[method]"]) != 0
    assert "must be an integer column" in "\n".join(job_log)
    assert cli.main(["mask-index", "--input", str(built["table"]), "--output", str(tmp_path / "o3")]) != 0
    assert "is held by 2 rows" in "\n".join(job_log)
    assert cli.main(["mask-query", "--input", str(built["index"]), "--output", str(tmp_path / "o4"),
                     "--set", "roi=[0, 99, 0, 8]", "--set", "value=1"]) != 0
    assert "outside the" in "\n".join(job_log)
    # A changed mask table is refused.
    changed = tmp_path / "changed.parquet"
    spark.read.parquet(str(built["table"])).limit(20).write.parquet(str(changed))
    assert cli.main(["mask-query", "--input", str(built["index"]), "--output", str(tmp_path / "o5"),
                     "--set", f"table={changed}", "--set", "value=1"]) != 0
    assert "mask table changed since indexing" in "\n".join(job_log)
    # A moved copy of the indexed table is the table: the same answer, read from the copy.
    moved = tmp_path / "moved.parquet"
    shutil.copytree(built["table"], moved)
    answers = []
    for name, extra in (("o6", []), ("o7", ["--set", f"table={moved}"])):
        assert cli.main(["mask-query", "--input", str(built["index"]), "--output", str(tmp_path / name),
                         "--set", "form=topk", "--set", "k=5", *extra]) == 0
        answers.append(pd.read_parquet(tmp_path / name / "result.parquet"))
    pd.testing.assert_frame_equal(*answers)


def test_mask_index_on_standalone_cluster_equals_local(built, standalone_master, tmp_path):
    out = tmp_path / "index"
    done = submit(standalone_master, "mask-index", "--input", str(built["table"]), "--output", str(out),
                  "--set", "key_columns=[mask_id, id, method, band_top, band_bottom]", "--set", "cell=8")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "manifest.json").read_text())["spark_master"] == standalone_master
    local, local_meta = read_index(built["index"])
    remote, remote_meta = read_index(out)
    assert remote_meta == local_meta | {"bytes": remote_meta["bytes"]}
    assert np.array_equal(remote.ids, local.ids) and np.array_equal(remote.chi, local.chi)
    assert all(np.array_equal(remote.keys[k], local.keys[k]) for k in local.keys)
