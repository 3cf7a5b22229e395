"""``make demo``: every job's demo, end to end on small real and generated data, in local mode.

    python -m scilens.demos --output demo-output [--only JOB ...]

Each job's inputs and outputs go to ``<output>/<job>/``; the run ends by writing
``<output>/index.html`` (:mod:`scilens.demos.index`) and printing its path last.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from scilens.demos import DEMOS
from scilens.demos.index import Shown, as_text, write_index


def main(argv: list[str] | None = None) -> int:
    """Run the demos (all, or ``--only`` some) and write the index page.

    Parameters
    ----------
    argv
        Command-line arguments; ``sys.argv[1:]`` when None.

    Returns
    -------
    int
        The exit status, 0.
    """
    parser = argparse.ArgumentParser(prog="python -m scilens.demos", description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="demo-output", help="directory for inputs and results")
    parser.add_argument("--only", nargs="*", help="run only these jobs' demos")
    args = parser.parse_args(argv)
    root = Path(args.output).absolute()
    report = []
    shown: dict[str, list[Shown]] = {}
    for name, demo in DEMOS.items():
        if args.only and name not in args.only:
            # A demo run earlier into the same directory still gets its links.
            if (root / name).is_dir():
                shown[name] = []
            continue
        start = time.perf_counter()
        print(f"\n=== demo: {name} ===", flush=True)
        shown[name] = demo(root / name)
        report.append(f"[{name}] ({time.perf_counter() - start:.0f} s)\n" +
                      "\n".join(f"  {line}" for line in as_text(shown[name]).splitlines()))
    print("\nscilens demo finished. Look at:\n" + "\n".join(report))
    print("\nRead a table with: .venv/bin/python -c \"import pandas as pd; print(pd.read_parquet('PATH'))\"")
    index = write_index(root, shown)
    print("\nEvery job's report, figure and outputs on one page:")
    print(index)
    return 0
