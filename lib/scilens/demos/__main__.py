"""``python -m scilens.demos``: run the demos (:mod:`scilens.demos.runner`)."""

import sys

from scilens.demos.runner import main

sys.exit(main())
