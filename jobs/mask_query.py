"""Entry point: ``spark-submit jobs/mask_query.py --input INDEX --output DIR ...`` (scilens mask-query)."""

import sys

from scilens.cli import main

if __name__ == "__main__":
    sys.exit(main(["mask-query", *sys.argv[1:]]))
