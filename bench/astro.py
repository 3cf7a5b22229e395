"""Benchmark of the astronomy pipeline: the reference, scilens on local[1]/local[2], Dask and pickled RDDs.

    python -m bench.astro            # generated surveys of 2, 4 and 8 visits; writes bench/results/astro.*
    python -m bench.astro --quick    # a tiny survey, for checking the benchmark itself

Data: one generated survey (``scilens.synth.sky``, preset ``bench``: each
visit a 2x2 mosaic of 2048x2048 px CCDs at 0.263"/px, about 18'x18'),
co-added on the dissertation's sky map (2000x2000 px patches + 100 px border
at 0.333"/px: 2x2 patches here), using its first 2, 4 and 8 visits.

Every implementation runs in its own process (a fresh interpreter, and for
Spark a fresh JVM), so end-to-end times include start-up; each writes the
co-adds and the catalog, which are checked against the reference's (pixels
within 1e-5 relative, catalogs equal) before its time counts.

``reference``
    ``bench/reference/astro_ref.py``: the kernels in a plain loop, one process.
``scilens-local1``, ``scilens-local2``
    ``scilens astro`` through its CLI on ``local[1]`` / ``local[2]``.
``dask``
    The dissertation's way: ``delayed`` tasks per image (read, pre-process,
    warp) and per patch (co-add, detect, write) over the same kernels, a
    barrier after the header scan, on a 2-worker ``distributed.LocalCluster``
    with one thread per worker.
``rdd-pickle``
    The dissertation's Spark way: a pair-RDD of pickled numpy objects,
    ``flatMap`` images to (patch, warp), ``groupByKey``, ``map`` co-add and
    detect; on local[2].
``xargs``
    The peer a user without Spark would pick: the reference's kernels as
    separate one-image and one-patch processes, ``xargs -P <cores>`` (scan the
    headers and build the sky map; warp every image, one process per image,
    its warps pickled per patch; co-add and detect every patch, one process
    per patch; concatenate the catalogs).

Every run is measured as its whole process tree: wall seconds, CPU seconds
(user + system, every descendant) and peak memory (summed PSS). The physical
limit is the reference's CPU seconds (one process, one thread) over the
cores; *fraction of limit* is that over a run's wall time. Spark runs write
an event log, from which their shuffle bytes are read.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    RESULTS,
    WORK,
    machine,
    markdown_table,
    plot_scaling,
    project,
    run_process,
    spark_event_totals,
    wait_for_quiet,
    write_results,
)

IMPLS = ("reference", "scilens-local1", "scilens-local2", "dask", "rdd-pickle", "xargs")
CORES = os.cpu_count() or 1
TOLERANCE = 1e-5
ROOT = Path(__file__).resolve().parents[1]
TINY_SKYMAP = ["skymap.preset=tiny"]


# ----------------------------------------------------------------------------- data

def prepare_data(quick: bool, visit_counts: tuple[int, ...]) -> dict[int, Path]:
    """Generate (or reuse) the survey; returns visits -> directory of that many visits' images."""
    from scilens.synth import sky

    cfg = sky.survey_preset("tiny", visits=max(visit_counts)) if quick else sky.survey_preset(
        "bench", visits=max(visit_counts))
    root = WORK / "astro" / ("survey-quick" if quick else "survey")
    stamp = root / "config.json"
    if not stamp.exists() or json.loads(stamp.read_text()) != cfg.to_dict():
        shutil.rmtree(root, ignore_errors=True)
        start = time.perf_counter()
        sky.write_survey(cfg, root)
        stamp.write_text(json.dumps(cfg.to_dict()))
        print(f"generated survey in {time.perf_counter() - start:.0f} s: {root}", flush=True)
    subsets = {}
    for n in visit_counts:
        sub = root / f"visits-{n}"
        shutil.rmtree(sub, ignore_errors=True)
        sub.mkdir()
        for path in sorted((root / "images").glob("*.fits")):
            if int(path.stem[1:5]) < n:
                (sub / path.name).symlink_to(path)
        subsets[n] = sub
    return subsets


def skymap_settings(quick: bool) -> list[str]:
    """The sky map every implementation co-adds on (the job's default is the inputs' native pixel scale)."""
    return TINY_SKYMAP if quick else ["skymap.preset=dissertation"]


def bench_config(quick: bool):
    from scilens.astro.config import AstroConfig
    from scilens.core.config import load_config

    return load_config(AstroConfig, ROOT / "conf" / "astro.yaml", [*skymap_settings(quick), "report.enabled=false"])


# ----------------------------------------------------------------------------- implementations

def _prepare_and_warp(path: str, skymap, config) -> list:
    from scilens.astro import pipeline
    from scilens.io import fits as fits_io

    return list(pipeline.warp_image(pipeline.prepare(fits_io.read_image(path, config.fits), config), skymap, config))


def _coadd_and_detect(patch: str, warps: list, skymap, config, output: str):
    from scilens.astro import pipeline

    coadd = pipeline.coadd_patch(warps, skymap, config)
    pipeline.write_coadd(output, coadd, patch, skymap)
    return pipeline.detect_patch(coadd, patch, skymap, config)


def _skymap(paths: list[str], config):
    from scilens.astro import pipeline

    infos = [pipeline.scan(p, config.fits) for p in paths]
    return pipeline.build_skymap(infos, config.skymap)


def run_reference(inputs: str, output: str, quick: bool) -> dict:
    from bench.reference import astro_ref

    result = astro_ref.run(inputs, output, bench_config(quick))
    return {"steps": result["seconds"], "images": result["images"]}


def run_scilens(inputs: str, output: str, quick: bool, cores: int) -> dict:
    from scilens import cli

    events = Path(f"{output}-events")
    shutil.rmtree(events, ignore_errors=True)
    events.mkdir()
    conf = {"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false", "spark.eventLog.enabled": "true",
            "spark.eventLog.dir": events.as_uri(), "spark.eventLog.compress": "false"}
    args = ["astro", "--input", inputs, "--output", output, "--config", str(ROOT / "conf" / "astro.yaml"),
            "--set", f"spark.master=local[{cores}]", "--set", "report.enabled=false",
            "--set", f"spark.conf={json.dumps(conf)}"]
    for item in skymap_settings(quick):
        args += ["--set", item]
    if cli.main(args) != 0:
        raise RuntimeError("scilens astro failed")
    manifest = json.loads((Path(output) / "manifest.json").read_text())
    steps = {s["name"]: s["seconds"] for s in manifest["steps"]}
    work = next(s for s in manifest["steps"] if s["name"].startswith("pre-process"))["counts"]
    tasks = {k[:-len("_task_ms")]: v / 1000 for k, v in work.items() if k.endswith("_task_ms")}
    return {"steps": steps, "task_seconds": tasks, "images": manifest["counts"]["succeeded"],
            "spark": spark_event_totals(events)}


def run_dask(inputs: str, output: str, quick: bool) -> dict:
    import dask
    import pandas as pd
    from dask import delayed
    from distributed import Client, LocalCluster

    from scilens.astro import pipeline
    from scilens.core.inputs import list_files
    from scilens.io.fits import FITS_SUFFIXES

    config = bench_config(quick)
    steps = {}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        t = time.perf_counter()
        paths = list_files(inputs, FITS_SUFFIXES)
        infos = client.gather(client.map(pipeline.scan, paths, layout=config.fits))  # barrier: the sky map needs all
        skymap, inside, _ = pipeline.build_skymap(infos, config.skymap)
        steps["scan"] = time.perf_counter() - t
        warps = {i.path: delayed(_prepare_and_warp)(i.path, skymap, config) for i in inside}
        patches = {}
        for info in inside:
            for patch in skymap.overlaps(info.footprint_ra, info.footprint_dec):
                patches.setdefault(patch, []).append(
                    delayed(lambda ws, p: [w for w in ws if w.patch == p])(warps[info.path], patch))
        tasks = [delayed(_coadd_and_detect)(p, delayed(lambda lists: [w for ws in lists for w in ws])(parts),
                                            skymap, config, output) for p, parts in sorted(patches.items())]
        catalogs = dask.compute(*tasks)
        steps["preprocess+warp+coadd+detect"] = time.perf_counter() - t - steps["scan"]
    pipeline.write_catalog(pd.concat(catalogs, ignore_index=True), output)
    return {"steps": steps, "images": len(inside)}


def run_rdd(inputs: str, output: str, quick: bool) -> dict:
    import pandas as pd

    from scilens.astro import pipeline
    from scilens.core.inputs import list_files
    from scilens.core.session import get_spark
    from scilens.io.fits import FITS_SUFFIXES

    config = bench_config(quick)
    spark = get_spark("local", app_name="astro-rdd", master="local[2]",
                      conf={"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false"})
    sc = spark.sparkContext
    t = time.perf_counter()
    paths = list_files(inputs, FITS_SUFFIXES)
    infos = sc.parallelize(paths, len(paths)).map(lambda p: pipeline.scan(p, config.fits)).collect()
    skymap, inside, _ = pipeline.build_skymap(infos, config.skymap)
    steps = {"scan": time.perf_counter() - t}
    n_patches = len(skymap.patch_names())
    catalogs = (sc.parallelize([i.path for i in inside], len(inside))
                .flatMap(lambda p: [(w.patch, w) for w in _prepare_and_warp(p, skymap, config)])
                .groupByKey(numPartitions=4 * n_patches)
                .map(lambda kv: _coadd_and_detect(kv[0], list(kv[1]), skymap, config, output))
                .collect())
    steps["preprocess+warp+coadd+detect"] = time.perf_counter() - t - steps["scan"]
    pipeline.write_catalog(pd.concat(catalogs, ignore_index=True), output)
    spark.stop()
    return {"steps": steps, "images": len(inside)}


def run_xargs(inputs: str, output: str, quick: bool) -> dict:
    """The xargs peer (see the module docstring); its steps are wall seconds of each phase."""
    import pandas as pd

    from scilens.core.inputs import list_files
    from scilens.io.fits import FITS_SUFFIXES

    config = bench_config(quick)
    work = Path(f"{output}-xargs")
    shutil.rmtree(work, ignore_errors=True)
    (work / "warps").mkdir(parents=True)
    (work / "catalogs").mkdir()
    steps = {}
    t = time.perf_counter()
    skymap, inside, _ = _skymap(list_files(inputs, FITS_SUFFIXES), config)
    (work / "plan.pkl").write_bytes(pickle.dumps({"skymap": skymap, "quick": quick, "output": output}))
    (work / "images.txt").write_text("".join(f"{i:05d} {info.path}\n" for i, info in enumerate(inside)))
    steps["scan"] = time.perf_counter() - t

    def xargs(step: str, listing: Path) -> float:
        start = time.perf_counter()
        worker = f"{sys.executable} -m bench.astro --xargs-step {step} --work {work}"
        done = run_process(["sh", "-c", f"xargs -P {CORES} -L 1 {worker} < {listing}"], log=work / f"{step}.log")
        if done["returncode"] != 0:
            raise RuntimeError(f"xargs {step} failed: {(work / f'{step}.log').read_text()[-2000:]}")
        return time.perf_counter() - start

    steps["preprocess+warp"] = xargs("warp", work / "images.txt")
    patches = sorted(p.name for p in (work / "warps").iterdir())
    (work / "patches.txt").write_text("".join(f"{p}\n" for p in patches))
    steps["coadd+detect"] = xargs("coadd", work / "patches.txt")
    t = time.perf_counter()
    catalogs = [pd.read_pickle(work / "catalogs" / f"{p}.pkl") for p in patches]
    from scilens.astro import pipeline

    pipeline.write_catalog(pd.concat(catalogs, ignore_index=True), output)
    steps["write catalog"] = time.perf_counter() - t
    return {"steps": steps, "images": len(inside)}


def xargs_step(step: str, work: Path, items: list[str]) -> None:
    """One xargs process: warp one image (``INDEX PATH``) or co-add and detect one patch (``PATCH``)."""
    plan = pickle.loads((work / "plan.pkl").read_bytes())
    config = bench_config(plan["quick"])
    if step == "warp":
        index, path = items
        for warp in _prepare_and_warp(path, plan["skymap"], config):
            folder = work / "warps" / warp.patch
            folder.mkdir(exist_ok=True)
            (folder / f"{index}.pkl").write_bytes(pickle.dumps(warp, protocol=pickle.HIGHEST_PROTOCOL))
    else:
        (patch,) = items
        # In image order, as the reference appends them.
        warps = [pickle.loads(f.read_bytes()) for f in sorted((work / "warps" / patch).glob("*.pkl"))]
        catalog = _coadd_and_detect(patch, warps, plan["skymap"], config, plan["output"])
        catalog.to_pickle(work / "catalogs" / f"{patch}.pkl")


def run_one(impl: str, inputs: str, output: str, quick: bool) -> dict:
    if impl == "reference":
        return run_reference(inputs, output, quick)
    if impl.startswith("scilens-local"):
        return run_scilens(inputs, output, quick, int(impl[-1]))
    if impl == "dask":
        return run_dask(inputs, output, quick)
    if impl == "rdd-pickle":
        return run_rdd(inputs, output, quick)
    if impl == "xargs":
        return run_xargs(inputs, output, quick)
    raise ValueError(impl)


# ----------------------------------------------------------------------------- checks

def check_against(output: Path, reference: Path) -> str:
    """'ok', or what differs from the reference's outputs."""
    import pandas as pd
    from astropy.io import fits

    ours = sorted(p.name for p in (output / "coadds").glob("*.fits"))
    theirs = sorted(p.name for p in (reference / "coadds").glob("*.fits"))
    if ours != theirs or not ours:
        return f"co-add files differ: {ours} vs {theirs}"
    worst = 0.0
    for name in ours:
        with fits.open(output / "coadds" / name) as a, fits.open(reference / "coadds" / name) as b:
            for plane in ("IMAGE", "VARIANCE"):
                x, y = a[plane].data.astype(np.float64), b[plane].data.astype(np.float64)
                if not np.array_equal(np.isnan(x), np.isnan(y)):
                    return f"{name} {plane}: NaN pixels differ"
                ok = ~np.isnan(x)
                worst = max(worst, float(np.max(np.abs(x[ok] - y[ok]) / np.maximum(np.abs(y[ok]), 1e-3),
                                             initial=0.0)))
            for plane in ("MASK", "COUNT"):
                if not np.array_equal(a[plane].data, b[plane].data):
                    return f"{name} {plane} differs"
    if worst > TOLERANCE:
        return f"co-add pixels differ by {worst:.2e} relative"
    cat, ref = pd.read_parquet(output / "catalog.parquet"), pd.read_parquet(reference / "catalog.parquet")
    try:
        pd.testing.assert_frame_equal(cat, ref)
    except AssertionError as exc:
        return f"catalog differs: {str(exc).splitlines()[0]}"
    return "ok"


def truth_scores(survey: Path, output: Path, quick: bool) -> dict:
    import pandas as pd
    from astropy.io import fits

    from scilens.astro import pipeline, validate
    from scilens.astro.report import UNRELIABLE

    config = bench_config(quick)
    skymap, _, _ = _skymap([str(p) for p in sorted(survey.glob("*.fits"))], config)
    catalog = pd.read_parquet(output / "catalog.parquet")
    variances = {p: fits.getdata(pipeline.coadd_path(output, skymap, p), "VARIANCE").astype(float)
                 for p in skymap.patch_names() if pipeline.coadd_path(output, skymap, p).exists()}
    fwhm = pipeline.median_psf_fwhm(output, skymap, list(variances), config)  # the co-adds' measured PSF
    truth = validate.truth_in_patches(pd.read_parquet(survey.parent / "truth.parquet"), skymap, variances, fwhm)
    pairs = validate.match(catalog, truth, 1.0)
    return validate.score(catalog, truth, pairs, skymap.config.pixel_scale_arcsec, exclude_flags=UNRELIABLE).as_dict()


# ----------------------------------------------------------------------------- driver

def _load() -> float:
    return os.getloadavg()[0]


def run_in_process(impl: str, inputs: Path, output: Path, quick: bool, quiet: float | None = None) -> dict:
    """Run one implementation in a fresh interpreter; wall, CPU and peak memory of its whole process tree."""
    shutil.rmtree(output, ignore_errors=True)
    output.mkdir(parents=True)
    result_file = output.parent / f"{output.name}.json"
    cmd = [sys.executable, "-m", "bench.astro", "--one", impl, "--input", str(inputs), "--output", str(output),
           "--result", str(result_file)] + (["--quick"] if quick else [])
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "SCILENS_SPARK_LOG_LEVEL": "ERROR"}
    load = wait_for_quiet(quiet)
    log = output.parent / f"{output.name}.log"
    done = run_process(cmd, env, log)
    if done["returncode"] != 0:
        raise RuntimeError(f"{impl} failed:\n{log.read_text()[-4000:]}")
    return {**json.loads(result_file.read_text()), "wall": done["wall"], "cpu": done["cpu"],
            "peak_memory": done["peak_memory"], "load_before": load, "load_after": _load()}


def _summary(n: int, attempts: dict[str, list[dict]], impls: list[str], quick: bool
             ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """The end-to-end row, the per-step rows and the scaling rows of one visit count (best attempts)."""
    srows: list[dict[str, Any]] = []
    scaling: list[dict[str, Any]] = []
    runs = {}
    for impl, tries in attempts.items():
        failed = [t for t in tries if t["check"] not in ("ok", "reference")]
        runs[impl] = failed[0] if failed else min(tries, key=lambda t: t["wall"])
    ref = runs["reference"]["wall"]
    images = runs["reference"]["images"]
    mpix = images * int(np.prod(_ccd_shape(quick))) / 1e6
    row: dict[str, Any] = {"visits": n, "images": images, "input Mpx": round(mpix)}
    limit = runs["reference"]["cpu"] / CORES
    row["limit s"] = limit
    for impl in impls:
        r = runs[impl]
        ok = r["check"] in ("ok", "reference")
        row[f"{impl} s"] = r["wall"] if ok else f"FAILED CHECK: {r['check']}"
        if impl != "reference" and ok:
            row[f"ref/{impl}"] = ref / r["wall"]
            row[f"{impl} fraction of limit"] = limit / r["wall"]
    if "scilens-local1" in runs and "scilens-local2" in runs:
        row["local1/local2"] = runs["scilens-local1"]["wall"] / runs["scilens-local2"]["wall"]
    ref_kernels = sum(v for k, v in runs["reference"]["steps"].items() if k != "scan")
    for impl in ("scilens-local1", "scilens-local2"):
        if impl in runs and runs[impl].get("task_seconds"):
            # The same kernels, timed inside the tasks: 1.0 when nothing else competed for the cores.
            row[f"{impl} kernel slowdown"] = sum(runs[impl]["task_seconds"].values()) / ref_kernels
    for impl in impls:
        if runs[impl]["check"] in ("ok", "reference"):
            r = runs[impl]
            scaling.append({"visits": n, "implementation": impl, "wall s / record": r["wall"] / n,
                            "CPU s / record": r["cpu"] / n, "CPU / reference": r["cpu"] / runs["reference"]["cpu"],
                            "fraction of limit": limit / r["wall"],
                            "shuffle MiB / record": r["spark"]["shuffle_write_bytes"] / 2**20 / n
                            if "spark" in r else None,
                            "peak memory GiB": r["peak_memory"] / 2**30,
                            "fixed s": r["wall"] - sum(r["steps"].values()) if impl.startswith("scilens") else None})
    row["load (1-min avg, before-after)"] = " ".join(
        f"{runs[i]['load_before']:.1f}-{runs[i]['load_after']:.1f}" for i in impls)
    ref_steps = runs["reference"]["steps"]
    for step, secs in ref_steps.items():
        srow = {"visits": n, "step": step, "reference s": secs}
        for impl in ("scilens-local1", "scilens-local2"):
            if impl in runs:
                srow[f"{impl} task s"] = runs[impl].get("task_seconds", {}).get(step)
        srows.append(srow)
    for impl in ("scilens-local1", "scilens-local2"):
        if impl in runs:
            for step, secs in runs[impl]["steps"].items():
                srows.append({"visits": n, "step": f"{impl}: {step} (wall)", "reference s": None,
                              f"{impl} task s": secs})
    return row, srows, scaling


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.astro", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny survey, to check the benchmark itself")
    parser.add_argument("--visits", type=int, nargs="*", help="visit counts (default 2 4 8; quick: 2 6)")
    parser.add_argument("--impls", nargs="*", default=list(IMPLS), choices=IMPLS)
    parser.add_argument("--repeat", type=int, default=1, help="interleaved rounds; each time is the best (default 1)")
    parser.add_argument("--quiet-wait", type=float, default=None, metavar="LOAD",
                        help="before each run, wait (up to 15 min) for a 1-minute load average below LOAD")
    parser.add_argument("--name", default="astro", help="results file name (default astro)")
    parser.add_argument("--one", choices=IMPLS, help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--xargs-step", choices=("warp", "coadd"), help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("items", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick and args.name == "astro":
        args.name = "astro-quick"
    if args.xargs_step:  # a process of the xargs peer
        xargs_step(args.xargs_step, Path(args.work), args.items)
        return 0
    if args.one:  # a child process: run one implementation, write its timings
        start = time.perf_counter()
        result = run_one(args.one, args.input, args.output, args.quick)
        result["in_process"] = time.perf_counter() - start
        Path(args.result).write_text(json.dumps(result, default=str))
        return 0

    visit_counts = tuple(args.visits or ((2, 6) if args.quick else (2, 4, 8)))
    subsets = prepare_data(args.quick, visit_counts)
    if "reference" not in args.impls:
        args.impls = ["reference", *args.impls]
    rows, step_rows, scaling, data = [], [], [], {"runs": {}}
    for n, inputs in subsets.items():
        work = WORK / "astro" / ("quick" if args.quick else "full") / f"visits-{n}"
        attempts: dict[str, list[dict]] = {impl: [] for impl in args.impls}
        for round_ in range(args.repeat):  # interleaved rounds: a burst of load hits one attempt, not one column
            for impl in args.impls:
                print(f"[astro bench] {n} visits, round {round_ + 1}: {impl} ...", flush=True)
                result = run_in_process(impl, inputs, work / impl, args.quick, args.quiet_wait)
                result["check"] = "reference" if impl == "reference" else check_against(work / impl,
                                                                                        work / "reference")
                attempts[impl].append(result)
                print(f"[astro bench]   {result['wall']:.1f} s, {result['cpu']:.1f} CPU s, {result['check']} "
                      f"(load {result['load_before']:.2f})", flush=True)
        row, srows, grows = _summary(n, attempts, args.impls, args.quick)
        rows.append(row)
        step_rows += srows
        scaling += grows
        data["runs"][n] = attempts
    data["scaling"] = scaling
    last = max(subsets)
    scores = truth_scores(subsets[last], WORK / "astro" / ("quick" if args.quick else "full") /
                          f"visits-{last}" / "reference", args.quick)
    data["truth"] = {"visits": last, **scores}
    info = machine()
    sections = [
        ("End to end", "Wall seconds of each implementation's own process (interpreter and JVM start-up included), "
                       f"best of {args.repeat} interleaved round(s), then the reference's time over each one's. "
                       "Every output was checked against the reference's (co-add pixels within 1e-5 relative, "
                       f"catalogs equal) before its time counted. The physical limit on {info['cores']} cores is "
                       f"{info['cores']}x. *Kernel slowdown*: seconds scilens spent inside the same kernels "
                       "(summed over tasks) over the reference's; 1.0 when nothing else competed for the cores, "
                       "2 when each task got half a core. The last column is the machine's 1-minute load average "
                       "before and after each run (other engineers' jobs share the machine; a load above the "
                       "core count slows whatever runs then).\n\n" + markdown_table(rows)),
        ("Per step", "The reference's seconds per step next to scilens' seconds spent inside the same kernels, "
                     "summed over all tasks (`*_task_ms` of the manifest), and scilens' own steps (wall).\n\n"
         + markdown_table(step_rows)),
        ("Against truth", f"The {last}-visit co-adds (the same for every implementation) scored against the "
                          "survey's truth: S/N >= 10, 1\" match, detections where fewer than 3 visits overlap "
                          "or with saturated inputs left out of purity and of the astrometry/photometry.\n\n"
         + markdown_table([{k: (round(v, 4) if isinstance(v, float) else v) for k, v in data["truth"].items()}])),
    ]
    if len(subsets) > 1:
        scaling.sort(key=lambda r: (r["implementation"], r["visits"]))
        figure = plot_scaling(scaling, "visits", "implementation", RESULTS / f"{args.name}-scaling.png",
                              "Astronomy pipeline: cost per visit against the number of visits")
        per_visit_bytes = sum(p.stat().st_size for p in subsets[last].glob("*.fits")) / last
        sections.append(("Scaling", "Per visit (4 CCD images): wall and CPU seconds, CPU over the reference's, "
                                    "Spark shuffle bytes and peak memory, as the survey grows.\n\n"
                         + markdown_table(scaling) + f"\n![scaling]({figure.name})\n\n"
                         + projection_text(scaling, per_visit_bytes)))
    if args.quick:  # checks the benchmark; the results table is the full run's
        print("".join(f"\n## {heading}\n\n{text}" for heading, text in sections))
        return 0
    print(write_results(args.name, "Astronomy pipeline benchmark", sections, data).read_text())
    return 0


def projection_text(scaling: list[dict[str, Any]], per_visit_bytes: float) -> str:
    """A 1,000-visit survey on 10 and 100 executors, from the largest scilens run measured here."""
    runs = [r for r in scaling if r["implementation"] == "scilens-local2"]
    if not runs:
        return ""
    big = max(runs, key=lambda r: r["visits"])
    rows = [project(1000, e, 4, big["CPU s / record"], per_visit_bytes, (big["shuffle MiB / record"] or 0) * 2**20,
                    big["fixed s"]) for e in (10, 100)]
    return (f"Projection to a 1,000-visit survey (from the {big['visits']}-visit scilens run: "
            f"{big['CPU s / record']:.1f} CPU s and {big['shuffle MiB / record'] or 0:.0f} MiB of shuffle per visit, "
            f"{per_visit_bytes / 2**20:.0f} MiB of input per visit, {big['fixed s']:.1f} s fixed start-up; "
            "executors of 4 cores; the model and its assumptions are in `bench.common.project`; a visit's "
            "warps meet their patch's other visits in the shuffle, so the co-add side's waves are counted as "
            "part of each visit's CPU):\n\n" + markdown_table(rows))


def _ccd_shape(quick: bool) -> tuple[int, int]:
    from scilens.synth import sky

    return tuple(sky.survey_preset("tiny" if quick else "bench").ccd_shape)


if __name__ == "__main__":
    sys.exit(main())
