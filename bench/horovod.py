"""Benchmark of distributed training on Spark, both backends: images per second for 1 and 2 ranks on the same data.

    python -m bench.horovod            # full run (about 10 minutes per backend on 2 cores); bench/results/horovod.*
    python -m bench.horovod --quick    # small data, for checking the benchmark itself (horovod-quick.*)
    python -m bench.horovod --backend tf-distribute   # one backend only

On the current stack (``.venv``, ``make bench``) the full run first runs the horovod stack's
backends in ``.venv-horovod`` (when it exists) in a subprocess, then its own, and writes one
table with a ``stack`` column: Horovod (TF 2.15, Keras 2), tf-distribute on TF 2.15 / Keras 2
and tf-distribute on TF 2.19 / Keras 3, side by side on the same data sizes in one run.

Backends (``glaucoma-train --set backend=...``): ``horovod`` (``horovod.spark.run``,
Petastorm datasets; only where Horovod is installed) and ``tf-distribute``
(MultiWorkerMirroredStrategy in Spark barrier tasks, plain Parquet read with
pyarrow). By default every backend the installed stack has.

Data: synthetic macular OCT B-scans (:mod:`scilens.synth.retina`, preprocessed as
``glaucoma-images`` does), materialised once from Spark per backend (Petastorm or
plain Parquet), read by every configuration (each rank its own shard).

Models: the ``tiny`` DenseNet on 64-px scans (little compute per step, so
framework overheads show) and the paper's DenseNet-201 (``paper`` preset) on
224-px scans (compute-bound, 18 M parameters allreduced per step).

Configurations, each backend on a ``local[2]`` Spark:

* 1 rank x 1 thread -- the baseline;
* 2 ranks x 1 thread -- data parallel: each rank a core, gradients averaged by allreduce (Gloo for
  Horovod, TensorFlow's ring collectives for tf-distribute);
* 1 rank x 2 threads -- the alternative use of the second core: TensorFlow's own intra-op threads.

Images/s is the training throughput of rank 0 (``steps x batch x ranks / epoch time``,
validation excluded), the median over the epochs after the first (graph tracing and
reader warm-up). A run counts only if its ranks finish with identical weights and
a finite loss. The per-rank batch is fixed, so 2 ranks process twice the images per
step (Horovod's convention, learning rate scaled by ranks). On 2 cores the ideal
speed-up is 2; the table reports the efficiency ``speed-up / cores used`` and the
machine's load average, since this machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.common import WORK, markdown_table, write_results

CASES = {
    "full": [
        {"model": "tiny", "size": 64, "batch": 32, "steps": 30, "epochs": 4, "eyes": 48, "scans": 16},
        {"model": "paper", "size": 224, "batch": 8, "steps": 4, "epochs": 3, "eyes": 8, "scans": 16},
    ],
    "quick": [
        {"model": "tiny", "size": 32, "batch": 16, "steps": 5, "epochs": 2, "eyes": 8, "scans": 8},
    ],
}
LAYOUTS = [(1, 1), (2, 1), (1, 2)]  # (ranks, threads per rank)


def _dataset(spark: Any, root: Path, case: dict[str, Any], backend: str) -> dict[str, Any]:
    """The datasets of one case for one backend (written once, reused on reruns of the same case)."""
    from pyspark.sql import types as T

    from scilens.core import tensor
    from scilens.glaucoma.preprocess import OctPreprocessConfig, preprocess_oct
    from scilens.synth import retina
    from scilens.vision import parquet_data, petastorm_data

    size, n_eyes, n_scans = case["size"], case["eyes"], case["scans"]
    oct_config = OctPreprocessConfig(image_size=size)
    synth = retina.RetinaSynthConfig(n_scans=n_scans, oct_height=max(64, size), oct_width=max(80, size * 5 // 4),
                                     misaligned_fraction=0.0)
    rows = []
    for i in range(n_eyes):
        eye, label = ("left", "right")[i % 2], ("glaucoma", "healthy")[(i // 2) % 2]
        volume, _, _ = retina.render_eye(i, eye, label, synth)
        for j, scan in enumerate(preprocess_oct(volume, eye, oct_config)[0]):
            rows.append({"eid": i, "eye": eye, "visit": 0, "scan": j, "target": int(label == "glaucoma"),
                         "image": tensor.encode(scan)})
    schema = T.StructType([T.StructField("eid", T.LongType()), T.StructField("eye", T.StringType()),
                           T.StructField("visit", T.IntegerType()), T.StructField("scan", T.IntegerType()),
                           T.StructField("target", T.IntegerType()), tensor.tensor_field("image")])
    frame = spark.createDataFrame(pd.DataFrame(rows), schema)
    infos = {}
    datasets = petastorm_data if backend == "horovod" else parquet_data
    for split, part in (("train", frame), ("validation", frame.where("eid % 4 = 0"))):
        infos[split] = datasets.materialize_images(
            spark, part, root / backend / f"{case['model']}-{size}" / split, (size, size, 1),
            source=f"bench {case}", min_row_groups=8, row_group_size_mb=4)
    return infos


def _run(spark: Any, case: dict[str, Any], infos: dict[str, Any], backend: str, ranks: int, threads: int,
         out: Path) -> dict[str, Any]:
    from scilens.vision.augment import AugmentConfig
    from scilens.vision.densenet import DenseNetConfig
    from scilens.vision.train_common import DistributedTrainingConfig, TrainSpec

    if backend == "horovod":
        from scilens.vision.horovod_train import train_distributed
    else:
        from scilens.vision.tf_distribute_train import train_distributed

    training = DistributedTrainingConfig(
        epochs=case["epochs"], batch_size=case["batch"], steps_per_epoch=case["steps"], num_proc=ranks,
        threads_per_rank=threads, early_stopping_patience=case["epochs"], shuffle_buffer=64,
        augment=AugmentConfig(enabled=False))
    out.mkdir(parents=True, exist_ok=True)
    spec = TrainSpec("densenet", DenseNetConfig(preset=case["model"]), training, (case["size"], case["size"], 1),
                     infos["train"].url, infos["validation"].url, infos["train"].rows, str(out))
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    results = train_distributed(spark, spec)
    wall = time.perf_counter() - started
    history = results[0]["history"]
    digests = {r["weights_sha256"] for r in results}
    if len(digests) != 1 or not all(np.isfinite(h["loss"]) for h in history):
        raise RuntimeError(f"{backend} {case['model']} {ranks}x{threads}: ranks out of sync or loss not finite; "
                           "not timed")
    steady = [h["images_per_second"] for h in history[1:]] or [history[0]["images_per_second"]]
    return {"stack": _stack_label(), "backend": backend, "model": case["model"], "image_px": case["size"],
            "ranks": ranks, "threads_per_rank": threads,
            "batch_per_rank": case["batch"], "steps_per_epoch": case["steps"], "epochs": len(history),
            "images_per_s": statistics.median(steady), "wall_s": wall,
            "load_avg": round((load_before + os.getloadavg()[0]) / 2, 1)}


def _stack_label() -> str:
    import tensorflow as tf

    from scilens.core import compat

    return f"{compat.stack()} (TF {tf.__version__}, pyspark {__import__('pyspark').__version__})"


def _horovod_stack_rows(venv: str, quick: bool) -> list[dict[str, Any]]:
    """The horovod stack's rows, run by its own Python before this process starts Spark."""
    python = Path(venv) / "bin" / "python"
    if not venv or not python.exists():
        print(f"[bench horovod] no horovod stack at {venv!r}: this stack only", file=sys.stderr, flush=True)
        return []
    rows_file = WORK / "horovod" / "horovod-stack-rows.json"
    rows_file.parent.mkdir(parents=True, exist_ok=True)
    command = [str(python), "-m", "bench.horovod", "--rows-json", str(rows_file)] + ["--quick"] * quick
    print(f"[bench horovod] the horovod stack first: {' '.join(command)}", file=sys.stderr, flush=True)
    subprocess.run(command, cwd=Path(__file__).resolve().parents[1], check=True)
    return json.loads(rows_file.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.horovod", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, to check the benchmark")
    parser.add_argument("--backend", choices=["horovod", "tf-distribute"], action="append",
                        help="backend to run (repeatable); default: tf-distribute, and horovod where installed")
    parser.add_argument("--other-stack", default=str(Path(__file__).resolve().parents[1] / ".venv-horovod"),
                        help="venv of the horovod stack to run first when this is the current stack ('' for none)")
    parser.add_argument("--rows-json", help=argparse.SUPPRESS)  # a subprocess's rows, for its parent's table
    args = parser.parse_args(argv)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from scilens.core.session import get_spark
    from scilens.vision.train_common import default_backend

    backends = args.backend or (["horovod", "tf-distribute"] if default_backend() == "horovod" else ["tf-distribute"])
    mode = "quick" if args.quick else "full"
    root = WORK / "horovod"
    load_at_start = os.getloadavg()[0]
    rows = []
    if default_backend() != "horovod" and not args.backend and not args.rows_json:
        rows += _horovod_stack_rows(args.other_stack, args.quick)
    spark = get_spark("local", app_name="bench-horovod", master="local[2]",
                      conf={"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false"})
    try:
        for backend in backends:
            for case in CASES[mode]:
                infos = _dataset(spark, root / "data", case, backend)
                for ranks, threads in LAYOUTS:
                    row = _run(spark, case, infos, backend, ranks, threads,
                               root / "runs" / backend / f"{case['model']}-{ranks}x{threads}")
                    print(f"[bench horovod] {row}", file=sys.stderr, flush=True)
                    rows.append(row)
    finally:
        spark.stop()
    if args.rows_json:
        Path(args.rows_json).write_text(json.dumps(rows))
        return 0
    for row in rows:
        base = next(r for r in rows if [r[k] for k in ("stack", "backend", "model", "ranks", "threads_per_rank")]
                    == [row["stack"], row["backend"], row["model"], 1, 1])
        row["speedup"] = row["images_per_s"] / base["images_per_s"]
        row["efficiency"] = row["speedup"] / (row["ranks"] * row["threads_per_rank"])
    # Around a run the load includes the run's own ranks (and the tail of the one before), so only the
    # load before the first run says whether other work shared the machine.
    state = (f"LOADED by other work (1-minute load average {load_at_start:.1f} before the first run): rerun on a "
             "quiet machine; " if load_at_start > 1.0 else f"quiet (load average {load_at_start:.1f} before the "
             "first run); ")
    note = (f"The machine was {state}load_avg is the 1-minute load average around each run, the benchmark's own "
            "ranks included. Ideal speed-up on 2 cores: 2 (efficiency 1).\n")
    columns = ["stack", "backend", "model", "image_px", "ranks", "threads_per_rank", "batch_per_rank",
               "steps_per_epoch", "epochs", "images_per_s", "speedup", "efficiency", "wall_s", "load_avg"]
    name = "horovod-quick" if args.quick else "horovod"
    md = write_results(name, "Distributed training on Spark (Horovod, tf.distribute): images per second, 1 vs 2 ranks",
                       [("Throughput", markdown_table(rows, columns) + "\n" + note),
                        ("How", __doc__.split("\n\n", 2)[2])], {"mode": mode, "rows": rows})
    print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
