"""spark-submit entry point: ``spark-submit jobs/glaucoma_stats.py --input PATH --output DIR [...]``."""

import sys

from scilens.cli import main

if __name__ == "__main__":
    sys.exit(main(["glaucoma-stats", *sys.argv[1:]]))
