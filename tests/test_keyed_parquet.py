"""Rows fetched by key from Parquet read only the row groups holding them, in the order asked."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scilens.core.parquet import KeyedParquet


@pytest.fixture
def table(tmp_path):
    """Three files of shuffled ids in row groups of 50 rows; each row's values are a function of its id."""
    rng = np.random.default_rng(0)
    ids = rng.permutation(np.arange(1000, 1600))
    root = tmp_path / "t"
    root.mkdir()
    for f, part in enumerate(np.array_split(ids, 3)):
        values = pa.array([list(np.arange(4, dtype=np.float32) + i) for i in part], pa.list_(pa.float32()))
        pq.write_table(pa.table({"id": pa.array(part, pa.int64()), "v": values, "w": pa.array(part * 2.0)}),
                       root / f"part-{f}.parquet", row_group_size=50)
    return root


def test_reads_the_rows_asked_in_order_from_their_row_groups_only(table):
    keyed = KeyedParquet(table)
    assert len(keyed) == 600
    rng = np.random.default_rng(1)
    for size in (1, 7, 40):
        wanted = rng.choice(np.arange(1000, 1600), size)
        wanted = np.concatenate([wanted, wanted[:2]])  # repeats too
        got, cost = keyed.read(wanted, ["v"])
        assert got.column_names == ["v"] and got.num_rows == len(wanted)
        values = np.stack(got.column("v").to_pylist())
        np.testing.assert_array_equal(values, wanted[:, None] + np.arange(4)[None, :])
        # which row group each key sits in, from the files themselves
        holders = set()
        for f, part in enumerate(sorted(table.glob("*.parquet"))):
            pf = pq.ParquetFile(part)
            for g in range(pf.metadata.num_row_groups):
                if np.isin(pf.read_row_group(g, columns=["id"]).column(0).to_numpy(), wanted).any():
                    holders.add((f, g))
        assert cost.row_groups == len(holders) < 12


def test_absent_and_duplicate_keys_are_named(table, tmp_path):
    keyed = KeyedParquet(table)
    with pytest.raises(ValueError, match=r"2 of the keys asked for are not in the table, e\.g\. 5, 9999"):
        keyed.read(np.array([1000, 5, 9999]), ["v"])
    pq.write_table(pa.table({"id": pa.array([1000], pa.int64()), "v": pa.array([[0.0]], pa.list_(pa.float32())),
                             "w": pa.array([0.0])}), table / "part-dup.parquet")
    with pytest.raises(ValueError, match="key 1000 is held by more than one row"):
        KeyedParquet(table)
