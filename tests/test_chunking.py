"""Blocks tile the array, carry the right halo, and reassemble exactly, on the driver and in Spark."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st
from pyspark.sql import types as T

from scilens.core import chunking, tensor


@st.composite
def _cases(draw):
    ndim = draw(st.integers(1, 4))
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=ndim, max_size=ndim)))
    block = tuple(draw(st.lists(st.integers(1, 5), min_size=ndim, max_size=ndim)))
    halo = tuple(draw(st.lists(st.integers(0, 3), min_size=ndim, max_size=ndim)))
    return shape, block, halo


@settings(max_examples=200, deadline=None)
@given(case=_cases())
def test_split_assemble_round_trip_with_halo(case):
    shape, block, halo = case
    array = np.random.default_rng(1).normal(size=shape)
    pieces = list(chunking.split(array, block, halo))
    # Cores tile the array exactly once.
    coverage = np.zeros(shape, dtype=int)
    for b, data in pieces:
        coverage[tuple(slice(s, e) for s, e in zip(b.start, b.stop))] += 1
        # The stored data is the array's neighbourhood: core widened by the halo, clipped at edges.
        assert np.array_equal(data, array[tuple(slice(max(s - h, 0), min(e + h, n))
                                                for s, e, h, n in zip(b.start, b.stop, halo, shape))])
    assert (coverage == 1).all()
    assert np.array_equal(chunking.assemble(pieces, shape), array)


def test_trailing_axes_are_kept_whole():
    volume = np.arange(6 * 5 * 4 * 3, dtype=np.float32).reshape(6, 5, 4, 3)  # (i, j, k, gradient)
    pieces = [(b, d) for b, d in chunking.split(volume, (4, 4, 4, 3), halo=(1, 1, 1, 0))]
    assert all(d.shape[-1] == 3 for _, d in pieces)
    assert np.array_equal(chunking.assemble(pieces, volume.shape), volume)


def test_reassembly_inside_spark(spark):
    image = np.random.default_rng(2).integers(0, 1000, size=(23, 17)).astype(np.int32)
    blocks = chunking.block_grid(image.shape, (8, 8), halo=2)
    rows = [{"index": list(b.index), "data": tensor.encode(image[b.slices])} for b in blocks]
    schema = T.StructType([T.StructField("index", T.ArrayType(T.LongType())), tensor.tensor_field("data")])
    df = spark.createDataFrame(pd.DataFrame(rows), schema).repartition(3)

    def reassemble(pdf: pd.DataFrame) -> pd.DataFrame:
        by_index = {tuple(b.index): b for b in chunking.block_grid((23, 17), (8, 8), halo=2)}
        pieces = [(by_index[tuple(i)], d) for i, d in zip(pdf["index"], tensor.decode_column(pdf["data"]))]
        whole = chunking.assemble(pieces, (23, 17))
        return pd.DataFrame({"image": [tensor.encode(whole)]})

    out = df.groupBy().applyInPandas(reassemble, T.StructType([tensor.tensor_field("image")])).collect()
    assert np.array_equal(tensor.decode(out[0].image), image)
