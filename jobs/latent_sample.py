"""Deprecated alias of ``jobs/sample.py`` (entry points are named after their jobs); removed in the next release."""

import sys

from scilens.cli import main

if __name__ == "__main__":
    print("scilens: jobs/latent_sample.py is deprecated, use jobs/sample.py",
          "(same arguments; config conf/sample.yaml)", file=sys.stderr)
    sys.exit(main(["sample", *sys.argv[1:]]))
