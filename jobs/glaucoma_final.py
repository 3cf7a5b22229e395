"""spark-submit entry point: ``spark-submit jobs/glaucoma_final.py --input PATH --output DIR [...]``."""

import sys

from scilens.cli import main

if __name__ == "__main__":
    sys.exit(main(["glaucoma-final", *sys.argv[1:]]))
