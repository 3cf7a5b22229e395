"""Filter-verify queries on a mask index equal numpy brute force exactly; Parquet fetches read few row groups."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scilens.core.digest import table_digest
from scilens.core.tensor import ARROW_TENSOR_TYPE, encode
from scilens.masks.index import build_index, mask_digest, read_index, write_index
from scilens.masks.query import InMemorySource, MaskIndex, ParquetMaskSource
from scilens.synth.masks import saliency_masks

N, SIZE, BINS = 2000, 64, 16
ROW_GROUP = 40


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    masks, _ = saliency_masks(N, SIZE, seed=5)
    rng = np.random.default_rng(5)
    # Non-contiguous ids in shuffled order: ties must be broken by id, not by row.
    ids = rng.permutation(N).astype(np.int64) * 3 + 11
    item = (ids - 11) // 6  # two masks (two "methods") per item
    built = build_index(masks, ids=ids, keys={"item": item, "method": (ids - 11) // 3 % 2})
    root = tmp_path_factory.mktemp("masks")
    order = np.argsort(ids)
    table = pa.table({"id": pa.array(ids[order], pa.int64()),
                      "mask": pa.array([encode(m) for m in masks[order]], ARROW_TENSOR_TYPE)})
    pq.write_table(table, root / "masks.parquet", row_group_size=ROW_GROUP)
    write_index(root / "index", built, source={"digest": table_digest(root / "masks.parquet")})
    # The same CHIs recorded against the in-memory masks.
    write_index(root / "mem_index", built, source={"digest": mask_digest(masks, ids)})
    v = built.normalisation.apply(masks[order])
    return {"masks": masks, "ids": ids, "root": root, "built": built, "v": v, "sorted_ids": ids[order],
            "item": item[order]}


def _brute_cp(v, boxes, t):
    if boxes.ndim == 1:
        y0, y1, x0, x1 = boxes
        return np.count_nonzero(v[:, y0:y1, x0:x1] > t, axis=(1, 2))
    return np.array([np.count_nonzero(v[i, b[0]:b[1], b[2]:b[3]] > t) for i, b in enumerate(boxes)])


def _random_box(rng):
    y0, x0 = rng.integers(0, SIZE - 1, 2)
    y1, x1 = rng.integers(y0 + 1, SIZE + 1), rng.integers(x0 + 1, SIZE + 1)
    return np.array([y0, y1, x0, x1])


def _random_roi(rng, ids):
    """One box (3 in 4 queries) or a per-mask mapping id -> box."""
    if rng.random() < 0.75:
        box = _random_box(rng)
        return tuple(int(c) for c in box), box
    boxes = np.array([_random_box(rng) for _ in range(len(ids))])
    return {int(i): tuple(int(c) for c in b) for i, b in zip(ids, boxes, strict=True)}, boxes


def _area(boxes):
    b = np.atleast_2d(boxes)
    return ((b[:, 1] - b[:, 0]) * (b[:, 3] - b[:, 2])).astype(np.float64)


def _score(v, boxes, t, by):
    """The brute-force measure ``by`` of every mask (float64, as the index computes it)."""
    cp = _brute_cp(v, boxes, t)
    if by == "fraction":
        return cp / _area(boxes)
    if by == "share":
        whole = np.count_nonzero(v > t, axis=(1, 2)).astype(np.float64)
        return np.divide(cp, whole, out=np.zeros(len(cp)), where=whole > 0)
    return cp.astype(np.float64)


def _holds(s, op, value):
    return {">": s > value, ">=": s >= value, "<": s < value, "<=": s <= value}[op]


@pytest.fixture(scope="module")
def index(data):
    return MaskIndex.open(data["root"] / "mem_index", InMemorySource(data["masks"], data["ids"]))


def test_index_files(data):
    built, meta = read_index(data["root"] / "index")
    assert np.array_equal(built.chi, data["built"].chi) and np.array_equal(built.ids, data["sorted_ids"])
    assert meta["bins"] == BINS and meta["cell"] == 16 and meta["normalise"] == "per-mask-max"
    assert meta["rows"] == N and meta["shape"] == [SIZE, SIZE] and meta["count_dtype"] == "uint16"
    assert 0 < meta["bytes"]["chi"] < (data["root"] / "masks.parquet").stat().st_size / 5


def test_filter_exact(data, index):
    rng = np.random.default_rng(101)
    decided = 0
    for _ in range(300):
        roi, boxes = _random_roi(rng, data["sorted_ids"])
        t = int(rng.integers(0, BINS + 1)) / BINS
        by = str(rng.choice(["count", "fraction", "share"]))
        op = str(rng.choice([">", ">=", "<", "<="]))
        score = _score(data["v"], boxes, t, by)
        # An attained value, so ties with the value are exercised.
        value = float(np.quantile(score, rng.uniform(0.0, 1.0), method="lower"))
        got = index.filter(roi, t, op, value, by=by)
        want = data["sorted_ids"][_holds(score, op, value)]
        assert np.array_equal(got["id"].to_numpy(), want), (roi if isinstance(roi, tuple) else "per-mask", t, op)
        decided += index.last_stats.decided_by_index
    assert decided > 0.5 * 300 * N


def test_topk_exact(data, index):
    rng = np.random.default_rng(102)
    decoded = 0
    for _ in range(300):
        roi, boxes = _random_roi(rng, data["sorted_ids"])
        t = int(rng.integers(0, BINS + 1)) / BINS
        by, order = str(rng.choice(["count", "fraction", "share"])), str(rng.choice(["desc", "asc"]))
        k = int(rng.choice([1, 5, 25, 100]))
        score = _score(data["v"], boxes, t, by)
        top = np.lexsort((data["sorted_ids"], -score if order == "desc" else score))[:k]
        got = index.topk(roi, t, k, by=by, order=order)
        assert np.array_equal(got["id"].to_numpy(), data["sorted_ids"][top])
        assert np.array_equal(got["score"].to_numpy(), score[top])
        decoded += index.last_stats.decoded
    assert decoded < 0.5 * 300 * N


def test_aggregate_exact(data, index):
    rng = np.random.default_rng(103)
    groups, member = np.unique(data["item"], return_inverse=True)
    for _ in range(300):
        roi, boxes = _random_roi(rng, data["sorted_ids"])
        t = int(rng.integers(0, BINS + 1)) / BINS
        cp = _brute_cp(data["v"], boxes, t).astype(np.float64)
        mean = np.bincount(member, weights=cp) / np.bincount(member)
        if rng.random() < 0.5:
            k, order = int(rng.choice([1, 10, 50])), str(rng.choice(["desc", "asc"]))
            top = np.lexsort((groups, -mean if order == "desc" else mean))[:k]
            got = index.aggregate(roi, t, group_by="item", k=k, order=order)
            assert np.array_equal(got["item"].to_numpy(), groups[top])
            assert np.array_equal(got["mean_cp"].to_numpy(), mean[top])
        else:
            op = str(rng.choice([">", ">=", "<", "<="]))
            value = float(np.quantile(mean, rng.uniform(0.0, 1.0), method="lower"))
            got = index.aggregate(roi, t, group_by="item", op=op, value=value)
            assert np.array_equal(got["item"].to_numpy(), groups[_holds(mean, op, value)])


def test_cp_exact(data, index):
    rng = np.random.default_rng(104)
    for _ in range(300):
        roi, boxes = _random_roi(rng, data["sorted_ids"])
        t = int(rng.integers(0, BINS + 1)) / BINS
        got = index.CP(roi, t)
        assert np.array_equal(got["id"].to_numpy(), data["sorted_ids"])
        assert np.array_equal(got["cp"].to_numpy(), _brute_cp(data["v"], boxes, t))


def test_per_mask_roi_subset(data, index):
    # A mapping's keys are the masks queried.
    some = data["sorted_ids"][::7]
    roi = {int(i): (10, 40, 3, 61) for i in some}
    got = index.topk(roi, 0.5, 10)
    score = _brute_cp(data["v"][::7], np.array([10, 40, 3, 61]), 0.5)
    top = np.lexsort((some, -score))[:10]
    assert np.array_equal(got["id"].to_numpy(), some[top]) and index.last_stats.masks == len(some)


def test_parquet_source_reads_only_needed_row_groups(data, index):
    path = data["root"] / "masks.parquet"
    source = ParquetMaskSource(path)
    meta = pq.ParquetFile(path).metadata
    sizes = [sum(meta.row_group(g).column(c).total_compressed_size for c in range(meta.num_columns)
                 if meta.row_group(g).column(c).path_in_schema.startswith("mask."))
             for g in range(meta.num_row_groups)]
    wanted = data["sorted_ids"][[3, 5, 1000, 1999]]  # row groups 0, 25, 49
    got, nbytes = source.fetch(wanted[::-1])
    order = np.argsort(data["ids"])
    assert np.array_equal(got, data["masks"][order][[1999, 1000, 5, 3]])
    assert nbytes == sizes[0] + sizes[1000 // ROW_GROUP] + sizes[1999 // ROW_GROUP]
    # A selective query over the Parquet source: same answer, a fraction of the table read.
    on_disk = MaskIndex.open(data["root"] / "index", source)
    got = on_disk.topk((8, 30, 8, 30), 0.75, 5, by="fraction")
    assert got.equals(index.topk((8, 30, 8, 30), 0.75, 5, by="fraction"))
    stats = on_disk.last_stats
    assert stats.decoded < N / 10 and 0 < stats.bytes_read < 0.8 * sum(sizes)


def test_bad_input_named(data, index, tmp_path):
    with pytest.raises(ValueError, match=r"box .* outside the 64 x 64 mask"):
        index.filter((0, 65, 0, 10), 0.5, ">", 3)
    with pytest.raises(ValueError, match=r"outside the 64 x 64 mask or empty"):
        index.topk((5, 5, 0, 10), 0.5, 3)
    for t in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="outside \\[0, 1\\]"):
            index.CP((0, 8, 0, 8), t)
    with pytest.raises(ValueError, match="unknown op"):
        index.filter((0, 8, 0, 8), 0.5, "==", 3)
    with pytest.raises(ValueError, match="not in the index"):
        index.CP({123456789: (0, 8, 0, 8)}, 0.5)
    with pytest.raises(ValueError, match="k must be an integer"):
        index.topk((0, 8, 0, 8), 0.5, 0)
    with pytest.raises(ValueError, match="not an indexed key column"):
        index.aggregate((0, 8, 0, 8), 0.5, group_by="image", k=3)
    # A changed table: one mask differs.
    changed = data["masks"].copy()
    changed[0, 0, 0] += 1.0
    with pytest.raises(ValueError, match="mask table changed since indexing"):
        MaskIndex.open(data["root"] / "mem_index", InMemorySource(changed, data["ids"]))
    table = pq.read_table(data["root"] / "masks.parquet")
    pq.write_table(table.slice(0, N - 1), tmp_path / "masks.parquet", row_group_size=ROW_GROUP)
    with pytest.raises(ValueError, match="mask table changed since indexing"):
        MaskIndex.open(data["root"] / "index", ParquetMaskSource(tmp_path / "masks.parquet"))
    # NaN and mixed shapes at build time.
    bad = data["masks"][:5].copy()
    bad[3, 10, 10] = np.nan
    with pytest.raises(ValueError, match="mask id 42 holds NaN"):
        build_index(bad, ids=[7, 8, 9, 42, 50])
    with pytest.raises(ValueError, match=r"different shapes in one index: 32x32 \(1 masks\), 64x64 \(2 masks\)"):
        build_index([np.zeros((64, 64)), np.zeros((32, 32)), np.zeros((64, 64))])
    assert mask_digest(data["masks"], data["ids"]) == InMemorySource(data["masks"], data["ids"]).digest


def _stored_as(dtype: str, masks: np.ndarray) -> np.ndarray:
    """Saliency-like masks as a table of ``dtype`` would hold them (integers span the type's range)."""
    if dtype == "uint8":
        return np.round(masks / masks.max() * 255).astype(np.uint8)
    if dtype == "int16":  # signed values, the most negative one included (its absolute value overflows int16)
        out = np.round((masks / masks.max() - 0.5) * 65535).clip(-32768, 32767).astype(np.int16)
        out[:, ::8, ::8] = -32768
        return out
    return masks.astype(dtype)


def _normalised(masks: np.ndarray, normalise: str) -> np.ndarray:
    """The issue's normalisation rules written out in float64, independently of the index's code."""
    m = masks.astype(np.float64)
    if normalise.startswith("fixed:"):
        lo, hi = (float(x) for x in normalise.removeprefix("fixed:").split(","))
        return np.clip((m - lo) / (hi - lo), 0.0, 1.0)
    if normalise == "abs-per-mask-max":
        m = np.abs(m)
    return m / m.max(axis=(1, 2), keepdims=True)


@pytest.mark.parametrize("dtype,normalise", [("float16", "per-mask-max"), ("float64", "per-mask-max"),
                                             ("uint8", "per-mask-max"), ("uint8", "fixed:0,255"),
                                             ("int16", "abs-per-mask-max")])
def test_every_stored_dtype_answers_exactly(data, tmp_path, dtype, normalise):
    masks = _stored_as(dtype, data["masks"][:300])
    ids = np.arange(300, dtype=np.int64) * 2 + 1
    built = build_index(masks, ids=ids, normalise=normalise)
    write_index(tmp_path / "index", built, source={"digest": mask_digest(masks, ids)})
    index = MaskIndex.open(tmp_path / "index", InMemorySource(masks, ids))
    v = _normalised(masks, normalise)
    rng = np.random.default_rng(105)
    for _ in range(60):
        box = _random_box(rng)
        t = int(rng.integers(0, BINS + 1)) / BINS
        cp = _brute_cp(v, box, t)
        assert np.array_equal(index.CP(tuple(int(c) for c in box), t)["cp"].to_numpy(), cp), (box, t)
        value = float(np.quantile(cp, rng.uniform(0.0, 1.0), method="lower"))
        got = index.filter(tuple(int(c) for c in box), t, ">=", value)
        assert np.array_equal(got["id"].to_numpy(), ids[cp >= value]), (box, t, value)
