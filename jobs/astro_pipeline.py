"""Deprecated alias of ``jobs/astro.py`` (entry points are named after their jobs); removed in the next release."""

import sys

from scilens.cli import main

if __name__ == "__main__":
    print("scilens: jobs/astro_pipeline.py is deprecated, use jobs/astro.py",
          "(same arguments; config conf/astro.yaml)", file=sys.stderr)
    sys.exit(main(["astro", *sys.argv[1:]]))
