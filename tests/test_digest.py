"""The input digests indexes record: stable for the same files, different for changed ones, cheap to compute."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scilens.core.digest import file_digest, parquet_digest


def _table(values: np.ndarray) -> pa.Table:
    return pa.table({"id": np.arange(len(values), dtype=np.int64), "x": values.astype(np.float32)})


def test_parquet_digest_follows_content_not_location(tmp_path):
    values = np.random.default_rng(0).normal(size=1000)
    (tmp_path / "a" / "t").mkdir(parents=True)
    pq.write_table(_table(values), tmp_path / "a" / "t" / "part-0.parquet", row_group_size=100)
    first = parquet_digest([tmp_path / "a" / "t"], root=tmp_path / "a")
    assert first.startswith("parquet:sha256:") and first == parquet_digest([tmp_path / "a" / "t"], root=tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # moved with its root: the same digest
    assert parquet_digest([tmp_path / "b" / "t"], root=tmp_path / "b") == first
    # One value changed in place, same file size: the footer's statistics differ.
    changed = values.copy()
    changed[500] = 99.0
    pq.write_table(_table(changed), tmp_path / "b" / "t" / "part-0.parquet", row_group_size=100)
    assert parquet_digest([tmp_path / "b" / "t"], root=tmp_path / "b") != first
    assert parquet_digest([tmp_path / "a" / "t"], root=tmp_path / "a", extra=b"layers") != first


def test_digest_refuses_what_is_not_parquet(tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"not a parquet file at all")
    with pytest.raises(ValueError, match=r"bad\.parquet"):
        parquet_digest([tmp_path / "bad.parquet"])
    with pytest.raises(ValueError, match="no such file"):
        parquet_digest([tmp_path / "absent"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no Parquet files"):
        parquet_digest([tmp_path / "empty"])


def test_file_digest_changes_with_a_byte(tmp_path):
    (tmp_path / "m.keras").write_bytes(b"model-bytes")
    first = file_digest(tmp_path / "m.keras")
    (tmp_path / "m.keras").write_bytes(b"model-bytez")
    assert first != file_digest(tmp_path / "m.keras") and first.startswith("sha256:")
