"""Model assertions on Spark (Kang et al.'s model assertions, consistency assertions and Fixy's learned ones).

An assertion reads a model's inputs and outputs as a Spark DataFrame and gives a severity per row or per
group (0 = abstain); :class:`~scilens.assertions.checker.Checker` registers assertions and runs them all
into one table: ``assertion``, ``key`` (map<string,string>: the row's key columns, or a per-group
assertion's group columns, values as text), ``severity`` (double > 0; abstentions are not written) and
``detail``. Kinds, each with a documented config:

* :class:`~scilens.assertions.per_row.PerRowAssertion` -- a vectorised predicate or score over columns;
* :class:`~scilens.assertions.consistency.IdentifierConsistencyAssertion` -- an attribute constant per
  identifier;
* :class:`~scilens.assertions.consistency.SequenceConsistencyAssertion` -- at most ``allowed_transitions``
  changes within ``window`` along an ordered key;
* :class:`~scilens.assertions.consistency.CrossConsistencyAssertion` -- two outputs for one item agree;
* :class:`~scilens.assertions.learned.LearnedAssertion` -- class-conditional KDEs of trusted rows' features.

Bad input is refused before running (:class:`scilens.core.inputs.InputError`); a row or group on which an
assertion raises becomes a ``_rejected`` row (:mod:`scilens.core.quarantine`) naming the assertion, and
the rest run. The kernels (:mod:`~scilens.assertions.density`,
:func:`~scilens.assertions.consistency.window_transitions`) are numpy, without Spark.
"""

from scilens.assertions.checker import Checker, CheckResult
from scilens.assertions.common import RESULT_SCHEMA, Assertion
from scilens.assertions.consistency import (
    CrossConsistencyAssertion,
    IdentifierConsistencyAssertion,
    SequenceConsistencyAssertion,
)
from scilens.assertions.learned import LearnedAssertion
from scilens.assertions.per_row import PerRowAssertion

__all__ = [
    "RESULT_SCHEMA",
    "Assertion",
    "CheckResult",
    "Checker",
    "CrossConsistencyAssertion",
    "IdentifierConsistencyAssertion",
    "LearnedAssertion",
    "PerRowAssertion",
    "SequenceConsistencyAssertion",
]
