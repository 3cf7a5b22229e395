"""Petastorm datasets from Spark: what a rank reads equals what was written, shards split the set exactly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import types as T

from scilens.core import tensor
from scilens.vision import petastorm_data

pytestmark = pytest.mark.stack("horovod")

SCHEMA = T.StructType([T.StructField("eid", T.LongType()), T.StructField("eye", T.StringType()),
                       T.StructField("visit", T.IntegerType()), T.StructField("scan", T.IntegerType()),
                       T.StructField("target", T.IntegerType()), tensor.tensor_field("image")])


def _images(spark, n: int, shape: tuple[int, ...], seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    rows = pd.DataFrame({"eid": 1000 + np.arange(n) // 4, "eye": np.where(np.arange(n) % 2, "left", "right"),
                         "visit": 0, "scan": np.arange(n) % 4, "target": (np.arange(n) // 8) % 2,
                         "image": tensor.encode_column(images)})
    return spark.createDataFrame(rows, SCHEMA), images


def test_round_trip_and_disjoint_covering_shards(spark, tmp_path):
    df, images = _images(spark, 40, (12, 12))
    info = petastorm_data.materialize_images(spark, df, tmp_path / "ds", (12, 12, 1), source="test:a",
                                             min_row_groups=4)
    assert info.rows == 40 and info.row_groups >= 4 and not info.reused
    shards = [petastorm_data.read_shard(info.url, rank, 2) for rank in range(2)]
    keys = [set(zip(s["eid"].tolist(), s["eye"].tolist(), s["scan"].tolist())) for s in shards]
    assert keys[0] and keys[1] and not keys[0] & keys[1]  # disjoint, neither empty
    assert len(keys[0]) + len(keys[1]) == 40  # and together the whole split, each row once
    for shard in shards:
        for eid, eye, scan, target, image in zip(shard["eid"], shard["eye"], shard["scan"], shard["target"],
                                                 shard["image"]):
            i = (eid - 1000) * 4 + scan
            assert eye == ("left" if i % 2 else "right") and target == (i // 8) % 2
            assert image.shape == (12, 12, 1) and np.array_equal(image[..., 0], images[i])


def test_existing_dataset_reused_only_when_identical(spark, tmp_path):
    df, _ = _images(spark, 8, (6, 6), seed=1)
    path = tmp_path / "ds"
    petastorm_data.materialize_images(spark, df, path, (6, 6, 1), source="cohort v1", min_row_groups=2)
    again = petastorm_data.materialize_images(spark, df, path, (6, 6, 1), source="cohort v1", min_row_groups=2)
    assert again.reused and again.rows == 8
    with pytest.raises(petastorm_data.DatasetConflict, match=r"different schema \(image: stored .*6, 6, 1"):
        petastorm_data.materialize_images(spark, df, path, (4, 9, 1), source="cohort v1")
    with pytest.raises(petastorm_data.DatasetConflict, match="written from 'cohort v1', not 'cohort v2'"):
        petastorm_data.materialize_images(spark, df, path, (6, 6, 1), source="cohort v2")
    replaced = petastorm_data.materialize_images(spark, df, path, (6, 6, 1), source="cohort v2", overwrite=True)
    assert not replaced.reused
    (tmp_path / "other").mkdir()
    with pytest.raises(petastorm_data.DatasetConflict, match="not a scilens Petastorm dataset"):
        petastorm_data.materialize_images(spark, df, tmp_path / "other", (6, 6, 1), source="x", overwrite=True)
