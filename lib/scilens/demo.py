"""Deprecated alias of :mod:`scilens.demos` (``python -m scilens.demo`` still runs every demo).

    python -m scilens.demo --output demo-output [--only JOB ...]
"""

from __future__ import annotations

import sys

from scilens.demos.runner import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m scilens.demo"))
