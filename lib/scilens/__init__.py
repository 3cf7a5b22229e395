"""scilens: Spark-native scientific image analytics and deep-learning model diagnosis."""

from scilens.core import arrow_structs as _arrow_structs

__version__ = "0.1.0"

# Before any pandas UDF of ours returns a struct: see scilens.core.arrow_structs.
_arrow_structs.install()
