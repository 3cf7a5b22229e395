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
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
