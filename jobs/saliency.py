"""Entry point: ``spark-submit jobs/saliency.py --input IMAGES --output DIR ...`` (scilens saliency)."""

import sys

from scilens.cli import main

if __name__ == "__main__":
    sys.exit(main(["saliency", *sys.argv[1:]]))
