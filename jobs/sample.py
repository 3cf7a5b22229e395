"""Entry point: ``spark-submit jobs/sample.py --input PATH --output DIR ...`` (scilens sample)."""

import sys

from scilens.cli import main

if __name__ == "__main__":
    sys.exit(main(["sample", *sys.argv[1:]]))
