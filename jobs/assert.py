"""Entry point: ``spark-submit jobs/assert.py --input OUTPUTS --output DIR ...`` (scilens assert)."""

import sys

from scilens.cli import main

if __name__ == "__main__":
    sys.exit(main(["assert", *sys.argv[1:]]))
