"""Re-inference mode of the activation index: built from an image table plus a model, queried by re-running it.

The index is built by ``scilens activation-index --set model=...`` over the same 300 digits (``ids``) and
layers as the session's store index (``topk_index``, built from ``topk_store``), so both ways can be
compared table by table and query by query. Activations computed in another inference pass may differ
from the stored ones in the last float32 bits (:data:`~tests.diagnosis.conftest.INFERENCE_TOLERANCE`).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from scilens import cli
from scilens.diagnosis import topk_stages
from scilens.diagnosis.topk import ActivationIndex, ParquetSource
from scilens.diagnosis.topk_index import read_index_meta, read_layer_index
from scilens.diagnosis.topk_stages import InferenceSource, inference_digest
from scilens.jobs.activation_index import store_digest
from tests.diagnosis.conftest import INFERENCE_TOLERANCE, TOPK_LAYERS, assert_inference_close

N_ITEMS = 300


@pytest.fixture(scope="module")
def reinfer_index(spark, trained_digits, tmp_path_factory):
    """The activation index (P=8, ratio=0.1) of the first 300 digits, built by inference: no store."""
    out = tmp_path_factory.mktemp("reinfer_index") / "index"
    assert cli.main(["activation-index", "--input", str(trained_digits.table), "--output", str(out),
                     "--set", f"model={trained_digits.model_path}", "--set", f"layers=[{','.join(TOPK_LAYERS)}]",
                     "--set", f"ids=[{','.join(map(str, range(N_ITEMS)))}]",
                     "--set", "partitions=8", "--set", "ratio=0.1"]) == 0
    return out


@pytest.fixture(scope="module")
def inference_source(spark, trained_digits):
    return InferenceSource(spark, [str(trained_digits.table)], str(trained_digits.model_path))


def test_inference_index_equals_the_store_index(reinfer_index, topk_index, topk_store, trained_digits):
    meta, stored = read_index_meta(reinfer_index), read_index_meta(topk_index)
    source = meta["source"]
    assert source["kind"] == "inference" and source["model"] == str(trained_digits.model_path.absolute())
    assert source["images"] == [str(trained_digits.table.absolute())]
    assert source["digest"] == inference_digest(trained_digits.model_path, [trained_digits.table])
    assert (meta["N"], meta["P"], meta["ratio"]) == (stored["N"], stored["P"], stored["ratio"]) == (N_ITEMS, 8, 0.1)
    assert {k: v["shape"] for k, v in meta["layers"].items()} == {k: v["shape"] for k, v in stored["layers"].items()}
    data = topk_store.to_numpy(["id", *TOPK_LAYERS])
    for layer in TOPK_LAYERS:
        got, want = read_layer_index(reinfer_index, layer), read_layer_index(topk_index, layer)
        assert np.array_equal(got.ids, want.ids) and np.array_equal(got.ids, data["id"])
        assert np.array_equal(got.neurons, want.neurons) and np.array_equal(got.count, want.count)
        # The MAI's values are the activations of the items it names, up to inference rounding ...
        columns = np.arange(got.mai_pos.shape[0])[:, None]
        assert_inference_close(got.mai_act, data[layer][got.mai_pos, columns], err_msg=layer)
        assert_inference_close(got.mai_act, want.mai_act, err_msg=layer)
        assert_inference_close(got.lo, want.lo, err_msg=layer)
        assert_inference_close(got.hi, want.hi, err_msg=layer)
        # ... and every item whose rank rounding cannot move is in the same MAI and partition both ways.
        fixed = _rank_fixed(data[layer])
        assert fixed.mean() > 0.5, f"{layer}: too many rounding ties to compare the tables"
        for r in range(len(got.neurons)):
            keep = fixed[:, r]
            assert np.array_equal(got.partition_ids(r)[keep], want.partition_ids(r)[keep]), (layer, r)
            assert set(got.mai_pos[r][keep[got.mai_pos[r]]]) == set(want.mai_pos[r][keep[want.mai_pos[r]]])


def _rank_fixed(acts: np.ndarray) -> np.ndarray:
    """(N, neurons): the items whose rank in the neuron no inference rounding can change.

    An item is loose when another item's activation differs from its own by at most twice the rounding
    bound; equal activations (ReLU zeros) stay equal under rounding and are ranked by id either way.
    """
    order = np.argsort(acts, axis=0, kind="stable")
    gaps = np.diff(np.take_along_axis(acts.astype(np.float64), order, axis=0), axis=0)
    close = (gaps != 0) & (gaps <= 2 * INFERENCE_TOLERANCE * np.abs(acts).max())
    loose = np.zeros(acts.shape, dtype=bool)
    loose[1:] |= close
    loose[:-1] |= close
    fixed = np.empty_like(loose)
    np.put_along_axis(fixed, order, ~loose, axis=0)
    return fixed


def _queries(n_neurons: dict[str, int], seed: int = 15):
    rng = np.random.default_rng(seed)
    for i in range(6):
        layer = TOPK_LAYERS[i % 2]
        group = rng.choice(n_neurons[layer], size=int(rng.integers(1, min(6, n_neurons[layer]) + 1)), replace=False)
        k = int(rng.integers(3, 16))
        if i < 3:
            yield "highest", layer, group.tolist(), k, str(rng.choice(["sum", "mean", "max"]))
        else:
            yield "nearest", layer, group.tolist(), k, int(rng.integers(0, N_ITEMS))


def _run(index: ActivationIndex, query) -> pd.DataFrame:
    kind, layer, group, k, extra = query
    if kind == "highest":
        return index.highest(layer, group, k, agg=extra)
    return index.nearest(layer, group, extra, k)


def _assert_same_result(got: pd.DataFrame, want: pd.DataFrame, scale: float, what) -> None:
    """Same ids in the same order and scores within rounding, but for items whose scores tie within rounding."""
    assert len(got) == len(want), what
    tol = 4 * INFERENCE_TOLERANCE * scale
    np.testing.assert_allclose(got["score"], want["score"], rtol=0, atol=tol, err_msg=str(what))
    ids, ref, scores = got["id"].to_numpy(), want["id"].to_numpy(), want["score"].to_numpy()
    for i in np.flatnonzero(ids != ref):
        near = np.abs(scores - scores[i]) <= 2 * tol
        assert near.sum() > 1 or i == len(ids) - 1, f"{what}: rank {i + 1} is {ids[i]}, not {ref[i]}"


def test_reinference_queries_equal_store_queries(spark, reinfer_index, topk_index, topk_store, inference_source):
    stored = ActivationIndex.open(topk_index, ParquetSource(topk_store.table, store_digest(topk_store.path)))
    reinfer = ActivationIndex.open(reinfer_index, inference_source)
    neurons = {layer: int(stored.meta["layers"][layer]["neurons"]) for layer in TOPK_LAYERS}
    data = topk_store.to_numpy(TOPK_LAYERS)
    fetched = []
    for query in _queries(neurons):
        want = _run(stored, query)
        got = _run(reinfer, query)
        stats = reinfer.last_stats
        assert stats is not None and stats.source == "inference" and stats.rows_fetched <= N_ITEMS, query
        # a nearest query infers at least its own item; a highest one may be answered by the MAI alone
        assert stats.rows_fetched > 0 or query[0] == "highest", query
        fetched.append(stats.rows_fetched)
        _assert_same_result(got, want, float(np.abs(data[query[1]][:, query[2]]).max()), query)
    assert sum(fetched[:3]) > 0, f"no highest query re-inferred anything: {fetched}"


@pytest.mark.parametrize("isin_max", [topk_stages.ISIN_MAX, 0], ids=["isin", "semi-join"])
def test_fetch_infers_the_rows_asked_in_order_and_names_an_absent_id(spark, topk_store, inference_source,
                                                                      monkeypatch, isin_max):
    monkeypatch.setattr(topk_stages, "ISIN_MAX", isin_max)  # both ways of keeping only the asked rows
    fetch = inference_source.fetcher("fc2")
    data = topk_store.to_numpy(["id", "fc2"])
    asked = np.array([17, 3, 250, 3], dtype=np.int64)
    assert_inference_close(fetch(asked), data["fc2"][asked])  # the store's ids are 0..299 in order
    with pytest.raises(ValueError, match="item id 987654 not in the image table"):
        fetch(np.array([3, 987654], dtype=np.int64))


def _topk(index, out, *settings) -> int:
    return cli.main(["topk", "--input", str(index), "--output", str(out), *[a for s in settings for a in ("--set", s)]])


def test_topk_job_reinfers_and_draws_the_sheet_without_images(spark, reinfer_index, topk_index, tmp_path):
    settings = ["query=highest", "layer=fc2", "neurons=[3,17,40]", "k=6"]
    assert _topk(reinfer_index, tmp_path / "o", *settings) == 0
    assert _topk(topk_index, tmp_path / "s", *settings) == 0
    got, want = (pd.read_parquet(tmp_path / d / "result.parquet") for d in ("o", "s"))
    _assert_same_result(got, want, float(want["score"].abs().max()), settings)
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["source_kind"] == "inference" and stats["source"] == "inference" and stats["rows_fetched"] > 0
    assert json.loads((tmp_path / "s" / "stats.json").read_text())["source_kind"] == "store"
    sheet = json.loads((tmp_path / "o" / "contact_sheet.json").read_text())
    assert sheet["panels"] == 6 and sheet["ids"] == got["id"].tolist()
    assert (tmp_path / "o" / "contact_sheet.png").stat().st_size > 1000


def _altered_copy(src, dst):
    shutil.copy(src, dst)
    data = bytearray(dst.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dst.write_bytes(bytes(data))


@pytest.mark.parametrize("change", ["model", "images"])
def test_changed_model_or_table_is_refused(spark, reinfer_index, trained_digits, tmp_path, job_log, change):
    copy = tmp_path / "index"
    shutil.copytree(reinfer_index, copy)
    meta = json.loads((copy / "index.json").read_text())
    model, table = trained_digits.model_path, trained_digits.table
    if change == "model":
        model = tmp_path / "model.keras"
        shutil.copy(trained_digits.model_path, model)
        assert inference_digest(model, [table]) == meta["source"]["digest"]  # a copy is the same model
        data = bytearray(model.read_bytes())
        data[len(data) // 2] ^= 0xFF
        model.write_bytes(bytes(data))
        meta["source"]["model"], changed, named = str(model), model, "model"
    else:
        table = tmp_path / "digits"
        shutil.copytree(trained_digits.table, table)
        assert inference_digest(model, [table]) == meta["source"]["digest"]  # a copy is the same table
        first = sorted(table.glob("*.parquet"))[0]
        shutil.copy(first, first.with_name("extra-" + first.name))  # more rows: another table
        meta["source"]["images"], changed, named = [str(table)], table, "image table"
    (copy / "index.json").write_text(json.dumps(meta))
    assert _topk(copy, tmp_path / "o", "layer=fc2", "neurons=[0]") != 0 and not (tmp_path / "o").exists()
    assert any("digest mismatch" in line and f"the {named} {changed} changed" in line for line in job_log), \
        job_log[-3:]
