"""spark-submit entry point: ``spark-submit jobs/neuro.py --input PATH --output DIR [...]``."""

import sys

from scilens.cli import main

if __name__ == "__main__":
    sys.exit(main(["neuro", *sys.argv[1:]]))
