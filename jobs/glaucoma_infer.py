"""spark-submit entry point: ``spark-submit jobs/glaucoma_infer.py --input PATH --output DIR [...]``."""

import sys

from scilens.cli import main

if __name__ == "__main__":
    sys.exit(main(["glaucoma-infer", *sys.argv[1:]]))
