"""ParquetSource fetches rows by id from a store of several files and small row groups, and the index counts them.

No Spark: the store is written with pyarrow, ids shuffled across files, so a fetch must map every id to its
file and row group; what it reads is checked against the files' own footers.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scilens.diagnosis.topk import ActivationIndex, MatrixSource, ParquetSource
from scilens.diagnosis.topk_index import activation_digest, build_layer_index, write_index

N, GROUP_ROWS = 600, 40
NEURONS = {"wide": 7, "narrow": 3}


def _write(root, ids, acts, rows_per_group):
    root.mkdir()
    for f, part in enumerate(np.array_split(np.arange(len(ids)), 3)):
        columns = {"id": pa.array(ids[part], pa.int64())}
        for layer, a in acts.items():
            columns[layer] = pa.array(list(a[part]), pa.list_(pa.float32()))
        pq.write_table(pa.table(columns), root / f"part-{f}.parquet", row_group_size=rows_per_group)
    return root


def _holders(root, wanted, layer):
    """(file, row group) pairs holding any of ``wanted``, and the compressed bytes of their ``layer`` chunks."""
    groups, size = set(), 0
    for f, part in enumerate(sorted(root.glob("*.parquet"))):
        pf = pq.ParquetFile(part)
        for g in range(pf.metadata.num_row_groups):
            if np.isin(pf.read_row_group(g, columns=["id"]).column(0).to_numpy(), wanted).any():
                groups.add((f, g))
                meta = pf.metadata.row_group(g)
                size += sum(meta.column(c).total_compressed_size for c in range(meta.num_columns)
                            if meta.column(c).path_in_schema.split(".")[0] == layer)
    return groups, size


@pytest.fixture(scope="module")
def activations():
    """Seeded activations with ReLU-like ties (zeros), ids shuffled and not contiguous."""
    rng = np.random.default_rng(15)
    ids = rng.permutation(np.arange(N, dtype=np.int64) * 3 + 1000)
    acts = {layer: np.maximum(rng.normal(size=(N, n)), 0).astype(np.float32) for layer, n in NEURONS.items()}
    return ids, acts


@pytest.mark.parametrize("rows_per_group", [GROUP_ROWS, N])  # small row groups, and the old one-group-per-file
def test_fetch_equals_the_matrix_reading_only_the_row_groups_holding_the_ids(tmp_path, activations, rows_per_group):
    ids, acts = activations
    root = _write(tmp_path / "store", ids, acts, rows_per_group)
    source = ParquetSource(root, digest="d")
    truth = MatrixSource(acts, ids)
    rng = np.random.default_rng(1)
    for layer in NEURONS:
        fetch, want = source.fetcher(layer), truth.fetcher(layer)
        for size in (1, 5, 60):
            wanted = rng.choice(ids, size)
            wanted = np.concatenate([wanted, wanted[::2]])  # repeats, out of order
            before = (source.cost.row_groups, source.cost.bytes)
            got = fetch(wanted)
            assert got.dtype == np.float32 and got.shape == (len(wanted), NEURONS[layer])
            np.testing.assert_array_equal(got, want(wanted))
            groups, size_read = _holders(root, wanted, layer)
            assert (source.cost.row_groups - before[0], source.cost.bytes - before[1]) == (len(groups), size_read)
            if rows_per_group == GROUP_ROWS and size == 1:
                assert len(groups) == 1


def test_ids_not_in_the_store_are_named(tmp_path, activations):
    ids, acts = activations
    fetch = ParquetSource(_write(tmp_path / "store", ids, acts, GROUP_ROWS), digest="d").fetcher("wide")
    with pytest.raises(ValueError, match=r"the store lacks 2 of the item ids asked for, e\.g\. 5, 99999"):
        fetch(np.array([ids[0], 5, 99999, 5]))


def test_index_over_the_store_answers_as_over_the_matrix_and_counts_what_it_read(tmp_path, activations):
    ids, acts = activations
    digest = activation_digest(acts, ids)
    built = [build_layer_index(a, layer=layer, n_partitions=8, ratio=0.05, ids=ids) for layer, a in acts.items()]
    write_index(tmp_path / "index", built, source={"kind": "test", "digest": digest})
    store = ParquetSource(_write(tmp_path / "store", ids, acts, GROUP_ROWS), digest=digest)
    on_store = ActivationIndex.open(tmp_path / "index", store)
    on_matrix = ActivationIndex.open(tmp_path / "index", MatrixSource(acts, ids))
    rng = np.random.default_rng(2)
    total_groups = total_bytes = fetched = 0
    for n in range(12):
        layer = ("wide", "narrow")[n % 2]
        group = sorted(rng.choice(NEURONS[layer], min(1 + n % 3, NEURONS[layer]), replace=False).tolist())
        k = int(rng.integers(1, 15))
        if n % 4 < 2:
            got, want = on_store.highest(layer, group, k), on_matrix.highest(layer, group, k)
        else:
            item = int(rng.choice(ids))
            got, want = on_store.nearest(layer, group, item, k), on_matrix.nearest(layer, group, item, k)
        assert got.equals(want)
        s, m = on_store.last_stats, on_matrix.last_stats
        assert s is not None and m is not None and s.rows_fetched == m.rows_fetched
        assert (m.store_row_groups, m.store_bytes) == (0, 0)  # an in-memory source reads no Parquet
        # every fetched row sits in one row group; a batch reads each group it touches once
        assert (s.store_row_groups > 0) == (s.rows_fetched > 0) and s.store_row_groups <= s.rows_fetched + 1
        assert (s.store_bytes > 0) == (s.store_row_groups > 0)
        total_groups, total_bytes = total_groups + s.store_row_groups, total_bytes + s.store_bytes
        fetched += s.rows_fetched
    assert fetched > 0
    assert (total_groups, total_bytes) == (store.cost.row_groups, store.cost.bytes)
