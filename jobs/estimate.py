"""Entry point: ``spark-submit jobs/estimate.py --input TABLE --output DIR ...`` (scilens estimate)."""

import sys

from scilens.cli import main

if __name__ == "__main__":
    sys.exit(main(["estimate", *sys.argv[1:]]))
