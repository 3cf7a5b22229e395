"""Benchmark of the dMRI pipeline: the reference, scilens on local[1]/local[2], Dask and pickled RDDs.

    python -m bench.neuro            # full run (about half an hour on 2 cores); writes bench/results/neuro.*
    python -m bench.neuro --only big # the memory case alone; writes bench/results/neuro-memory.*
    python -m bench.neuro --quick    # small data, for checking the benchmark itself

Datasets: (a) dipy's real ``small_101D``; (b) a 96x96x60 phantom with 65
volumes; (c) four such phantoms in one run; (d) memory: one phantom whose 4-D
array is about 2 GB (128x128x170, 193 volumes, float32), with Spark's JVM heap
and Python workers capped well below that.

Every implementation runs in its own process (one SparkContext per process),
with its peak memory measured as the summed proportional set size (PSS) of
its process tree and its CPU time as the sum over that tree. Each writes its
FA maps, which are checked against the one-thread reference before its time
counts. Per-step times come from each
implementation's own barriers (scilens: its manifest's steps).

Implementations:

``reference``
    ``bench/reference/neuro_ref.py``, subjects one after another, dipy's own
    threading in non-local means (every core): the baseline.
``reference-1thread``
    The same with one thread: deterministic, so its FA is the truth the others
    are checked against (dipy 1.12's blockwise non-local means varies from run
    to run with several threads).
``scilens-local1``, ``scilens-local2``
    ``scilens neuro`` through its CLI on ``local[1]`` / ``local[2]``.
``dask``
    The dissertation's Dask code (``neuroscience/dask/dask.py``): ``delayed``
    tasks, the subject loaded whole into one worker, the b0 mean and the fit
    over 10x10x10 voxel partitions, explicit barriers between steps; a
    2-worker ``distributed.LocalCluster`` with one thread per worker.
``rdd-pickle``
    The dissertation's Spark code (``neuroscience/spark/end_to_end.py``):
    pair-RDDs of pickled numpy arrays, ``map`` denoise, ``flatMap`` into 4x4x4
    voxel groups, ``groupBy``, ``map`` regroup and fit, masks broadcast; on
    local[2].
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    RESULTS,
    WORK,
    markdown_table,
    plot_scaling,
    project,
    run_process,
    spark_event_totals,
    wait_for_quiet,
    write_results,
)

THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
SPARK_MEMORY = {"spark.driver.memory": "2g"}
"""JVM heap of the Spark runs (driver = executor in local mode); the JVM grows to its heap, so peak
memory is only comparable with one stated heap."""
FA_TOLERANCE = 1e-5
IMPLS = ("reference", "reference-1thread", "scilens-local1", "scilens-local2", "dask", "rdd-pickle", "xargs")
CORES = os.cpu_count() or 1


# ----------------------------------------------------------------------------- data

def _subject(name: str, nifti: Path, bval: Path, bvec: Path) -> dict[str, str]:
    return {"subject": name, "nifti": str(nifti), "bval": str(bval), "bvec": str(bvec)}


def prepare_data(quick: bool) -> dict[str, dict[str, Any]]:
    """Write (or reuse) the datasets; returns dataset -> {subjects, b0_threshold, note}."""
    from dipy.data import get_fnames

    from scilens.synth import dmri

    root = WORK / "neuro"
    root.mkdir(parents=True, exist_ok=True)
    shape = (48, 48, 32) if quick else (96, 96, 60)
    big = (64, 64, 48) if quick else (128, 128, 170)

    def phantom(name: str, seed: int, grid: tuple[int, ...], gradients: str = "single_shell",
                dtype: str = "int16") -> dict[str, str]:
        folder = root / f"{name}-{'x'.join(map(str, grid))}-{gradients}-{dtype}-s{seed}"
        nifti = folder / f"{name}.nii.gz"
        if not nifti.exists():
            dmri.write_phantom(folder, subject=name, shape=grid, gradients=gradients, snr=30, seed=seed,
                               dtype=dtype)
        return _subject(name, nifti, folder / f"{name}.bval", folder / f"{name}.bvec")

    image, bval, bvec = (Path(p) for p in get_fnames(name="small_101D"))
    return {
        "small_101D": {"subjects": [_subject("small_101D", image, bval, bvec)], "b0_threshold": 50,
                       "note": "dipy's real 6x10x10x102 DSI sample; its b0 is b=15, so b0_threshold=50"},
        "phantom": {"subjects": [phantom("phantom", 1, shape)], "b0_threshold": 10,
                    "note": f"{'x'.join(map(str, shape))} phantom, 65 volumes, int16, SNR 30"},
        "four": {"subjects": [phantom(f"phantom{i}", 10 + i, shape) for i in range(4)], "b0_threshold": 10,
                 "note": f"four {'x'.join(map(str, shape))} phantoms, 65 volumes each, in one run"},
        # The scaling series: 1 (phantom), 2, 4 (four) and 8 subjects of the same size.
        "two": {"subjects": [phantom(f"phantom{i}", 10 + i, shape) for i in range(2)], "b0_threshold": 10,
                "note": f"two {'x'.join(map(str, shape))} phantoms (the first two of four)"},
        "eight": {"subjects": [phantom(f"phantom{i}", 10 + i, shape) for i in range(8)], "b0_threshold": 10,
                  "note": f"eight {'x'.join(map(str, shape))} phantoms (four plus four more)"},
        "big": {"subjects": [phantom("big", 7, big, "multi_shell", "float32")], "b0_threshold": 10,
                "note": f"{'x'.join(map(str, big))} phantom, 193 volumes (3 shells), float32"},
    }


def _nbytes(subject: dict[str, str]) -> int:
    import nibabel as nib

    img = nib.load(subject["nifti"])
    return int(np.prod(img.shape)) * img.get_data_dtype().itemsize


# ----------------------------------------------------------------------------- running and measuring

def run_impl(impl: str, dataset: str, spec: dict[str, Any], out: Path, spark_conf: dict[str, str] | None = None,
             settings: list[str] | None = None) -> dict[str, Any]:
    """Run one implementation on one dataset in its own process tree."""
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "subjects.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["subject", "nifti", "bval", "bvec"])
        writer.writeheader()
        writer.writerows(spec["subjects"])
    log = out / "log.txt"
    if impl.startswith("scilens"):
        cores = impl[-1]
        events = out / "events"
        events.mkdir()
        conf = {"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false", **SPARK_MEMORY,
                "spark.eventLog.enabled": "true", "spark.eventLog.dir": events.as_uri(),
                "spark.eventLog.compress": "false", **(spark_conf or {})}
        cmd = [sys.executable, "-m", "scilens.cli", "neuro", "--input", str(manifest), "--output", str(out / "job"),
               "--set", f"spark.master=local[{cores}]", "--set", f"b0_threshold={spec['b0_threshold']}",
               "--strict", "--set", "report=false", "--set", f"spark.conf={json.dumps(conf)}",
               *[arg for setting in settings or () for arg in ("--set", setting)]]
        result = run_process(cmd, {"SCILENS_SPARK_LOG_LEVEL": "ERROR"}, log)
        if result["returncode"] == 0:
            job = json.loads((out / "job" / "manifest.json").read_text())
            result["steps"] = {s["name"]: s["seconds"] for s in job["steps"]}
            result["pipeline"] = sum(result["steps"].values())
            result["spark"] = spark_event_totals(events)
    elif impl == "xargs":
        result = run_xargs(spec, out, log)
    else:
        cmd = [sys.executable, "-m", "bench.neuro", "--worker", impl, "--manifest", str(manifest),
               "--out", str(out), "--b0-threshold", str(spec["b0_threshold"])]
        env = {} if impl == "reference" else THREAD_ENV
        result = run_process(cmd, env, log)
        if result["returncode"] == 0:
            timing = json.loads((out / "timing.json").read_text())
            result["steps"], result["pipeline"] = timing["steps"], timing["pipeline"]
    if result["returncode"] != 0:
        result["error"] = log.read_text()[-2000:]
    return result


def run_xargs(spec: dict[str, Any], out: Path, log: Path) -> dict[str, Any]:
    """The peer without Spark: the one-thread reference, one process per subject, ``xargs -P <cores>``."""
    folders = []
    for s in spec["subjects"]:
        folder = out / s["subject"]
        folder.mkdir()
        with open(folder / "subjects.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["subject", "nifti", "bval", "bvec"])
            writer.writeheader()
            writer.writerow(s)
        folders.append(str(folder))
    (out / "folders.txt").write_text("\n".join(folders) + "\n")
    worker = (f"{sys.executable} -m bench.neuro --worker reference-1thread --manifest {{}}/subjects.csv "
              f"--out {{}} --b0-threshold {spec['b0_threshold']}")
    result = run_process(["sh", "-c", f"xargs -P {CORES} -I{{}} {worker} < {out / 'folders.txt'}"], THREAD_ENV, log)
    if result["returncode"] == 0:
        steps: dict[str, float] = {}
        for folder in folders:
            for name, seconds in json.loads((Path(folder) / "timing.json").read_text())["steps"].items():
                steps[name] = steps.get(name, 0.0) + seconds
        result["steps"], result["pipeline"] = steps, result["wall"]
    return result


def fa_maps(impl: str, out: Path, subjects: list[dict[str, str]]) -> dict[str, np.ndarray]:
    """The FA map each subject got from ``impl``."""
    import nibabel as nib

    if impl.startswith("scilens"):
        maps = out / "job" / "subjects"
        return {s["subject"]: np.asanyarray(nib.load(str(maps / s["subject"] / "fa.nii.gz")).dataobj)
                for s in subjects}
    if impl == "xargs":
        return {s["subject"]: np.load(out / s["subject"] / f"{s['subject']}_fa.npy") for s in subjects}
    return {s["subject"]: np.load(out / f"{s['subject']}_fa.npy") for s in subjects}


# ----------------------------------------------------------------------------- implementations (worker side)

def _read_manifest(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def worker_reference(subjects: list[dict[str, str]], out: Path, b0_threshold: float, threads: int | None
                     ) -> dict[str, float]:
    import nibabel as nib

    from bench.reference.neuro_ref import run_reference

    steps: dict[str, float] = {}
    for s in subjects:
        result = run_reference(s["nifti"], s["bval"], s["bvec"], b0_threshold=b0_threshold, num_threads=threads)
        start = time.perf_counter()  # the maps scilens writes too: mask, FA, MD
        for name, data in (("mask", result.mask.astype(np.uint8)), ("fa", result.fa), ("md", result.md)):
            nib.save(nib.Nifti1Image(data, result.affine), str(out / f"{s['subject']}_{name}.nii.gz"))
        result.seconds["save"] = time.perf_counter() - start
        for name, seconds in result.seconds.items():
            steps[name] = steps.get(name, 0.0) + seconds
        np.save(out / f"{s['subject']}_fa.npy", result.fa)
        del result
    return steps


# --- the dissertation's Dask code, on dipy 1.12 and distributed's LocalCluster

DASK_PARTS = (10, 10, 10)


def _dask_partition_slices(shape: tuple[int, ...]) -> list[tuple[slice, slice, slice]]:
    """``partition()`` of the dissertation's Dask code: a 10x10x10 grid, the last part taking the rest."""
    sizes = [max(1, n // p) for n, p in zip(shape[:3], DASK_PARTS)]
    slices = []
    for idx in itertools.product(*(range(min(p, n)) for p, n in zip(DASK_PARTS, shape[:3]))):
        bounds = [(i * s, n if i == min(p, n) - 1 else (i + 1) * s)
                  for i, s, n, p in zip(idx, sizes, shape[:3], DASK_PARTS)]
        slices.append(tuple(slice(a, b) for a, b in bounds))
    return slices


def _dask_load(nifti: str, bval: str, bvec: str, b0_threshold: float):
    import nibabel as nib
    from dipy.core.gradients import gradient_table
    from dipy.io.gradients import read_bvals_bvecs

    img = nib.load(nifti)
    bvals, bvecs = read_bvals_bvecs(bval, bvec)
    return np.asanyarray(img.dataobj), img.affine, gradient_table(bvals, bvecs=bvecs, b0_threshold=b0_threshold)


def _dask_filter(loaded):
    data, _, gtab = loaded
    return data[..., gtab.b0s_mask]


def _dask_block_mean(filtered, where):
    return np.mean(filtered[where], -1)


def _dask_reassemble(parts, wheres, shape):
    out = np.empty(shape[:3], dtype=parts[0].dtype)
    for part, where in zip(parts, wheres):
        out[where] = part
    return out


def _dask_mask(mean_b0):
    from dipy.segment.mask import median_otsu

    return median_otsu(mean_b0, median_radius=4, numpass=2, dilate=1)[1]


def _dask_volume(loaded, v):
    return loaded[0][..., v]


def _dask_denoise(volume, mask):
    from dipy.denoise.nlmeans import nlmeans
    from dipy.denoise.noise_estimate import estimate_sigma

    return nlmeans(volume, sigma=estimate_sigma(volume), mask=mask, num_threads=1)


def _dask_stack(volumes):
    return np.stack(volumes, axis=-1)


def _dask_gtab(loaded):
    return loaded[2]


def _dask_fit(denoised, mask, gtab, where):
    from dipy.reconst.dti import TensorModel

    fit = TensorModel(gtab).fit(denoised[where], mask=mask[where])
    return fit.fa, fit.md


def worker_dask(subjects: list[dict[str, str]], out: Path, b0_threshold: float) -> dict[str, float]:
    from dask import delayed
    from distributed import Client, LocalCluster, wait

    steps: dict[str, float] = {}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      memory_limit=0) as cluster, Client(cluster) as client:
        start = time.perf_counter()
        loaded = {s["subject"]: client.persist(delayed(_dask_load)(s["nifti"], s["bval"], s["bvec"], b0_threshold))
                  for s in subjects}
        wait(list(loaded.values()))  # BARRIER 1: data loaded, shapes known
        shapes = {name: client.compute(delayed(lambda x: x[0].shape)(d)).result() for name, d in loaded.items()}
        steps["load"] = time.perf_counter() - start

        start = time.perf_counter()
        masks = {}
        for name, data in loaded.items():
            wheres = _dask_partition_slices(shapes[name])
            filtered = delayed(_dask_filter)(data)
            means = [delayed(_dask_block_mean)(filtered, w) for w in wheres]
            masks[name] = client.persist(delayed(_dask_mask)(delayed(_dask_reassemble)(means, wheres, shapes[name])))
        wait(list(masks.values()))  # BARRIER 2: masks
        steps["segment"] = time.perf_counter() - start

        start = time.perf_counter()
        denoised = {}
        for name, data in loaded.items():
            vols = [delayed(_dask_denoise)(delayed(_dask_volume)(data, v), masks[name])
                    for v in range(shapes[name][3])]
            denoised[name] = client.persist(delayed(_dask_stack)(vols))
        wait(list(denoised.values()))  # BARRIER 3: denoised volumes reassembled
        steps["denoise"] = time.perf_counter() - start

        start = time.perf_counter()
        for name, data in loaded.items():
            wheres = _dask_partition_slices(shapes[name])
            gtab = delayed(_dask_gtab)(data)
            fits = [delayed(_dask_fit)(denoised[name], masks[name], gtab, w) for w in wheres]
            fa_parts = [delayed(lambda f: f[0])(f) for f in fits]
            md_parts = [delayed(lambda f: f[1])(f) for f in fits]
            fa, md = client.compute([delayed(_dask_reassemble)(fa_parts, wheres, shapes[name]),
                                     delayed(_dask_reassemble)(md_parts, wheres, shapes[name])], sync=True)
            np.save(out / f"{name}_fa.npy", fa)
            np.save(out / f"{name}_md.npy", md)
        steps["fit"] = time.perf_counter() - start
    return steps


# --- the dissertation's Spark code: pair-RDDs of pickled numpy arrays

RDD_PARTS = (4, 4, 4)


def worker_rdd(subjects: list[dict[str, str]], out: Path, b0_threshold: float) -> dict[str, float]:
    import nibabel as nib

    from scilens.core.session import get_spark

    spark = get_spark("local", app_name="bench-neuro-rdd", master="local[2]",
                      conf={"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false", **SPARK_MEMORY})
    sc = spark.sparkContext
    steps: dict[str, float] = {}
    start = time.perf_counter()
    from dipy.core.gradients import gradient_table
    from dipy.io.gradients import read_bvals_bvecs

    gtabs = {}
    for s in subjects:
        bvals, bvecs = read_bvals_bvecs(s["bval"], s["bvec"])
        gtabs[s["subject"]] = gradient_table(bvals, bvecs=bvecs, b0_threshold=b0_threshold)
    b_gtab = sc.broadcast(gtabs)
    shapes = {s["subject"]: nib.load(s["nifti"]).shape for s in subjects}
    keys = [(s["subject"], v) for s in subjects for v in range(shapes[s["subject"]][3])]
    index = {k: i for i, k in enumerate(keys)}

    def read_subject(s):
        data = np.asanyarray(nib.load(s["nifti"]).dataobj)
        for v in range(data.shape[3]):
            yield (s["subject"], v), np.ascontiguousarray(data[..., v])

    img_rdd = (sc.parallelize(subjects, len(subjects)).flatMap(read_subject)
               .partitionBy(len(keys), lambda k: index[k]).cache())
    img_rdd.count()
    steps["load"] = time.perf_counter() - start

    start = time.perf_counter()

    def is_b0(kv):
        return bool(b_gtab.value[kv[0][0]].b0s_mask[kv[0][1]])

    def build_mask(kv):
        from dipy.segment.mask import median_otsu

        vols = sorted(kv[1], key=lambda x: x[0][1])
        mean_b0 = np.mean(np.stack([v for _, v in vols], -1), -1)
        return kv[0], median_otsu(mean_b0, median_radius=4, numpass=2, dilate=1)[1]

    masks = img_rdd.filter(is_b0).groupBy(lambda kv: kv[0][0]).map(build_mask).collectAsMap()
    b_mask = sc.broadcast(masks)
    steps["segment"] = time.perf_counter() - start

    start = time.perf_counter()

    def denoise(kv):
        from dipy.denoise.nlmeans import nlmeans
        from dipy.denoise.noise_estimate import estimate_sigma

        (subject, _), volume = kv
        return kv[0], nlmeans(volume, sigma=estimate_sigma(volume), mask=b_mask.value[subject], num_threads=1)

    denoised = img_rdd.map(denoise).cache()
    denoised.count()  # a barrier, so the step's time is its own
    img_rdd.unpersist()
    steps["denoise"] = time.perf_counter() - start

    start = time.perf_counter()

    def repart(kv):
        (subject, v), img = kv
        mask = b_mask.value[subject]
        for i, where in enumerate(_rdd_blocks(img.shape)):
            yield (subject, i, v), (img[where], mask[where])

    def regroup(kv):
        items = sorted(kv[1], key=lambda x: x[0][2])
        data = np.stack([item[1][0] for item in items], axis=-1)
        return kv[0], (data, items[0][1][1])

    def fit_model(kv):
        from dipy.reconst.dti import TensorModel

        (subject, block), (data, mask) = kv
        fit = TensorModel(b_gtab.value[subject]).fit(data, mask=mask)
        return (subject, block), (fit.fa, fit.md)

    fits = (denoised.flatMap(repart).groupBy(lambda x: (x[0][0], x[0][1])).map(regroup).map(fit_model)
            .collect())
    for s in subjects:
        name, shape = s["subject"], shapes[s["subject"]]
        fa, md = np.zeros(shape[:3]), np.zeros(shape[:3])
        blocks = _rdd_blocks(shape)
        for (subject, i), (fa_part, md_part) in fits:
            if subject == name:
                fa[blocks[i]], md[blocks[i]] = fa_part, md_part
        np.save(out / f"{name}_fa.npy", fa)
        np.save(out / f"{name}_md.npy", md)
    steps["fit"] = time.perf_counter() - start
    spark.stop()
    return steps


def _rdd_blocks(shape: tuple[int, ...]) -> list[tuple[slice, slice, slice]]:
    """``repart()`` of the dissertation's Spark code: a 4x4x4 grid, the last part taking the rest."""
    sizes = [n // p for n, p in zip(shape[:3], RDD_PARTS)]
    return [tuple(slice(i * s, n if i == p - 1 else (i + 1) * s)
                  for i, s, n, p in zip(idx, sizes, shape[:3], RDD_PARTS))
            for idx in itertools.product(*(range(p) for p in RDD_PARTS))]


def worker_main(args: argparse.Namespace) -> int:
    subjects = _read_manifest(Path(args.manifest))
    out = Path(args.out)
    start = time.perf_counter()
    if args.worker == "reference":
        steps = worker_reference(subjects, out, args.b0_threshold, None)
    elif args.worker == "reference-1thread":
        steps = worker_reference(subjects, out, args.b0_threshold, 1)
    elif args.worker == "dask":
        steps = worker_dask(subjects, out, args.b0_threshold)
    elif args.worker == "rdd-pickle":
        steps = worker_rdd(subjects, out, args.b0_threshold)
    else:
        raise SystemExit(f"unknown worker {args.worker}")
    pipeline = time.perf_counter() - start
    (out / "timing.json").write_text(json.dumps({"steps": steps, "pipeline": pipeline}))
    return 0


# ----------------------------------------------------------------------------- the benchmark

STEP_COLUMNS = {  # step columns of the table -> names each implementation reports
    "load/read": ("load", "read volumes"),
    "segment": ("segment",),
    "denoise": ("denoise",),
    "fit": ("fit",),
    "write+other": ("save", "write maps", "write _rejected", "list subjects"),
}


def _step(steps: dict[str, float], names: tuple[str, ...]) -> float | None:
    found = [steps[n] for n in names if n in steps]
    return sum(found) if found else None


def _load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def bench_dataset(dataset: str, spec: dict[str, Any], impls: tuple[str, ...], spark_conf: dict[str, str] | None = None,
                  settings: list[str] | None = None, quiet: float | None = None) -> list[dict[str, Any]]:
    """Run ``impls`` on a dataset; FA of each checked against the one-thread reference.

    The one-thread reference runs first: its CPU seconds over the cores are the physical limit every other
    implementation's wall time is measured against (``fraction of limit``), and its CPU seconds the
    denominator of ``CPU / 1-thread ref``. ``quiet``: wait for a load average below it before each run.
    """
    rows, truth, limit_cpu = [], None, float("nan")
    order = ["reference-1thread", *[i for i in impls if i != "reference-1thread"]]
    for impl in order:
        if impl not in impls and impl != "reference-1thread":
            continue
        out = WORK / "neuro-runs" / dataset / impl
        if out.exists():
            import shutil

            shutil.rmtree(out)
        wait_for_quiet(quiet)
        load_before = _load_average()
        print(f"[bench neuro] {dataset}: {impl} (load {load_before}) ...", flush=True)
        scilens = impl.startswith("scilens")
        result = run_impl(impl, dataset, spec, out, spark_conf if scilens else None, settings if scilens else None)
        row: dict[str, Any] = {"dataset": dataset, "implementation": impl, "subjects": len(spec["subjects"]),
                               "load avg before": load_before}
        if result["returncode"] != 0:
            row.update(check="FAILED", note=result.get("error", "")[-300:].replace("\n", " "))
            rows.append(row)
            print(f"[bench neuro] {impl} failed:\n{result.get('error')}", flush=True)
            continue
        fa = fa_maps(impl, out, spec["subjects"])
        if truth is None:
            truth = fa
        diff = max(float(np.max(np.abs(fa[s] - truth[s]))) for s in truth)
        ok = diff <= FA_TOLERANCE
        row.update({"check": "ok" if ok else "FA differs", "max |FA - ref|": diff,
                    "end to end s": result["wall"], "pipeline s": result["pipeline"], "CPU s": result["cpu"],
                    **{col: _step(result["steps"], names) for col, names in STEP_COLUMNS.items()},
                    "peak memory GiB": result["peak_memory"] / 2**30,
                    "shuffle MiB": result["spark"]["shuffle_write_bytes"] / 2**20 if "spark" in result else None})
        if impl == "reference-1thread":
            limit_cpu = result["cpu"]
        row["fraction of limit"] = limit_cpu / CORES / result["wall"]
        row["CPU / 1-thread ref"] = result["cpu"] / limit_cpu
        if not ok and impl != "reference":
            row["note"] = "time not counted: FA differs from the reference"
        if impl == "reference" and not ok:
            row["note"] = "dipy's threaded blockwise nlmeans varies run to run"
        rows.append(row)
        print(f"[bench neuro] {impl}: {result['wall']:.1f} s end to end, FA diff {diff:.2g}", flush=True)
    return rows


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ratios against the targets of the issue, per dataset."""
    out = []
    by = {(r["dataset"], r["implementation"]): r for r in rows}
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        ref = by.get((dataset, "reference"))
        l1, l2 = by.get((dataset, "scilens-local1")), by.get((dataset, "scilens-local2"))
        if not (ref and l2 and "end to end s" in l2 and "end to end s" in ref and l2.get("check") == "ok"):
            continue  # a time counts only with the FA it is checked against
        row = {"dataset": dataset,
               "scilens[2] fraction of limit": l2["fraction of limit"],
               "reference / scilens[2], end to end": ref["end to end s"] / l2["end to end s"],
               "reference / scilens[2], pipeline": ref["pipeline s"] / l2["pipeline s"],
               "CPU s, scilens[2] / 1-thread reference": l2["CPU / 1-thread ref"]}
        for peer in ("dask", "xargs", "rdd-pickle"):
            p = by.get((dataset, peer))
            if p and p.get("check") == "ok":
                row[f"{peer} / scilens[2], end to end"] = p["end to end s"] / l2["end to end s"]
        if l1 and l1.get("check") == "ok" and l1.get("denoise") and l2.get("denoise"):
            row["denoise local[1] / local[2]"] = l1["denoise"] / l2["denoise"]
            row["pipeline local[1] / local[2]"] = l1["pipeline s"] / l2["pipeline s"]
        out.append(row)
    return out


def scaling_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-subject cost of every checked run of the phantom series (1, 2, 4, 8 subjects)."""
    out = []
    for r in rows:
        if r["dataset"] in ("phantom", "two", "four", "eight") and r.get("check") == "ok":
            n = r["subjects"]
            out.append({"subjects": n, "implementation": r["implementation"], "wall s / record": r["end to end s"] / n,
                        "CPU s / record": r["CPU s"] / n, "fraction of limit": r["fraction of limit"],
                        "shuffle MiB / record": None if r.get("shuffle MiB") is None else r["shuffle MiB"] / n,
                        "peak memory GiB": r["peak memory GiB"],
                        "fixed s": r["end to end s"] - r["pipeline s"] if r["implementation"].startswith("scilens")
                        else None})
    return sorted(out, key=lambda r: (r["implementation"], r["subjects"]))


def projection_text(scaling: list[dict[str, Any]]) -> str:
    """1,000 subjects on 10 and 100 executors, from the largest scilens run measured here."""
    runs = [r for r in scaling if r["implementation"] == "scilens-local2"]
    if not runs:
        return ""
    big = max(runs, key=lambda r: r["subjects"])
    subject_bytes = 96 * 96 * 60 * 65 * 2  # int16 on disk (gzip aside: the projection errs slow)
    rows = [project(1000, e, 4, big["CPU s / record"], subject_bytes, (big["shuffle MiB / record"] or 0) * 2**20,
                    big["fixed s"]) for e in (10, 100)]
    return (f"Projection to 1,000 such subjects (from the {big['subjects']}-subject scilens run: "
            f"{big['CPU s / record']:.1f} CPU s and {big['shuffle MiB / record'] or 0:.1f} MiB of shuffle per "
            f"subject, {big['fixed s']:.1f} s fixed start-up; executors of 4 cores; the model and its "
            "assumptions are in `bench.common.project`):\n\n" + markdown_table(rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data: check the benchmark runs")
    parser.add_argument("--only", nargs="*", help="datasets to run (small_101D, phantom, two, four, eight, big)")
    parser.add_argument("--impls", nargs="*", choices=IMPLS, default=list(IMPLS),
                        help="implementations (the one-thread reference always runs: it is the truth and the limit)")
    parser.add_argument("--quiet-wait", type=float, default=None, metavar="LOAD",
                        help="before each run, wait (up to 15 min) for a 1-minute load average below LOAD")
    parser.add_argument("--name", help="results file name (default neuro, neuro-quick or neuro-memory)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--manifest", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--b0-threshold", type=float, default=10, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args)

    data = prepare_data(args.quick)
    wanted = args.only or list(data)
    rows = []
    for dataset in ("small_101D", "phantom", "two", "four", "eight"):
        if dataset in wanted:
            rows += bench_dataset(dataset, data[dataset], tuple(args.impls), quiet=args.quiet_wait)
    memory_rows = []
    if "big" in wanted:
        spec = data["big"]
        size = _nbytes(spec["subjects"][0])
        # Caps at half the subject: the JVM heap (driver = executor in local mode) and each Python worker's
        # address space (RLIMIT_AS, which also counts what numpy, scipy and dipy map before touching data).
        caps = {"spark.driver.memory": "1g", "spark.executor.pyspark.memory": "1g"}
        # A fit task holds one block with all 193 volumes plus dipy's float64 work arrays
        # (10,000 voxels x 193 x 7 at a time): 16^3 blocks keep that inside the 1 GiB cap.
        # The one-thread reference (always run: the FA truth) is the uncapped baseline.
        memory_rows = bench_dataset("big", spec, ("scilens-local2",), caps, ["block_shape=[16,16,16]"],
                                    quiet=args.quiet_wait)
        for r in memory_rows:
            r["subject GiB"] = size / 2**30
            r["caps"] = "none" if not r["implementation"].startswith("scilens") else (
                "JVM heap 1 GiB, 1 GiB address space per Python worker, 16^3 blocks")

    columns = ["dataset", "implementation", "check", "end to end s", "fraction of limit", "CPU / 1-thread ref",
               "pipeline s", *STEP_COLUMNS, "CPU s", "peak memory GiB", "shuffle MiB", "max |FA - ref|",
               "load avg before", "note"]
    loads = sorted({r["load avg before"] for r in rows + memory_rows})
    sections = [
        ("What ran", "\n".join(f"* **{name}**: {spec['note']}" for name, spec in data.items() if name in wanted)
         + "\n\nImplementations, timing and checks are described in `bench/neuro.py`. `end to end` is the "
           "process's wall time (interpreter, JVM or Dask cluster start included); `pipeline` is the sum of "
           "the steps; `CPU s` is user + system time of the whole process tree; `peak memory` is the peak "
           "of the process tree's summed PSS (shared pages split among sharers). Spark runs have a 2 GiB JVM "
           "heap unless stated. *fraction of limit* is the physical limit (the one-thread reference's CPU "
           f"seconds over the {CORES} cores) over the row's wall time: 1.0 would use every core for nothing but "
           "the reference's own work. *CPU / 1-thread ref* is the row's CPU seconds over the one-thread "
           "reference's. `xargs` is the peer a user without Spark would pick: the one-thread reference run once "
           f"per subject, {CORES} processes at a time (`xargs -P {CORES}`). *shuffle MiB*: bytes Spark's tasks "
           "wrote to its shuffle, from the event log.\n"),
        ("Times (seconds) and checks", markdown_table(rows, columns)),
        ("Ratios against the targets", markdown_table(ratios(rows)) +
         "\nTargets (issue 19): four phantoms: scilens[2] at >= 0.8 of the physical limit and faster than the "
         "threaded reference, Dask and xargs (ratios > 1); one phantom: no more than 1.3x the threaded "
         "reference (ratio >= 0.77); CPU s over the one-thread reference's <= 1.15 on several subjects.\n"),
    ]
    scaling = scaling_rows(rows)
    if len({r["subjects"] for r in scaling}) > 1:
        figure = plot_scaling(scaling, "subjects", "implementation", RESULTS / f"{args.name or 'neuro'}-scaling.png",
                              "dMRI pipeline: cost per subject against the number of subjects")
        sections.append(("Scaling", "Per subject: wall and CPU seconds, Spark shuffle bytes and peak memory of the "
                         "run, as the number of 96x96x60x65 subjects grows.\n\n" + markdown_table(scaling)
                         + f"\n![scaling]({figure.name})\n\n" + projection_text(scaling)))
    if memory_rows:
        sections.append(("Memory: a ~2 GB subject", markdown_table(
            memory_rows, ["implementation", "check", "subject GiB", "caps", "peak memory GiB", "end to end s",
                          "pipeline s", "denoise", "fit", "max |FA - ref|"])))
    sections.append(("Machine load", f"1-minute load averages seen before the runs: {', '.join(loads)} on "
                     f"{os.cpu_count()} cores. Above the core count, another workload shared the machine and "
                     "absolute times are inflated; ratios within one dataset are the thing to read."))
    name = args.name or ("neuro-quick" if args.quick else "neuro-memory" if wanted == ["big"] else "neuro")
    path = write_results(name, "dMRI pipeline: reference vs scilens vs Dask vs RDD-pickle", sections,
                         {"rows": rows, "memory": memory_rows, "ratios": ratios(rows), "quick": args.quick})
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
