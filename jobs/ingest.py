"""spark-submit entry point: ``spark-submit jobs/ingest.py --input PATH --output DIR [...]``."""

import sys

from scilens.cli import main

if __name__ == "__main__":
    sys.exit(main(["ingest", *sys.argv[1:]]))
