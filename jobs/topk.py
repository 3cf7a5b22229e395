"""Entry point: ``spark-submit jobs/topk.py --input INDEX --output DIR ...`` (scilens topk)."""

import sys

from scilens.cli import main

if __name__ == "__main__":
    sys.exit(main(["topk", *sys.argv[1:]]))
