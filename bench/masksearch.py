"""Benchmark of exact mask queries with a cumulative histogram index (issue 16; MaskSearch) on saliency-like masks.

    python -m bench.masksearch            # 5,000 images x 2 methods = 10,000 masks of 224 x 224 (masksearch.*)
    python -m bench.masksearch --quick    # 150 images (300 masks): checks the benchmark itself (masksearch-quick.*)

Data: synthetic saliency-like masks (:func:`scilens.synth.masks.saliency_masks`,
float32, 224 x 224), two "methods" per image (independent draws; mask ids
``2 i`` and ``2 i + 1`` of image ``i``), written as a mask table the way the
saliency job writes one: columns ``id``, ``image``, ``method``, ``mask`` (the
tensor codec), sorted by id in small row groups
(:func:`scilens.core.parquet.write_sorted` at its defaults).

Index: :func:`scilens.masks.index.build_index` at its defaults (bins 16, cell
16, per-mask-max), written with the table's :func:`parquet_digest`, queried
through :class:`~scilens.masks.query.MaskIndex` over the table
(:class:`~scilens.masks.query.ParquetMaskSource`, the masks an index cannot
decide read by id).

Queries: seeded filter (count or fraction, ``>`` or ``<``), top-k (k 1..50,
count or fraction, desc or asc) and aggregate (mean CP per image; top k or
``op value``) queries over random boxes off the CHI grid, of sides 8..220
pixels, thresholds drawn in [0.1, 0.9] (2 decimals; some fall on a bin edge).
Filter and aggregate-filter values are chosen so the selectivities span 0.1 %
to 50 % (a target drawn log-uniformly, the value an attained score of a random
2,000-mask sample at that quantile; the selectivity reported is the one
achieved). Peers, in the same run: numpy over all masks in memory
(``Normalisation.apply`` + ``exact_cp`` in chunks, then the same
filter/top-k/aggregate), which is also the reference every answer must equal
(same ids, same order, same scores; a mismatch raises), and, on a seeded
subset stratified by selectivity, a Spark full scan (read the table,
``mapInPandas`` decoding every mask and counting its CP, then the filter /
top-k / aggregate in Spark).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import WORK, markdown_table, write_results

SIZE = 224
SEED = 16
METHODS = ("grad", "smoothgrad")
SETTINGS: dict[str, dict[str, Any]] = {
    "full": {"images": 5_000, "queries": 100, "spark_queries": 10, "chunk_images": 250, "sample": 2_000,
             "draws": 12},
    "quick": {"images": 150, "queries": 12, "spark_queries": 2, "chunk_images": 75, "sample": 2_000, "draws": 6},
}
FORMS = ("filter", "topk", "aggregate")
BANDS = ((0.005, "<= 0.5 %"), (0.05, "0.5-5 %"), (0.5, "5-50 %"), (math.inf, "> 50 %"))
SEL_RANGE = (0.001, 0.5)
NUMPY_CHUNK = 256


def _log(message: str) -> None:
    print(f"[bench.masksearch {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return ""


def band_of(sel: float) -> str:
    return next(name for top, name in BANDS if sel <= top)


# --- data ----------------------------------------------------------------------------------------------------


def generate(images: int, chunk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All masks in id order (float32), with ids, image and method; generated chunk by chunk."""
    from scilens.synth.masks import saliency_masks

    masks = np.empty((2 * images, SIZE, SIZE), dtype=np.float32)
    for c, start in enumerate(range(0, images, chunk)):
        n = min(chunk, images - start)
        for m in range(len(METHODS)):
            # Each (chunk, method) is its own seeded draw, so a chunk never needs the others in memory.
            got, _ = saliency_masks(n, SIZE, seed=SEED * 10_000 + 2 * c + m)
            masks[2 * start + m : 2 * (start + n) : 2] = got
    ids = np.arange(2 * images, dtype=np.int64)
    return masks, ids, ids // 2, np.array(METHODS)[ids % 2]


def write_table(spark: Any, root: Path, masks: np.ndarray, ids: np.ndarray, image: np.ndarray,
                method: np.ndarray, chunk: int) -> Path:
    """The mask table (Spark, sorted by id in small row groups), from chunked Parquet staging files; cached."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from scilens.core.parquet import write_sorted
    from scilens.core.tensor import ARROW_TENSOR_TYPE, encode

    table, staging, marker = root / "masks", root / "staging", root / "masks.spec.json"
    spec = {"masks": len(ids), "seed": SEED, "size": SIZE, "methods": list(METHODS), "chunk": chunk}
    if marker.exists() and json.loads(marker.read_text()) == spec and table.exists():
        return table
    shutil.rmtree(table, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    step = 2 * chunk
    for s in range(0, len(ids), step):
        part = slice(s, s + step)
        pq.write_table(pa.table({
            "id": pa.array(ids[part], pa.int64()), "image": pa.array(image[part], pa.int64()),
            "method": pa.array(method[part].tolist(), pa.string()),
            "mask": pa.array([encode(m) for m in masks[part]], ARROW_TENSOR_TYPE)}),
            staging / f"part-{s // step:05d}.parquet")
    # One staging file per input partition: write_sorted keeps the partitions (no shuffle) and sorts within.
    write_sorted(spark.read.parquet(str(staging)), table, ["id"])
    shutil.rmtree(staging)
    marker.write_text(json.dumps(spec))
    return table


def table_info(table: Path) -> dict[str, Any]:
    """On-disk bytes, files, row groups and compressed bytes per column of the mask table (from the footers)."""
    import pyarrow.parquet as pq

    files = sorted(table.rglob("*.parquet"))
    columns: dict[str, int] = {}
    per_group = []
    for f in files:
        meta = pq.ParquetFile(f).metadata
        for g in range(meta.num_row_groups):
            rg = meta.row_group(g)
            per_group.append(rg.num_rows)
            for c in range(rg.num_columns):
                name = rg.column(c).path_in_schema.split(".")[0]
                columns[name] = columns.get(name, 0) + rg.column(c).total_compressed_size
    return {"files": len(files), "bytes": sum(f.stat().st_size for f in files), "row_groups": len(per_group),
            "masks per row group (median)": float(np.median(per_group)),
            "masks per row group (max)": int(max(per_group)), "column_bytes": columns}


def build(root: Path, table: Path, masks: np.ndarray, ids: np.ndarray, image: np.ndarray,
          method: np.ndarray) -> tuple[Path, dict[str, Any]]:
    """Build the index at the defaults and write it with the table's digest; time both."""
    from scilens.core.digest import parquet_digest
    from scilens.masks.index import build_index, write_index

    out = root / "index"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    built = build_index(masks, ids=ids, keys={"image": image, "method": method})
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    meta = write_index(out, built, source={"kind": "parquet", "table": str(table),
                                           "digest": parquet_digest([table])})
    write_s = time.perf_counter() - start
    size = sum(p.stat().st_size for p in out.iterdir())
    return out, {"build_s": build_s, "write_s": write_s, "bytes": size, "chi_bytes": meta["bytes"]["chi"],
                 "bins": meta["bins"], "cell": meta["cell"], "normalise": meta["normalise"],
                 "count_dtype": meta["count_dtype"]}


# --- numpy peer (and reference) ------------------------------------------------------------------------------


def numpy_cp(masks: np.ndarray, rule: Any, box: tuple[int, int, int, int], t: float) -> np.ndarray:
    """Exact CP of every mask with the index's quantiser: normalise the box's crop, count above ``t``."""
    from scilens.masks.chi import exact_cp

    y0, y1, x0, x1 = box
    crop_box = np.array([0, y1 - y0, 0, x1 - x0])
    out = np.empty(len(masks), dtype=np.int64)
    # Chunks keep the float64 crops to a few hundred MB whatever the box.
    for s in range(0, len(masks), NUMPY_CHUNK):
        out[s : s + NUMPY_CHUNK] = exact_cp(rule.apply(masks[s : s + NUMPY_CHUNK], box), crop_box, t)
    return out


def _holds(s: np.ndarray, op: str, value: float) -> np.ndarray:
    return {">": s > value, ">=": s >= value, "<": s < value, "<=": s <= value}[op]


def _area(box: tuple[int, int, int, int]) -> float:
    return float((box[1] - box[0]) * (box[3] - box[2]))


def answer(q: dict[str, Any], cp: np.ndarray, ids: np.ndarray, image: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray | None]:
    """The query's answer from exact CPs, scored as the index defines (float64)."""
    if q["form"] == "aggregate":
        groups, member = np.unique(image, return_inverse=True)
        size = np.bincount(member, minlength=len(groups)).astype(np.float64)
        mean = np.bincount(member, weights=cp.astype(np.float64), minlength=len(groups)) / size
        if q["k"] is not None:
            top = np.lexsort((groups, -mean if q["order"] == "desc" else mean))[: q["k"]]
            return groups[top], mean[top]
        return groups[_holds(mean, q["op"], q["value"])], None
    score = cp / (_area(q["box"]) if q["fraction"] else np.ones(len(cp)))
    if q["form"] == "filter":
        return ids[_holds(score, q["op"], q["value"])], None
    top = np.lexsort((ids, -score if q["order"] == "desc" else score))[: q["k"]]
    return ids[top], score[top]


def group_means(cp: np.ndarray, image: np.ndarray) -> np.ndarray:
    _, member = np.unique(image, return_inverse=True)
    return np.bincount(member, weights=cp.astype(np.float64)) / np.bincount(member).astype(np.float64)


# --- query drawing -------------------------------------------------------------------------------------------


def draw_box(rng: np.random.Generator, cell: int, min_side: int = 8) -> tuple[int, int, int, int]:
    """A box of sides ``min_side``..220 (log-uniform), every side moved off the CHI grid lines."""
    out = []
    for _ in range(2):
        side = round(math.exp(rng.uniform(math.log(min_side), math.log(220))))
        lo = int(rng.integers(0, SIZE - side + 1))
        if lo % cell == 0:
            lo = lo + 1 if lo + side < SIZE else lo - 1
        hi = lo + side
        if hi % cell == 0:
            hi -= 1
        out += [lo, hi]
    return out[0], out[1], out[2], out[3]


def pick_value(score: np.ndarray, op: str, target: float) -> tuple[float, float]:
    """An attained score whose selectivity under ``op`` is nearest ``target`` (log scale); and that selectivity."""
    srt = np.sort(score)
    values = np.unique(srt)
    count = len(srt) - np.searchsorted(srt, values, "right") if op == ">" else np.searchsorted(srt, values, "left")
    ok = count > 0
    if not ok.any():
        return float(values[0]), 0.0
    sel = count[ok] / len(srt)
    j = int(np.argmin(np.abs(np.log(sel) - math.log(target))))
    return float(values[ok][j]), float(sel[j])


def draw_valued(rng: np.random.Generator, form: str, sample: np.ndarray, sample_image: np.ndarray, rule: Any,
                draws: int, cell: int) -> dict[str, Any]:
    """A filter or aggregate-filter query whose selectivity on a sample is near a log-uniform target."""
    target = math.exp(rng.uniform(math.log(SEL_RANGE[0]), math.log(SEL_RANGE[1])))
    op = str(rng.choice([">", "<"]))
    fraction = bool(rng.random() < 0.5) if form == "filter" else False
    best: dict[str, Any] | None = None
    for _ in range(draws):
        # Few masks have little saliency in a small box at a high threshold (most have none): a `<` query
        # of low selectivity needs a large box or a low threshold, so `<` draws start from those.
        low = op == "<"
        box = draw_box(rng, cell, 48 if low else 8)
        t = round(float(rng.uniform(0.1, 0.6 if low else 0.9)), 2)
        cp = numpy_cp(sample, rule, box, t)
        if form == "filter":
            score = cp / (_area(box) if fraction else 1.0)
        else:
            # Both masks of each sampled image are in the sample (it is drawn by image).
            score = group_means(cp, sample_image)
        value, sel = pick_value(score, op, target)
        miss = abs(math.log(max(sel, 1e-9) / target))
        if best is None or miss < best["miss"]:
            best = {"box": box, "t": t, "op": op, "value": value, "fraction": fraction, "miss": miss}
        if miss <= math.log(1.5):
            break
    assert best is not None
    best.pop("miss")
    return {**best, "target": target}


def draw_queries(masks: np.ndarray, ids: np.ndarray, image: np.ndarray, rule: Any, s: dict[str, Any],
                 cell: int) -> list[dict[str, Any]]:
    """``s['queries']`` seeded queries of each form."""
    rng = np.random.default_rng(SEED)
    images = np.unique(image)
    chosen = rng.choice(images, min(len(images), s["sample"] // 2), replace=False)
    where = np.flatnonzero(np.isin(image, chosen))
    sample, sample_image = masks[where], image[where]
    specs = []
    for form in FORMS:
        for i in range(s["queries"]):
            q: dict[str, Any] = {"form": form, "n": i, "k": None, "order": None, "op": None, "value": None,
                                 "fraction": False, "target": None}
            if form == "topk" or (form == "aggregate" and i % 2 == 0):
                q.update(box=draw_box(rng, cell), t=round(float(rng.uniform(0.1, 0.9)), 2),
                         k=int(rng.integers(1, 51)), order=str(rng.choice(["desc", "asc"])))
                if form == "topk":
                    q["fraction"] = bool(rng.random() < 0.5)
            else:
                q.update(draw_valued(rng, form, sample, sample_image, rule, s["draws"], cell))
            specs.append(q)
    return specs


# --- index, numpy and Spark answers --------------------------------------------------------------------------


def ask_index(index: Any, q: dict[str, Any]) -> tuple[tuple[np.ndarray, np.ndarray | None], float]:
    start = time.perf_counter()
    if q["form"] == "filter":
        df = index.filter(q["box"], q["t"], q["op"], q["value"], by="fraction" if q["fraction"] else "count")
        got = (df["id"].to_numpy(np.int64), None)
    elif q["form"] == "topk":
        df = index.topk(q["box"], q["t"], q["k"], by="fraction" if q["fraction"] else "count", order=q["order"])
        got = (df["id"].to_numpy(np.int64), df["score"].to_numpy(np.float64))
    elif q["k"] is not None:
        df = index.aggregate(q["box"], q["t"], group_by="image", k=q["k"], order=q["order"])
        got = (df["image"].to_numpy(np.int64), df["mean_cp"].to_numpy(np.float64))
    else:
        df = index.aggregate(q["box"], q["t"], group_by="image", op=q["op"], value=q["value"])
        got = (df["image"].to_numpy(np.int64), None)
    return got, time.perf_counter() - start


def _check(what: str, q: dict[str, Any], got: tuple[np.ndarray, np.ndarray | None],
           want: tuple[np.ndarray, np.ndarray | None]) -> None:
    same = np.array_equal(got[0], want[0]) and (
        want[1] is None or (got[1] is not None and np.array_equal(got[1], want[1])))
    if not same:
        shown = {k: v for k, v in q.items() if k not in ("want",)}
        raise AssertionError(f"{what} differs from numpy over all masks on {shown}: got {got[0][:10].tolist()} "
                             f"({len(got[0])}) scores {None if got[1] is None else got[1][:10].tolist()}, expected "
                             f"{want[0][:10].tolist()} ({len(want[0])}) scores "
                             f"{None if want[1] is None else want[1][:10].tolist()}")


def spark_scan(spark: Any, table: Path, q: dict[str, Any], rule: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """The query as a Spark full scan: every mask decoded and counted in ``mapInPandas``, then Spark SQL."""
    import pandas as pd
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from scilens.core.tensor import decode_column
    from scilens.masks.chi import exact_cp

    box, t = tuple(q["box"]), float(q["t"])
    y0, y1, x0, x1 = box
    crop_box = np.array([0, y1 - y0, 0, x1 - x0])
    keys = ["id", "image"] if q["form"] == "aggregate" else ["id"]

    def count(batches: Any) -> Any:
        for pdf in batches:
            cp = exact_cp(rule.apply(np.stack(decode_column(pdf["mask"])), box), crop_box, t)
            yield pd.DataFrame({**{k: pdf[k].to_numpy() for k in keys}, "cp": cp})

    schema = T.StructType([T.StructField(k, T.LongType()) for k in keys] + [T.StructField("cp", T.LongType())])
    cps = spark.read.parquet(str(table)).select(*keys, "mask").mapInPandas(count, schema)
    if q["form"] == "aggregate":
        means = cps.groupBy("image").agg((F.sum(F.col("cp").cast("double")) / F.count("cp")).alias("score"))
        if q["k"] is not None:
            rows = means.orderBy(F.desc("score") if q["order"] == "desc" else F.asc("score"), F.asc("image")
                                 ).limit(q["k"]).collect()
            return np.array([r["image"] for r in rows], np.int64), np.array([r["score"] for r in rows])
        rows = means.where(_spark_holds(F.col("score"), q["op"], q["value"])).orderBy("image").collect()
        return np.array([r["image"] for r in rows], np.int64), None
    score = F.col("cp").cast("double") / F.lit(_area(box) if q["fraction"] else 1.0)
    scored = cps.select("id", score.alias("score"))
    if q["form"] == "filter":
        rows = scored.where(_spark_holds(F.col("score"), q["op"], q["value"])).orderBy("id").collect()
        return np.array([r["id"] for r in rows], np.int64), None
    rows = scored.orderBy(F.desc("score") if q["order"] == "desc" else F.asc("score"), F.asc("id")
                          ).limit(q["k"]).collect()
    return np.array([r["id"] for r in rows], np.int64), np.array([r["score"] for r in rows])


def _spark_holds(col: Any, op: str, value: float) -> Any:
    return {">": col > value, ">=": col >= value, "<": col < value, "<=": col <= value}[op]


def spark_subset(specs: list[dict[str, Any]], n: int) -> set[tuple[str, int]]:
    """``n`` queries per form for the Spark scan, seeded, taken in turn from each selectivity band."""
    rng = np.random.default_rng(SEED + 1)
    chosen: set[tuple[str, int]] = set()
    for form in FORMS:
        by_band: dict[str, list[int]] = {}
        for q in specs:
            if q["form"] == form:
                by_band.setdefault(q["band"], []).append(q["n"])
        pools = [list(rng.permutation(v)) for _, v in sorted(by_band.items())]
        picked: list[int] = []
        while len(picked) < n and any(pools):
            for pool in pools:
                if pool and len(picked) < n:
                    picked.append(int(pool.pop()))
        chosen |= {(form, i) for i in picked}
    return chosen


def run_queries(spark: Any, table: Path, index_dir: Path, masks: np.ndarray, ids: np.ndarray, image: np.ndarray,
                specs: list[dict[str, Any]], s: dict[str, Any], scan_bytes: dict[str, int]
                ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every query by numpy (the reference), the index over the table and, for a subset, a Spark full scan."""
    from scilens.masks.query import MaskIndex, ParquetMaskSource

    start = time.perf_counter()
    source = ParquetMaskSource(table)
    source_s = time.perf_counter() - start
    start = time.perf_counter()
    index = MaskIndex.open(index_dir, source)
    open_s = time.perf_counter() - start
    rule = index.index.normalisation
    n_groups = len(np.unique(image))
    rows = []
    for q in specs:
        start = time.perf_counter()
        cp = numpy_cp(masks, rule, tuple(q["box"]), q["t"])
        want = answer(q, cp, ids, image)
        numpy_s = time.perf_counter() - start
        got, index_s = ask_index(index, q)
        _check("the index over the table", q, got, want)
        st = index.last_stats
        size = n_groups if q["form"] == "aggregate" else len(ids)
        q["want"] = want
        q["selectivity"] = len(want[0]) / size
        q["band"] = band_of(q["selectivity"])
        rows.append({"form": q["form"], "n": q["n"], "kind": _kind(q), "box": list(q["box"]), "t": q["t"],
                     "t_on_edge": float(q["t"] * 16).is_integer(), "op": q["op"], "value": q["value"], "k": q["k"],
                     "order": q["order"], "fraction": q["fraction"], "target_selectivity": q["target"],
                     "result": len(want[0]), "selectivity": q["selectivity"], "band": q["band"],
                     "index_s": index_s, "stats_s": st.seconds, "masks": st.masks, "decoded": st.decoded,
                     "decided_by_index": st.decided_by_index, "decoded_frac": st.decoded / st.masks,
                     "bytes_read": st.bytes_read, "scan_bytes": scan_bytes[q["form"]],
                     "bytes_frac": st.bytes_read / scan_bytes[q["form"]], "numpy_s": numpy_s})
        if len(rows) % 25 == 0:
            _log(f"{len(rows)}/{len(specs)} queries answered by the index and numpy (equal)")
    chosen = spark_subset(specs, s["spark_queries"])
    by_key = {(r["form"], r["n"]): r for r in rows}
    first = True
    for q in specs:
        if (q["form"], q["n"]) not in chosen:
            continue
        if first:
            spark_scan(spark, table, q, rule)  # untimed warm-up: JVM, Python workers, the table in the page cache
            first = False
        start = time.perf_counter()
        got = spark_scan(spark, table, q, rule)
        by_key[(q["form"], q["n"])]["spark_s"] = time.perf_counter() - start
        _check("the Spark full scan", q, got, q["want"])
    _log(f"{len(chosen)} Spark full scans checked against numpy")
    opened = {"mask source (id column read, digest) s": source_s, "index open (chi.parquet read) s": open_s}
    return rows, opened


def _kind(q: dict[str, Any]) -> str:
    if q["form"] == "topk":
        return f"k={q['k']} {'fraction' if q['fraction'] else 'count'} {q['order']}"
    if q["form"] == "aggregate" and q["k"] is not None:
        return f"mean, k={q['k']} {q['order']}"
    what = "fraction" if q["fraction"] else ("mean" if q["form"] == "aggregate" else "count")
    return f"{what} {q['op']} {q['value']:.4g}"


# --- summaries -----------------------------------------------------------------------------------------------


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def _fewer(frac: float | None) -> str:
    if frac is None:
        return ""
    return "all decided by the CHI" if frac == 0 else f"{1 / frac:.1f}x"


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Medians per form and selectivity band (and over the form's queries)."""
    out = []
    for form in FORMS:
        for band in (*(name for _, name in BANDS), "all"):
            part = [r for r in rows if r["form"] == form and (band == "all" or r["band"] == band)]
            if not part:
                continue
            sp = [r for r in part if "spark_s" in r]
            bytes_frac = _median([r["bytes_frac"] for r in part])
            out.append({
                "form": form, "selectivity": band, "queries": len(part),
                "median selectivity %": 100 * np.median([r["selectivity"] for r in part]),
                "median decoded %": 100 * np.median([r["decoded_frac"] for r in part]),
                "max decoded %": 100 * max(r["decoded_frac"] for r in part),
                "median bytes read / scan %": None if bytes_frac is None else 100 * bytes_frac,
                "fewer bytes than scan": _fewer(bytes_frac),
                "index s": _median([r["index_s"] for r in part]),
                "numpy s": _median([r["numpy_s"] for r in part]),
                "numpy / index": _median([r["numpy_s"] / r["index_s"] for r in part]),
                "Spark queries": len(sp),
                "Spark s": _median([r["spark_s"] for r in sp]),
                "index s (same)": _median([r["index_s"] for r in sp]),
                "Spark / index": _median([r["spark_s"] / r["index_s"] for r in sp]),
            })
    return out


def targets(index_info: dict[str, Any], table: dict[str, Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, reached or not, with the numbers."""
    ratio = index_info["bytes"] / table["bytes"]
    out = [{"target": "index <= 10 % of the mask table's on-disk bytes (defaults: bins 16, cell 16)",
            "queries": "", "value": f"{100 * ratio:.2f} % ({index_info['bytes']:,} / {table['bytes']:,} bytes)",
            "reached": "yes" if ratio <= 0.10 else "NO"}]
    sel = [r for r in rows if r["form"] == "filter" and r["selectivity"] <= 0.05]
    if not sel:
        return out
    dec = float(np.median([r["decoded_frac"] for r in sel]))
    out.append({"target": "filter, selectivity <= 5 %: median masks decoded <= 15 %", "queries": len(sel),
                "value": f"{100 * dec:.2f} %", "reached": "yes" if dec <= 0.15 else "NO"})
    frac = float(np.median([r["bytes_frac"] for r in sel]))
    out.append({"target": "filter, selectivity <= 5 %: >= 10x fewer bytes read than the full scan (median)",
                "queries": len(sel), "value": f"{_fewer(frac)} (median {100 * frac:.2f} % of the scan's bytes)",
                "reached": "yes" if frac <= 0.10 else "NO"})
    sp = [r for r in sel if "spark_s" in r]
    if sp:
        per_query = float(np.median([r["spark_s"] / r["index_s"] for r in sp]))
        out.append({"target": "filter, selectivity <= 5 %: median query >= 5x faster than the Spark full scan",
                    "queries": len(sp), "value": f"{per_query:.1f}x (median of per-query Spark / index, same queries)",
                    "reached": "yes" if per_query >= 5 else "NO"})
    all_spark = [r["spark_s"] for r in rows if r["form"] == "filter" and "spark_s" in r]
    if all_spark:
        of_medians = float(np.median(all_spark)) / float(np.median([r["index_s"] for r in sel]))
        out.append({"target": "(same, over every filter query with selectivity <= 5 %: median Spark scan / "
                              "median index)", "queries": f"{len(sel)} index, {len(all_spark)} Spark",
                    "value": f"{of_medians:.1f}x", "reached": "yes" if of_medians >= 5 else "NO"})
    return out


def where_time(rows: list[dict[str, Any]], table: dict[str, Any]) -> str:
    """What an index query's time is made of: a least-squares fit of seconds against masks decoded."""
    x = np.array([r["decoded"] for r in rows], dtype=np.float64)
    y = np.array([r["index_s"] for r in rows])
    a, b = np.linalg.lstsq(np.stack([np.ones_like(x), x], axis=1), y, rcond=None)[0]
    none = [r["index_s"] for r in rows if r["decoded"] == 0]
    dec = [r for r in rows if r["decoded"] > 0]
    per_mask = _median([r["index_s"] / r["decoded"] for r in dec if r["decoded"] >= 20])
    few = [r["index_s"] for r in rows if r["decoded"] <= 0.001 * r["masks"]]
    by_form = "; ".join(
        f"{form} {1e3 * float(np.median(v)):.2f} ms" for form in FORMS
        if (v := [r["index_s"] / r["decoded"] for r in dec if r["form"] == form and r["decoded"] >= 20]))
    lines = [
        f"* Fit over all {len(rows)} queries: index seconds = {1e3 * a:.1f} ms + {1e3 * b:.2f} ms x masks decoded.",
        (f"* {len(none)} queries decoded no mask (the CHI bounds decided every one): median "
         f"{1e3 * (_median(none) or 0):.1f} ms." if none else "* Every query decoded at least one mask.")
        + (f" {len(few)} decoded <= 0.1 % of the masks: median {1e3 * (_median(few) or 0):.1f} ms (bounds of "
           f"{rows[0]['masks']:,} masks, a few numpy passes over the CHIs, and those few fetches)." if few else ""),
        f"* Median ms per decoded mask (queries decoding >= 20) by form: {by_form}. A filter (and an aggregate "
        f"filter) verifies all its undecided masks in one fetch (`MaskIndex._filter` -> `exact(todo)`), i.e. "
        f"hundreds of MB of masks decoded, stacked and normalised at once; top-k verifies in batches of "
        f"max(k, 64), at a lower cost per mask.",
        f"* Queries decoding >= 20 masks: median {1e3 * (per_mask or 0):.2f} ms per decoded mask (one Parquet row "
        f"group read and decoded per mask or two: the table's row groups hold a median "
        f"{table['masks per row group (median)']:.0f} masks, max {table['masks per row group (max)']}; then the "
        f"float64 normalisation of the box's crop).",
        "* The numpy peer normalises every mask's crop (its scale is the whole mask's maximum, one pass over all "
        "masks) and counts: its time is flat in the selectivity; the Spark scan reads and decodes every mask "
        "from Parquet, so its time is flat too.",
    ]
    return "\n".join(lines) + "\n"


def observations(summary: list[dict[str, Any]]) -> str:
    """What the table says about the peers, band by band (numbers from the summary)."""
    def ratio(form: str, band: str, key: str) -> float | None:
        return next((r[key] for r in summary if r["form"] == form and r["selectivity"] == band), None)

    lose = [f"{r['form']} {r['selectivity']} ({r['numpy / index']:.2f})" for r in summary
            if r["selectivity"] != "all" and r["numpy / index"] is not None and r["numpy / index"] < 1]
    win = [f"{r['form']} {r['selectivity']} ({r['numpy / index']:.1f}x)" for r in summary
           if r["selectivity"] != "all" and r["numpy / index"] is not None and r["numpy / index"] >= 1]
    spark = [f"{r['form']} {r['selectivity']} {r['Spark / index']:.1f}x" for r in summary
             if r["selectivity"] != "all" and r["Spark / index"] is not None]
    lines = [
        "* Against the Spark full scan (every mask read from Parquet and decoded), median per-query speed-up by "
        "form and band: " + "; ".join(spark) + ". The scan's time is flat (it decodes all masks whatever the "
        "query); the index's grows with the masks it decodes, so its lead shrinks as selectivity grows.",
        "* Against numpy over all masks already in memory, median numpy / index (above 1: the index is faster): "
        + ("; ".join(win) or "none") + ". numpy is faster in: " + ("; ".join(lose) or "none") + ". That peer "
        "holds every mask in RAM (M x 224 x 224 float32) and reads nothing; its normalise-and-count pass is "
        "flat in the selectivity, while the index pays for each mask it cannot decide with a Parquet read and "
        "decode (see below). The index wins against it where its bounds decide nearly every mask (top-k, "
        "selective aggregates and the most selective filters).",
    ]
    med = ratio("filter", "0.5-5 %", "median decoded %")
    if med is not None:
        lines.append(f"* Filters with selectivity 0.5-5 % decode a median {med:.1f} % of the masks: with a box off "
                     f"the grid and a threshold between bin edges the bounds of a mask near the value overlap "
                     f"it; those masks are decoded and counted exactly.")
    return "\n".join(lines) + "\n"


# --- main ----------------------------------------------------------------------------------------------------


def _scan_bytes(info: dict[str, Any]) -> dict[str, int]:
    cols = info["column_bytes"]
    return {"filter": cols["id"] + cols["mask"], "topk": cols["id"] + cols["mask"],
            "aggregate": cols["id"] + cols["image"] + cols["mask"]}


def _setup(mode: str, s: dict[str, Any], n_masks: int, table: dict[str, Any], index_info: dict[str, Any],
           opened: dict[str, Any], load: dict[str, Any], note: str) -> str:
    scan = _scan_bytes(table)
    loaded = max(load["before"][0], load["after"][0]) > 1.5 * (os.cpu_count() or 1)
    text = (f"**Note.** {note}\n\n" if note else "") + (
        f"Mode: {mode}. `uptime` before: `{load['uptime_before']}`; after: `{load['uptime_after']}` "
        f"({os.cpu_count()} cores{'; the machine was LOADED by other work: absolute times are inflated' if loaded else ''}). "  # noqa: E501
        f"This invocation took {load['seconds']:.0f} s. Spark local[2].\n\n"
        f"**Data (synthetic).** {n_masks:,} masks of {SIZE} x {SIZE} float32: {n_masks // 2:,} images x 2 methods "
        f"({', '.join(METHODS)}: names only, each an independent draw), ids 2 i and 2 i + 1 for image i, from "
        f"`scilens.synth.masks.saliency_masks(n, 224, seed=...)` at its defaults (1..3 Gaussian blobs per mask, "
        f"heights 0.3..1, widths 7..28 px, uniform noise below 0.05), seeded {SEED * 10_000}+ per chunk of "
        f"{s['chunk_images']} images and method. The mask table (columns id, image, method, mask as the tensor "
        f"codec's struct) is written by Spark with `core.parquet.write_sorted(df, path, ['id'])` at its defaults "
        f"(256 KiB row groups, Spark's default snappy compression): {table['files']} files, {table['row_groups']:,} "
        f"row groups (median {table['masks per row group (median)']:.0f} masks each), {table['bytes']:,} bytes on "
        f"disk; compressed bytes per column {table['column_bytes']}. Full-scan bytes per query (the columns "
        f"a scan reads, from the footers): filter and top-k {scan['filter']:,} (id, mask), aggregate "
        f"{scan['aggregate']:,} (id, image, mask).\n\n"
        f"**Index.** `build_index` at the defaults (bins {index_info['bins']}, cell {index_info['cell']}, "
        f"{index_info['normalise']}; counts {index_info['count_dtype']}), keys image and method; built in "
        f"{index_info['build_s']:.1f} s in one process, written (zstd) in {index_info['write_s']:.1f} s: "
        f"{index_info['bytes']:,} bytes (chi.parquet {index_info['chi_bytes']:,} + index.json), "
        f"{100 * index_info['bytes'] / table['bytes']:.2f} % of the table. Opening it against the table costs, "
        f"once, not in the per-query times: `ParquetMaskSource` (digest from the footers, the id column read "
        f"whole: {table['column_bytes']['id']:,} bytes) "
        f"{opened['mask source (id column read, digest) s']:.2f} s; `MaskIndex.open` (chi.parquet read whole, "
        f"the CHIs then held in memory) {opened['index open (chi.parquet read) s']:.2f} s.\n\n"
        f"**Queries.** {s['queries']} seeded (seed {SEED}) of each form over one box per query, every side off "
        f"the CHI grid (sides 8..220 px, log-uniform), thresholds in [0.1, 0.9] with 2 decimals: filter (count or "
        f"fraction, `>` or `<`), top-k (k 1..50, count or fraction, desc or asc), aggregate (`group_by='image'`, "
        f"mean; even-numbered queries top-k (k 1..50, desc or asc), odd ones `>` or `<` a value). Filter and "
        f"aggregate-filter values: a target selectivity log-uniform in 0.1..50 %, the value the attained score "
        f"of a {s['sample']:,}-mask sample (by image) nearest that selectivity, box and threshold redrawn up to "
        f"{s['draws']} times until within 1.5x of it (for `<`, sides 48..220 and thresholds 0.1..0.6: few masks "
        f"have little saliency in a small box at a high threshold, most have none); bands use the selectivity "
        f"achieved on all masks (result "
        f"size / masks; for aggregate, groups / images; top-k, k / masks or k / images). Index: `MaskIndex` over "
        f"`ParquetMaskSource(table)` (what a query job does), wall time of the call; masks decoded and bytes "
        f"read from `last_stats` (bytes = compressed size of the mask column chunks of the row groups read). "
        f"numpy: all masks in memory (float32), `Normalisation.apply(chunk, box)` + `exact_cp` over chunks of "
        f"{NUMPY_CHUNK} masks, then the same filter / top-k / aggregate; it is the reference every index and "
        f"Spark answer must equal (same ids, same order, bit-equal scores) before its time counts. Spark full "
        f"scan: `spark.read.parquet(table)`, `mapInPandas` decoding every mask (tensor codec) and counting its "
        f"CP with the same quantiser, then filter / orderBy+limit / groupBy in Spark, collected; on "
        f"{s['spark_queries']} seeded queries per form taken in turn from each selectivity band, after one "
        f"untimed warm-up scan; its bytes are the full-scan bytes above.\n")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 masks, 12 queries per form: check the benchmark")
    parser.add_argument("--masks", type=int, default=None,
                        help="masks (even: two methods per image); default 10,000 (5,000 images), quick 300")
    parser.add_argument("--queries", type=int, default=None, help="queries per form (default 100, quick 12)")
    parser.add_argument("--spark-queries", type=int, default=None, help="Spark scans per form (default 10, quick 2)")
    parser.add_argument("--note", default="", help="a sentence for the report")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    s = dict(SETTINGS[mode])
    if args.masks is not None:
        s["images"] = max(1, args.masks // 2)
    if args.queries is not None:
        s["queries"] = args.queries
    if args.spark_queries is not None:
        s["spark_queries"] = args.spark_queries
    name = "masksearch-quick" if args.quick else "masksearch"
    root = WORK / name
    root.mkdir(parents=True, exist_ok=True)
    load = {"before": os.getloadavg(), "uptime_before": _uptime()}
    started = time.perf_counter()

    from scilens.core.session import get_spark

    spark = get_spark("local", app_name="bench-masksearch", master="local[2]",
                      conf={"spark.ui.enabled": "false", "spark.driver.memory": "4g",
                            "spark.sql.shuffle.partitions": "8"})
    _log(f"generating {2 * s['images']:,} masks of {SIZE} x {SIZE}")
    masks, ids, image, method = generate(s["images"], s["chunk_images"])
    table = write_table(spark, root, masks, ids, image, method, s["chunk_images"])
    info = table_info(table)
    _log(f"mask table: {info['bytes']:,} bytes, {info['row_groups']} row groups; building the index")
    index_dir, index_info = build(root, table, masks, ids, image, method)
    _log(f"index: {index_info['bytes']:,} bytes ({100 * index_info['bytes'] / info['bytes']:.2f} % of the table); "
         f"drawing queries")
    from scilens.masks.chi import Normalisation

    specs = draw_queries(masks, ids, image, Normalisation.parse(index_info["normalise"]), s, index_info["cell"])
    _log(f"{len(specs)} queries drawn; answering")
    rows, opened = run_queries(spark, table, index_dir, masks, ids, image, specs, s, _scan_bytes(info))
    load.update(after=os.getloadavg(), uptime_after=_uptime(), seconds=time.perf_counter() - started)
    summary = summarise(rows)
    goals = targets(index_info, info, rows)
    sections = [
        ("Setup", _setup(mode, s, len(ids), info, index_info, opened, load, args.note)),
        ("Targets of issue 16 (item 4), reached or not", markdown_table(goals)),
        ("Index bytes against the mask table",
         markdown_table([{"what": "mask table on disk (all columns)", "bytes": info["bytes"], "% of table": 100.0},
                         {"what": "mask column (compressed)", "bytes": info["column_bytes"]["mask"],
                          "% of table": 100 * info["column_bytes"]["mask"] / info["bytes"]},
                         {"what": "raw float32 masks (M x 224 x 224 x 4)", "bytes": int(masks.nbytes),
                          "% of table": 100 * masks.nbytes / info["bytes"]},
                         {"what": "index (chi.parquet + index.json)", "bytes": index_info["bytes"],
                          "% of table": 100 * index_info["bytes"] / info["bytes"]}])),
        ("Queries: medians per form and selectivity band",
         "`decoded %`: masks fetched and counted exactly / masks queried; `bytes read / scan`: the index's "
         "bytes read / the full scan's (same columns' footers); `numpy / index`, `Spark / index`: medians of "
         "per-query ratios (Spark on its subset only, `index s (same)` the index's median on those queries).\n\n"
         + markdown_table(summary)),
        ("Where the index's time goes", where_time(rows, info)),
        ("Observations", observations(summary)),
    ]
    path = write_results(name, "Exact mask queries with a CHI index (issue 16, MaskSearch on Spark)", sections,
                         {"mode": mode, "note": args.note, "settings": s, "masks": len(ids), "table": info,
                          "index": index_info, "open_s": opened, "load": load, "summary": summary, "targets": goals,
                          "queries": rows})
    _log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
