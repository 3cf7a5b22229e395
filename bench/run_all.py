"""Run every benchmark (bench/<name>.py with a main()) one after the other: ``make bench``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    names = sys.argv[1:] or sorted(p.stem for p in HERE.glob("*.py") if p.stem not in ("common", "run_all", "__init__"))
    failed = []
    for name in names:
        print(f"=== bench {name} ===", flush=True)
        if subprocess.run([sys.executable, "-m", f"bench.{name}"], cwd=HERE.parent).returncode != 0:
            failed.append(name)
    sys.exit(f"failed: {', '.join(failed)}" if failed else 0)
