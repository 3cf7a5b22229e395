"""``scilens activation-index`` over an activation store of the trained digits model: the pure build, bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from scilens import cli
from scilens.diagnosis.topk_index import build_layer_index, read_layer_index, write_index
from tests.diagnosis.conftest import TOPK_LAYERS as LAYERS


@pytest.fixture
def store(topk_store):
    return topk_store


@pytest.fixture
def index(topk_index):
    return topk_index


def test_job_index_equals_the_pure_build(store, index, tmp_path):
    meta = json.loads((index / "index.json").read_text())
    assert meta["N"] == store.rows == 300 and meta["P"] == 8 and sorted(meta["layers"]) == sorted(LAYERS)
    assert meta["source"]["path"] == str(store.path.resolve())
    assert meta["source"]["digest"].startswith("parquet:sha256:")
    data = store.to_numpy(["id", *LAYERS])
    pure = [build_layer_index(data[layer], layer=layer, n_partitions=8, ratio=0.1, ids=data["id"].astype(np.int64))
            for layer in LAYERS]
    write_index(tmp_path / "pure", pure, source=meta["source"])
    for layer in LAYERS:
        got, want = read_layer_index(index, layer), read_layer_index(tmp_path / "pure", layer)
        assert np.array_equal(got.ids, want.ids) and np.array_equal(got.neurons, want.neurons)
        assert np.array_equal(got.mai_pos, want.mai_pos) and np.array_equal(got.mai_act, want.mai_act)
        assert got.packed == want.packed and np.array_equal(got.count, want.count)
        assert np.array_equal(got.lo, want.lo, equal_nan=True) and np.array_equal(got.hi, want.hi, equal_nan=True)
    assert (index / "report.html").is_file() and (index / "manifest.json").exists()


@pytest.mark.parametrize("setting, named", [
    ("layers=[nope]", "nope"),
    ("model=absent.keras", "model absent.keras: no such file"),  # re-inference mode: the model is checked first
])
def test_bad_index_input_is_named(spark, store, tmp_path, job_log, setting, named):
    code = cli.main(["activation-index", "--input", str(store.path), "--output", str(tmp_path / "o"),
                     "--set", setting])
    assert code != 0 and not (tmp_path / "o").exists()
    assert any(named in line for line in job_log)


def _brute(values: np.ndarray, ids: np.ndarray, scores: np.ndarray, k: int, largest: bool) -> tuple:
    order = np.lexsort((ids, -scores if largest else scores))[:k]
    return ids[order], scores[order]


def _topk(index, out, *settings) -> int:
    return cli.main(["topk", "--input", str(index), "--output", str(out), *[a for s in settings for a in ("--set", s)]])


@pytest.mark.parametrize("query", ["highest", "nearest"])
def test_topk_job_equals_brute_force_and_draws_the_sheet(spark, store, index, trained_digits, tmp_path, query):
    data = store.to_numpy(["id", "fc2"])
    ids, acts = data["id"].astype(np.int64), data["fc2"].astype(np.float64)
    group, k, item = [3, 17, 40], 7, int(ids[11])
    settings = ["layer=fc2", f"neurons=[{','.join(map(str, group))}]", f"k={k}", f"images={trained_digits.table}"]
    if query == "highest":
        want = _brute(acts, ids, acts[:, group].sum(axis=1), k, largest=True)
    else:
        where = int(np.flatnonzero(ids == item)[0])
        want = _brute(acts, ids, np.sqrt(((acts[:, group] - acts[where, group]) ** 2).sum(axis=1)), k, largest=False)
        settings.append(f"item={item}")
    assert _topk(index, tmp_path / "o", f"query={query}", *settings) == 0
    got = pd.read_parquet(tmp_path / "o" / "result.parquet")
    assert got["rank"].tolist() == list(range(1, k + 1))
    assert np.array_equal(got["id"].to_numpy(), want[0])
    np.testing.assert_allclose(got["score"].to_numpy(), want[1], rtol=1e-5, atol=1e-5)
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["source_kind"] == "store" and 0 < stats["rows_fetched"] <= store.rows
    sheet = json.loads((tmp_path / "o" / "contact_sheet.json").read_text())
    assert sheet["panels"] == k and sheet["ids"] == want[0].tolist()
    assert (tmp_path / "o" / "contact_sheet.png").stat().st_size > 1000 and (tmp_path / "o" / "report.html").is_file()


@pytest.mark.parametrize("settings, named", [
    (["layer=nope", "neurons=[0]"], "unknown layer 'nope'"),
    (["layer=fc2", "neurons=[100000]"], "neuron 100000 out of range"),
    (["layer=fc2", "neurons=[0]", "k=301"], "k must be an integer in 1..N=300"),
    (["query=nearest", "layer=fc2", "neurons=[0]", "item=987654"], "item id 987654 is not in the index"),
])
def test_bad_query_is_named(spark, index, tmp_path, job_log, settings, named):
    assert _topk(index, tmp_path / "o", *settings) != 0 and not (tmp_path / "o").exists()
    assert any(named in line for line in job_log), job_log[-3:]


def test_changed_store_is_refused(spark, store, index, tmp_path, job_log):
    import shutil

    copy, changed = tmp_path / "index", tmp_path / "store"
    shutil.copytree(index, copy)
    shutil.copytree(store.path, changed)
    meta = json.loads((copy / "index.json").read_text())
    meta["source"]["path"] = str(changed)
    (copy / "index.json").write_text(json.dumps(meta))
    assert _topk(copy, tmp_path / "same", "layer=fc2", "neurons=[0]") == 0  # a byte-identical copy is the same store
    layers = changed / "layers.json"
    layers.write_text(layers.read_text() + "\n")
    assert _topk(copy, tmp_path / "o", "layer=fc2", "neurons=[0]") != 0
    assert any("digest mismatch" in line for line in job_log)


def test_store_is_sorted_by_id_in_small_row_groups(store):
    import pyarrow.parquet as pq

    from scilens.core.parquet import ROW_GROUP_BYTES

    groups = 0
    for part in sorted((store.path / "activations.parquet").glob("*.parquet")):
        pf = pq.ParquetFile(part)
        for g in range(pf.metadata.num_row_groups):
            ids = pf.read_row_group(g, columns=["id"]).column(0).to_numpy()
            assert np.all(np.diff(ids) > 0), (part.name, g)
            # the writer closes a group once its buffer passes the target: at most one row over
            assert pf.metadata.row_group(g).total_byte_size < ROW_GROUP_BYTES + 4096
            groups += 1
    assert groups >= 1
