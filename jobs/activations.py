"""Entry point: ``spark-submit jobs/activations.py --input PATH --output DIR ...`` (scilens activations)."""

import sys

from scilens.cli import main

if __name__ == "__main__":
    sys.exit(main(["activations", *sys.argv[1:]]))
