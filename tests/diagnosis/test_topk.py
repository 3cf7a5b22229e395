"""DeepEverest index and exact top-k queries (issue 15): against brute force over the full activations."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scilens.diagnosis.topk import ActivationIndex, MatrixSource, ParquetSource
from scilens.diagnosis.topk_index import (
    LayerIndex,
    activation_digest,
    bits_per_item,
    build_layer_index,
    mai_size,
    pack_partition_ids,
    read_layer_index,
    unpack_partition_ids,
    write_index,
)


def _dense(n_items: int, n_neurons: int, seed: int) -> np.ndarray:
    """A linear layer over correlated inputs: continuous, signed, few ties."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_items, 8)) @ rng.normal(size=(8, 32)) + 0.3 * rng.normal(size=(n_items, 32))
    return (x @ rng.normal(size=(32, n_neurons))).astype(np.float32)


def _relu_tied(n_items: int, n_neurons: int, seed: int) -> np.ndarray:
    """ReLU of centred features, rounded to quarters: half exact zeros and many tied positives."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n_items, 16)) @ rng.normal(size=(16, n_neurons)) / 4.0
    z -= np.median(z, axis=0)
    return (np.round(np.maximum(z, 0.0) * 4.0) / 4.0).astype(np.float32)


def _build(tmp_path, layers, ids=None, partitions=64, ratio=0.05):
    indexes = [
        build_layer_index(a, layer=name, n_partitions=partitions, ratio=ratio, ids=ids) for name, a in layers.items()
    ]
    write_index(tmp_path, indexes, source={"kind": "matrix", "digest": activation_digest(layers, ids)})
    return ActivationIndex.open(tmp_path, MatrixSource(layers, ids)), indexes


@dataclass
class Case:
    """One built index: its layers' activations, item ids, the opened index and the in-memory build."""

    layers: dict[str, np.ndarray]
    ids: np.ndarray
    index: ActivationIndex
    built: list[LayerIndex]
    partitions: int
    ratio: float


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict[str, Case]:
    """Two indexes of different sizes: "dense" (N=1500, 200 + 10 neurons, P=16, ratio 0.05, ids 0..N-1) and
    "relu" (N=2300, 400 neurons, half zeros and many ties, P=10, ratio 0.1, rows shuffled, ids not 0..N-1)."""
    out = {}
    layers = {"dense": _dense(1500, 200, 1), "logits": _dense(1500, 10, 4)}
    index, built = _build(tmp_path_factory.mktemp("dense"), layers, partitions=16, ratio=0.05)
    out["dense"] = Case(layers, np.arange(1500), index, built, 16, 0.05)
    ids = np.random.default_rng(7).choice(10**9, size=2300, replace=False).astype(np.int64)
    layers = {"relu": _relu_tied(2300, 400, 2)}
    index, built = _build(tmp_path_factory.mktemp("relu"), layers, ids=ids, partitions=10, ratio=0.1)
    out["relu"] = Case(layers, ids, index, built, 10, 0.1)
    return out


def _agg(vals: np.ndarray, agg: str) -> np.ndarray:
    if agg == "max":
        return vals.max(axis=1)
    total = np.zeros(len(vals))
    for c in range(vals.shape[1]):
        total = total + vals[:, c]
    return total / vals.shape[1] if agg == "mean" else total


def _brute_highest(acts, ids, group, k, agg):
    score = _agg(acts[:, group].astype(np.float64), agg)
    order = np.lexsort((ids, -score))[:k]
    return ids[order], score[order]


def _brute_nearest(acts, ids, group, item_id, k):
    vals = acts[:, group].astype(np.float64)
    q = vals[np.flatnonzero(ids == item_id)[0]]
    total = np.zeros(len(vals))
    for c in range(vals.shape[1]):
        d = vals[:, c] - q[c]
        total = total + d * d
    dist = np.sqrt(total)
    order = np.lexsort((ids, dist))[:k]
    return ids[order], dist[order]


def _queries(seed, n_queries, n_neurons, n_items):
    rng = np.random.default_rng(seed)
    for _ in range(n_queries):
        group = rng.choice(n_neurons, size=int(rng.integers(1, 11)), replace=False).tolist()
        yield group, int(rng.integers(1, 21)), int(rng.integers(n_items))


@pytest.mark.parametrize("layer", ["dense", "relu"])
def test_highest_equals_brute_force(cases, layer):
    case = cases[layer]
    acts, ids, index = case.layers[layer], case.ids, case.index
    for q, (group, k, _) in enumerate(_queries(11, 120, acts.shape[1], len(ids))):
        agg = ("sum", "mean", "max")[q % 3]
        got = index.highest(layer, group, k, agg=agg)
        want_ids, want_score = _brute_highest(acts, ids, group, k, agg)
        assert got["id"].tolist() == want_ids.tolist(), (layer, group, k, agg)
        np.testing.assert_allclose(got["score"].to_numpy(), want_score, rtol=1e-6, atol=1e-6)
        assert 0 < index.last_stats.rows_fetched + k  # stats exist for every query
        assert index.last_stats.rows_fetched <= len(ids)


@pytest.mark.parametrize("layer", ["dense", "relu"])
def test_nearest_equals_brute_force(cases, layer):
    case = cases[layer]
    acts, ids, index = case.layers[layer], case.ids, case.index
    sorted_ids = np.sort(ids)
    for group, k, item in _queries(12, 100, acts.shape[1], len(ids)):
        item_id = int(sorted_ids[item])
        got = index.nearest(layer, group, item_id, k)
        want_ids, want_dist = _brute_nearest(acts, ids, group, item_id, k)
        assert got["id"].tolist() == want_ids.tolist(), (layer, group, k, item_id)
        np.testing.assert_allclose(got["score"].to_numpy(), want_dist, rtol=1e-6, atol=1e-6)
        assert index.last_stats.rows_fetched >= 1 and index.last_stats.source == "matrix"


def test_exact_when_the_mai_holds_one_item(tmp_path):
    """ratio so small that m = 1 and P = 4 wide partitions: almost every bound comes from partitions."""
    rng = np.random.default_rng(21)
    layers = {"a": _relu_tied(400, 30, 8), "b": _dense(400, 12, 9)}
    index, built = _build(tmp_path, layers, partitions=4, ratio=0.001)
    assert built[0].mai_pos.shape == (30, 1)
    ids = np.arange(400)
    for q in range(60):
        layer = "ab"[q % 2]
        acts = layers[layer]
        group = rng.choice(acts.shape[1], size=int(rng.integers(1, 8)), replace=False).tolist()
        k, agg, item = int(rng.integers(1, 21)), ("sum", "mean", "max")[q % 3], int(rng.integers(400))
        got = index.highest(layer, group, k, agg=agg)
        assert got["id"].tolist() == _brute_highest(acts, ids, group, k, agg)[0].tolist(), (layer, group, k, agg)
        got = index.nearest(layer, group, item, k)
        assert got["id"].tolist() == _brute_nearest(acts, ids, group, item, k)[0].tolist(), (layer, group, k, item)


def test_parquet_store_gives_the_matrix_answers(cases, tmp_path):
    """The same queries fetching from a Parquet table laid out as the activation store (id, list<float>)."""
    case = cases["relu"]
    acts = case.layers["relu"]
    shuffle = np.random.default_rng(4).permutation(len(case.ids))
    table = pa.table(
        {
            "id": pa.array(case.ids[shuffle], pa.int64()),
            "relu": pa.array(list(acts[shuffle]), pa.list_(pa.float32())),
        }
    )
    pq.write_table(table, tmp_path / "activations.parquet", row_group_size=300)
    store = ActivationIndex.open(
        case.index.path, ParquetSource(tmp_path / "activations.parquet", case.index.meta["source"]["digest"])
    )
    sorted_ids = np.sort(case.ids)
    for group, k, item in _queries(13, 15, acts.shape[1], len(case.ids)):
        assert store.highest("relu", group, k).equals(case.index.highest("relu", group, k))
        fetched = case.index.last_stats.rows_fetched
        assert store.last_stats.rows_fetched == fetched and store.last_stats.source == "store"
        item_id = int(sorted_ids[item])
        assert store.nearest("relu", group, item_id, k).equals(case.index.nearest("relu", group, item_id, k))
    fetch = ParquetSource(tmp_path / "activations.parquet", "x").fetcher("relu")
    assert np.array_equal(fetch(case.ids[[5, 2, 9]]), acts[[5, 2, 9]])
    with pytest.raises(ValueError, match="the store lacks 1 of the item ids"):
        fetch(np.array([case.ids[0], -5]))


def test_ties_break_by_id(tmp_path):
    # 12 items, 3 neurons; items 3, 5, 9 tie on every neuron: order must be by id both ways.
    acts = np.zeros((12, 3), dtype=np.float32)
    acts[[9, 3, 5]] = 2.0
    acts[0] = 1.0
    index, _ = _build(tmp_path, {"l": acts}, partitions=4, ratio=0.1)
    assert index.highest("l", [0, 2], 4)["id"].tolist() == [3, 5, 9, 0]
    assert index.nearest("l", [1], 5, 3)["id"].tolist() == [3, 5, 9]
    # all-zero items tie at the bottom: the k=6 result takes the lowest ids among them.
    assert index.highest("l", [1], 6)["id"].tolist() == [3, 5, 9, 0, 1, 2]


@pytest.mark.parametrize("name", ["dense", "relu"])
def test_index_is_what_it_says(cases, name):
    case = cases[name]
    n, p = len(case.ids), case.partitions
    order_ids = np.sort(case.ids)
    m = mai_size(n, case.ratio)
    assert m == math.ceil(case.ratio * n)
    for li in case.built:
        acts = case.layers[li.layer][np.argsort(case.ids)]  # rows in id order, as in the index
        assert li.mai_pos.shape == (acts.shape[1], m)
        for j in range(acts.shape[1]):
            top = np.lexsort((order_ids, -acts[:, j]))[:m]
            assert li.mai_pos[j].tolist() == top.tolist()
            assert np.array_equal(li.mai_act[j], acts[top, j])
            pid = li.partition_ids(j)
            assert set(np.flatnonzero(pid == 0).tolist()) == set(top.tolist())
            assert (li.lo[j, pid] <= acts[:, j]).all() and (acts[:, j] <= li.hi[j, pid]).all()
            sizes = np.bincount(pid, minlength=p)[1:]
            assert len(sizes) == p - 1 and sizes.sum() == n - m and sizes.max() - sizes.min() <= 1  # equi-depth
            assert (li.hi[j, 1:] <= li.lo[j, :-1]).all()  # partitions descend (ties may touch)
    root = Path(case.index.path)
    meta = json.loads((root / "index.json").read_text())
    assert (meta["N"], meta["P"], meta["bits"], meta["ratio"]) == (n, p, math.ceil(math.log2(p)), case.ratio)
    assert {name: info["shape"] for name, info in meta["layers"].items()} == {
        name: [a.shape[1]] for name, a in case.layers.items()
    }
    for layer, info in meta["layers"].items():
        assert set(info["bytes"]) == {"mai", "npi", "bounds"}
        for table, size in info["bytes"].items():
            assert size == (root / layer / f"{table}.parquet").stat().st_size
        # the packed table is N x bits per neuron (plus Parquet's overhead), the point of the NPI
        assert info["bytes"]["npi"] >= info["neurons"] * n * meta["bits"] // 8
    assert meta["ids_bytes"] == (root / "ids.parquet").stat().st_size
    for want in case.built:
        back = read_layer_index(root, want.layer)
        assert np.array_equal(back.ids, want.ids) and np.array_equal(back.mai_pos, want.mai_pos)
        assert np.array_equal(back.mai_act, want.mai_act) and np.array_equal(back.count, want.count)
        assert back.packed == want.packed and np.array_equal(back.hi, want.hi, equal_nan=True)
        assert np.array_equal(back.lo, want.lo, equal_nan=True)


@pytest.mark.parametrize("partitions", [2, 3, 10, 64, 256, 300])
def test_pack_roundtrip(partitions):
    rng = np.random.default_rng(partitions)
    bits = bits_per_item(partitions)
    assert bits == math.ceil(math.log2(partitions))
    pids = rng.integers(partitions, size=1001).astype(np.uint16)
    packed = pack_partition_ids(pids, bits)
    assert len(packed) == math.ceil(1001 * bits / 8)
    assert np.array_equal(unpack_partition_ids(packed, 1001, bits), pids)


def test_bad_input_refused(cases):
    layers, ids, index = cases["relu"].layers, cases["relu"].ids, cases["relu"].index
    with pytest.raises(ValueError, match="neuron 400 out of range for layer 'relu'"):
        index.highest("relu", [3, 400], 5)
    with pytest.raises(ValueError, match="neuron -1 out of range"):
        index.nearest("relu", [-1], int(ids[0]), 5)
    with pytest.raises(ValueError, match="unknown layer 'conv9'"):
        index.highest("conv9", [0], 5)
    with pytest.raises(ValueError, match=r"k must be an integer in 1\.\.N=2300, got 2301"):
        index.highest("relu", [0], 2301)
    with pytest.raises(ValueError, match="got 0"):
        index.nearest("relu", [0], int(ids[0]), 0)
    missing = int(np.setdiff1d(np.arange(10), ids)[0])
    with pytest.raises(ValueError, match=f"item id {missing} is not in the index"):
        index.nearest("relu", [0], missing, 5)
    with pytest.raises(ValueError, match="item id must be an integer, got '12'"):
        index.nearest("relu", [0], "12", 5)
    with pytest.raises(ValueError, match="neurons must be a non-empty list of integers"):
        index.highest("relu", [], 5)
    with pytest.raises(ValueError, match="neuron 4 repeated"):
        index.highest("relu", [4, 4], 5)
    with pytest.raises(ValueError, match="unknown aggregate 'median'"):
        index.highest("relu", [4], 5, agg="median")
    with pytest.raises(ValueError, match="unknown metric 'cosine'"):
        index.nearest("relu", [4], int(ids[0]), 5, metric="cosine")
    changed = {name: a.copy() for name, a in layers.items()}
    changed["relu"][17, 3] += 1.0
    with pytest.raises(ValueError, match="digest mismatch"):
        ActivationIndex.open(index.path, MatrixSource(changed, ids))
    broken = cases["dense"].layers["dense"][:50].copy()
    broken[31, 7] = np.nan
    with pytest.raises(ValueError, match=r"layer 'fc1': NaN activation for item id 31 at neuron 7"):
        build_layer_index(broken, layer="fc1")


def test_rows_fetched_well_below_n(tmp_path):
    """Random-feature ReLU layer over correlated inputs, P=64, ratio=0.05: median fraction of N fetched."""
    rng = np.random.default_rng(3)
    n = 10_000
    x = rng.normal(size=(n, 12)) @ rng.normal(size=(12, 64)) + 0.5 * rng.normal(size=(n, 64))
    acts = np.maximum(x @ rng.normal(size=(64, 256)) / 8.0 + 0.2 * rng.normal(size=256), 0.0).astype(np.float32)
    index, _ = _build(tmp_path, {"fc": acts}, partitions=64, ratio=0.05)
    fractions = {"highest": [], "nearest": []}
    for q in range(80):
        group = rng.choice(256, size=int(rng.integers(1, 6)), replace=False).tolist()
        k = int((5, 10, 20)[q % 3])
        index.highest("fc", group, k)
        fractions["highest"].append(index.last_stats.rows_fetched / n)
        index.nearest("fc", group, int(rng.integers(n)), k)
        fractions["nearest"].append(index.last_stats.rows_fetched / n)
    medians = {kind: float(np.median(f)) for kind, f in fractions.items()}
    print(f"median fraction of N={n} fetched (groups <= 5, k <= 20, P=64, ratio=0.05): {medians}")
    assert medians["highest"] <= 0.25 and medians["nearest"] <= 0.25, medians
