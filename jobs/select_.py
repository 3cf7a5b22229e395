"""Entry point: ``spark-submit jobs/select_.py --input TABLE --output DIR ...`` (scilens select)."""

import sys

from scilens.cli import main

if __name__ == "__main__":
    sys.exit(main(["select", *sys.argv[1:]]))
