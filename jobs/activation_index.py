"""Entry point: ``spark-submit jobs/activation_index.py --input STORE --output DIR ...`` (scilens activation-index)."""

import sys

from scilens.cli import main

if __name__ == "__main__":
    sys.exit(main(["activation-index", *sys.argv[1:]]))
