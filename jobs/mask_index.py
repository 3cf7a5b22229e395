"""Entry point: ``spark-submit jobs/mask_index.py --input MASKS --output DIR ...`` (scilens mask-index)."""

import sys

from scilens.cli import main

if __name__ == "__main__":
    sys.exit(main(["mask-index", *sys.argv[1:]]))
