"""``make demo``: every job's demo, end to end on small real and generated data, in local mode.

    python -m scilens.demo --output demo-output [--only JOB ...]

Each job module may define ``demo(root)`` (see :mod:`scilens.jobs`); its
inputs and outputs go to ``<output>/<job>/``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from scilens.cli import JOBS


def _demos() -> list[tuple[str, object]]:
    found = []
    for name, module_name in JOBS.items():
        module = importlib.import_module(module_name)
        if hasattr(module, "demo"):
            found.append((getattr(module, "DEMO_RANK", 100), name, module.demo))
    return [(name, fn) for _, name, fn in sorted(found)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scilens.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="demo-output", help="directory for inputs and results")
    parser.add_argument("--only", nargs="*", help="run only these jobs' demos")
    args = parser.parse_args(argv)
    root = Path(args.output).absolute()
    report = []
    for name, demo in _demos():
        if args.only and name not in args.only:
            continue
        start = time.perf_counter()
        print(f"\n=== demo: {name} ===", flush=True)
        where = demo(root / name)
        report.append(f"[{name}] ({time.perf_counter() - start:.0f} s)\n" +
                      "\n".join(f"  {line}" for line in where.splitlines()))
    print("\nscilens demo finished. Look at:\n" + "\n".join(report))
    print("\nRead a table with: .venv/bin/python -c \"import pandas as pd; print(pd.read_parquet('PATH'))\"")
    return 0


if __name__ == "__main__":
    sys.exit(main())
