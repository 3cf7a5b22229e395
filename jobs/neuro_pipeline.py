"""Deprecated alias of ``jobs/neuro.py`` (entry points are named after their jobs); removed in the next release."""

import sys

from scilens.cli import main

if __name__ == "__main__":
    print("scilens: jobs/neuro_pipeline.py is deprecated, use jobs/neuro.py",
          "(same arguments; config conf/neuro.yaml)", file=sys.stderr)
    sys.exit(main(["neuro", *sys.argv[1:]]))
