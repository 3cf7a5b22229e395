"""Entry point: ``spark-submit jobs/train_model.py --input PATH --output DIR ...`` (scilens train-model)."""

import sys

from scilens.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-model", *sys.argv[1:]]))
