"""What every benchmark shares: the machine description, timing, and the result table writers.

Benchmarks compare implementations side by side in one run and report ratios,
because this machine is shared and noisy; absolute seconds are kept for context.
Each writes ``bench/results/<name>.json`` and ``bench/results/<name>.md``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
WORK = Path(__file__).resolve().parent / "work"


def machine() -> dict[str, Any]:
    """CPU, cores, memory and the versions that matter for a result table."""
    from scilens.core.manifest import package_versions

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_gib, 1),
            "os": platform.platform(), "java": java[0] if java else "", "versions": package_versions(),
            "date": dt.date.today().isoformat()}


@contextmanager
def stopwatch() -> Any:
    """``with stopwatch() as t: ...`` then ``t.seconds``."""
    class _T:
        seconds = 0.0
    t = _T()
    start = time.perf_counter()
    yield t
    t.seconds = time.perf_counter() - start


def best_of(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    """Run ``fn`` ``repeat`` times; return (fastest seconds, last result)."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A GitHub markdown table of ``rows`` (floats printed with 3 significant digits)."""
    if not rows:
        return "(no rows)\n"
    columns = list(columns or rows[0].keys())

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_results(name: str, title: str, sections: Sequence[tuple[str, str]], data: dict[str, Any]) -> Path:
    """Write ``results/<name>.md`` (title, machine, then (heading, markdown) sections) and ``<name>.json``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    info = machine()
    v = info["versions"]
    header = (f"# {title}\n\n"
              f"Machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB; {info['os']}; "
              f"{info['java']}; Python {v.get('python')}, pyspark {v.get('pyspark')}, numpy {v.get('numpy')}. "
              f"Run {info['date']} with `{' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}`.\n")
    body = "".join(f"\n## {heading}\n\n{text}" for heading, text in sections)
    md = RESULTS / f"{name}.md"
    md.write_text(header + body)
    (RESULTS / f"{name}.json").write_text(json.dumps({"machine": info, **data}, indent=2, default=str) + "\n")
    return md


# ----------------------------------------------------------------------------- one run, measured

def _pss(pid: int) -> int:
    """Proportional set size (bytes): resident pages, shared ones divided among their sharers."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class TreeMonitor:
    """Peak summed PSS and total CPU time of a process and its descendants, sampled every 0.1 s.

    PSS, not RSS: Spark's Python workers are forked from one daemon and share
    its pages, which RSS would count once per worker.

    CPU is each process's user + system time as last seen, summed over every
    process seen: the JVM that PySpark starts is never reaped by its parent,
    so ``wait4`` cannot account for it. A process's last 0.1 s may be missed.
    """

    def __init__(self, pid: int):
        import psutil

        self.root = psutil.Process(pid)
        self.peak = 0
        self.cpu: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = 0
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                procs = []
            for proc in procs:
                try:
                    with proc.oneshot():
                        total += _pss(proc.pid)
                        times = proc.cpu_times()
                        self.cpu[(proc.pid, proc.create_time())] = times.user + times.system
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(0.1)

    def stop(self) -> tuple[int, float]:
        """Stop sampling; return (peak PSS bytes, CPU seconds)."""
        self._stop.set()
        self._thread.join()
        return self.peak, sum(self.cpu.values())


def run_process(cmd: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> dict[str, Any]:
    """Run ``cmd``; return wall seconds, CPU seconds and peak memory (PSS bytes) of its process tree, exit code.

    CPU time is what a run costs whatever else shares the machine; wall time is not.
    """
    start = time.perf_counter()
    with open(log or os.devnull, "w") as sink:
        proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=sink, stderr=subprocess.STDOUT,
                                cwd=ROOT)
        monitor = TreeMonitor(proc.pid)
        code = proc.wait()
    peak, cpu = monitor.stop()
    return {"wall": time.perf_counter() - start, "cpu": cpu, "peak_memory": peak, "returncode": code}


def spark_event_totals(event_dir: Path) -> dict[str, int]:
    """Shuffle bytes written and read, input bytes and task count, summed over a Spark event log directory.

    Read from the task-end events of ``spark.eventLog.dir``: the counts the UI shows, kept after the
    application has gone.
    """
    totals = {"shuffle_write_bytes": 0, "shuffle_read_bytes": 0, "input_bytes": 0, "tasks": 0}
    for log in Path(event_dir).rglob("*"):  # Spark 4 rolls its logs into eventlog_v2_<app>/events_<n>_<app>
        if not log.is_file() or log.name.startswith("appstatus"):
            continue
        with open(log) as handle:
            for line in handle:
                if '"SparkListenerTaskEnd"' not in line:
                    continue
                metrics = json.loads(line).get("Task Metrics") or {}
                totals["tasks"] += 1
                totals["shuffle_write_bytes"] += metrics.get("Shuffle Write Metrics", {}).get(
                    "Shuffle Bytes Written", 0)
                read = metrics.get("Shuffle Read Metrics", {})
                totals["shuffle_read_bytes"] += read.get("Remote Bytes Read", 0) + read.get("Local Bytes Read", 0)
                totals["input_bytes"] += metrics.get("Input Metrics", {}).get("Bytes Read", 0)
    return totals


def load_average() -> float:
    """The 1-minute load average."""
    return os.getloadavg()[0]


def wait_for_quiet(threshold: float | None, timeout: float = 900.0) -> float:
    """Wait (up to ``timeout`` s) until the 1-minute load average is below ``threshold``; return the load.

    A timing run started on a loaded machine measures the other work too; the issue's rule is a load
    below 0.5 before each run. ``None`` does not wait.
    """
    deadline = time.monotonic() + timeout
    while threshold is not None and load_average() >= threshold and time.monotonic() < deadline:
        time.sleep(5)
    return load_average()


# ----------------------------------------------------------------------------- scaling: measured and projected

NETWORK_BYTES_PER_S = 1.25e9
"""Per executor: a 10 Gbit/s link, what a cloud VM of a few cores gets (the projection's assumption)."""
STORAGE_BYTES_PER_S = 2e8
"""Per executor: reading inputs from object storage (S3/ADLS) at ~200 MB/s (the projection's assumption)."""


def project(records: int, executors: int, cores_per_executor: int, cpu_per_record: float, input_bytes_per_record: float,
            shuffle_bytes_per_record: float, fixed_s: float) -> dict[str, float]:
    """Projected wall seconds of ``records`` records on ``executors`` x ``cores_per_executor`` task slots.

    A deliberately simple model, every term measured here or stated: records run in waves of one record per
    slot, each taking its measured CPU seconds on one core (the measured CPU includes the driver's and the
    JVM's share, so this errs slow); inputs are read from object storage and the shuffle crosses the network
    at the per-executor rates above, not overlapped with compute (errs slow again); plus the fixed start-up
    cost measured here (interpreter, JVM, session).
    """
    import math

    slots = executors * cores_per_executor
    compute = math.ceil(records / slots) * cpu_per_record
    read = records * input_bytes_per_record / (executors * STORAGE_BYTES_PER_S)
    shuffle = records * shuffle_bytes_per_record / (executors * NETWORK_BYTES_PER_S)
    return {"records": records, "executors": executors, "slots": slots, "compute s": compute, "read s": read,
            "shuffle s": shuffle, "fixed s": fixed_s, "projected wall s": compute + read + shuffle + fixed_s,
            "projected hours": (compute + read + shuffle + fixed_s) / 3600}


def plot_scaling(rows: Sequence[dict[str, Any]], x: str, impl_key: str, path: Path, title: str) -> Path:
    """Wall and CPU seconds per record against the number of records, one line per implementation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for impl in dict.fromkeys(r[impl_key] for r in rows):
        mine = sorted((r for r in rows if r[impl_key] == impl and r.get("wall s / record") is not None),
                      key=lambda r: r[x])
        xs = [r[x] for r in mine]
        axes[0].plot(xs, [r["wall s / record"] for r in mine], marker="o", label=impl)
        axes[1].plot(xs, [r["CPU s / record"] for r in mine], marker="o", label=impl)
    for ax, label in zip(axes, ("wall seconds per record", "CPU seconds per record")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel(x)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
