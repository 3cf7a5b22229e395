"""The Spark build of the activation index equals the in-memory build (issue 15), on a real local SparkSession."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pyspark.sql import types as T

from scilens.diagnosis.topk import ActivationIndex, MatrixSource
from scilens.diagnosis.topk_index import (
    activation_digest,
    build_layer_index,
    read_layer_index,
    table_bytes,
    write_index,
)
from scilens.diagnosis.topk_stages import build_index_spark


def _frame(spark, ids, layers):
    schema = T.StructType([T.StructField("id", T.LongType()), T.StructField("label", T.IntegerType()),
                           *[T.StructField(name, T.ArrayType(T.FloatType())) for name in layers]])
    rows = [(int(i), int(i % 3), *[[float(v) for v in a[r]] for a in layers.values()]) for r, i in enumerate(ids)]
    return spark.createDataFrame(rows, schema).repartition(3)


def test_spark_build_equals_pure_build(spark, tmp_path):
    rng = np.random.default_rng(5)
    n = 700
    ids = rng.choice(10**6, size=n, replace=False).astype(np.int64)
    relu = np.round(np.maximum(rng.normal(size=(n, 6)) @ rng.normal(size=(6, 24)), 0.0) * 4) / 4
    layers = {"relu": relu.astype(np.float32), "conv": rng.normal(size=(n, 2, 3, 2)).astype(np.float32)}
    source = {"kind": "matrix", "digest": activation_digest(layers, ids)}
    flat = {name: a.reshape(n, -1) for name, a in layers.items()}
    spark_meta = build_index_spark(_frame(spark, ids, flat), ["relu", "conv"], tmp_path / "spark", source=source,
                                   n_partitions=12, ratio=0.05, shapes={"conv": (2, 3, 2)})
    pure = [build_layer_index(flat[name], layer=name, n_partitions=12, ratio=0.05, ids=ids,
                              shape=layers[name].shape[1:]) for name in layers]
    pure_meta = write_index(tmp_path / "pure", pure, source=source)
    for key in ("N", "P", "ratio", "bits", "source"):
        assert spark_meta[key] == pure_meta[key]
    assert spark_meta["layers"]["conv"]["shape"] == [2, 3, 2] and spark_meta["layers"]["conv"]["neurons"] == 12
    assert json.loads((tmp_path / "spark" / "index.json").read_text()) == spark_meta
    for name in layers:
        for table, size in spark_meta["layers"][name]["bytes"].items():
            assert size == table_bytes(tmp_path / "spark" / name / f"{table}.parquet") > 0
        got, want = read_layer_index(tmp_path / "spark", name), read_layer_index(tmp_path / "pure", name)
        assert np.array_equal(got.ids, want.ids) and np.array_equal(got.neurons, want.neurons)
        assert np.array_equal(got.mai_pos, want.mai_pos) and np.array_equal(got.mai_act, want.mai_act)
        assert got.packed == want.packed and np.array_equal(got.count, want.count)
        assert np.array_equal(got.lo, want.lo, equal_nan=True) and np.array_equal(got.hi, want.hi, equal_nan=True)
    # and the queries over the Spark-built index give the in-memory build's answers
    source_rows = MatrixSource(layers, ids)
    a, b = ActivationIndex.open(tmp_path / "spark", source_rows), ActivationIndex.open(tmp_path / "pure", source_rows)
    for q in range(20):
        group = rng.choice(24, size=int(rng.integers(1, 6)), replace=False).tolist()
        k = int(rng.integers(1, 21))
        assert a.highest("relu", group, k).equals(b.highest("relu", group, k))
        conv_group = rng.choice(12, size=int(rng.integers(1, 6)), replace=False).tolist()
        assert a.nearest("conv", conv_group, int(ids[q]), k).equals(b.nearest("conv", conv_group, int(ids[q]), k))


def test_spark_build_rejects_nan_naming_layer_and_item(spark, tmp_path):
    acts = np.ones((5, 4), dtype=np.float32)
    acts[3, 2] = np.nan
    df = _frame(spark, np.arange(100, 105), {"fc": acts})
    with pytest.raises(ValueError, match=r"layer 'fc': NaN activation for item id 103 at neuron 2"):
        build_index_spark(df, ["fc"], tmp_path, source={"digest": "x"})
    assert not (tmp_path / "index.json").exists()
