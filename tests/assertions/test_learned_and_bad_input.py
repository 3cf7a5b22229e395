"""A learned assertion ranks injected label errors and outliers on top; bad input is refused before running.

A raising row is quarantined in test_reference.py (it shares that run).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import types as T

from scilens.assertions import (
    Checker,
    IdentifierConsistencyAssertion,
    LearnedAssertion,
    SequenceConsistencyAssertion,
)
from scilens.assertions.density import bandwidths
from scilens.core.inputs import InputError

N_CLEAN, N_FLIPPED, N_FAR = 1000, 10, 5


def synthetic(seed: int = 7) -> tuple[pd.DataFrame, set[int]]:
    """Two classes, features N((0,0), I) and N((8,0), I); injected rows are untrusted (the model disagrees).

    Injected: N_FLIPPED rows of class a labelled b (label errors) and N_FAR rows of class a at (0, 7).
    """
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 1, (N_CLEAN, 2))
    b = rng.normal(0, 1, (N_CLEAN, 2)) + np.array([8.0, 0.0])
    flipped = rng.normal(0, 1, (N_FLIPPED, 2))
    far = rng.normal(0, 0.2, (N_FAR, 2)) + np.array([0.0, 7.0])
    x = np.vstack([a, b, flipped, far])
    label = ["a"] * N_CLEAN + ["b"] * N_CLEAN + ["b"] * N_FLIPPED + ["a"] * N_FAR
    trusted = [True] * (2 * N_CLEAN) + [False] * (N_FLIPPED + N_FAR)
    frame = pd.DataFrame({"id": np.arange(len(x)), "label": label, "x": x[:, 0], "y": x[:, 1],
                          "trusted": trusted})
    return frame, set(range(2 * N_CLEAN, len(x)))


def test_learned_assertion_ranks_injected_rows_on_top(spark):
    # Bound: an injected row lies >= ~4.5 sd from its labelled class's mean (a flipped row within 3.5 sd of
    # (0,0) is >= 4.5 from (8,0); the far rows are 7 from (0,0)), while the chance that any of 2000 clean
    # 2-D Gaussian rows lies beyond 4.5 sd is 2000 exp(-4.5^2/2) = 3e-2: precision at 15 is 1 with
    # probability > 97% over seeds (this seed is fixed).
    frame, injected = synthetic()
    df = spark.createDataFrame(frame)
    checker = Checker(key="id")
    checker.register(LearnedAssertion("label", ["x", "y"], trusted="trusted"), name="density")
    result = checker.run(df)
    with result.sized_batches():
        scored = result.severities.toPandas()
        assert result.rejected.count() == 0
    result.unpersist()
    assert len(scored) > 2 * N_CLEAN - 10  # every row is scored; only the most typical ones abstain (0)
    top = scored.nlargest(len(injected), "severity")
    flagged = {int(dict(k)["id"]) for k in top["key"]}
    assert flagged == injected
    assert top["detail"].str.contains("tail probability 0").all()  # beyond every trusted row


def test_bandwidth_rules():
    sample = np.random.default_rng(0).normal(0, [1.0, 3.0], (400, 2))
    sd = sample.std(axis=0, ddof=1)
    assert np.allclose(bandwidths(sample, "scott"), sd * 400 ** (-1 / 6))
    assert np.allclose(bandwidths(sample, "silverman"), sd * (4 / (4 * 400)) ** (1 / 6))
    constant = np.ones((10, 1))
    assert bandwidths(constant)[0] == pytest.approx(1e-6)


@pytest.fixture(scope="module")
def small(spark):
    """30 rows of 10 eyes; classes a and b have 2 trusted rows each."""
    rows = [(i, i % 3, i // 3, f"s{i}", float(i), "a" if i % 2 else "b", i < 4) for i in range(30)]
    schema = T.StructType([T.StructField("id", T.LongType()), T.StructField("eye", T.LongType()),
                           T.StructField("scan", T.LongType()), T.StructField("text", T.StringType()),
                           T.StructField("p", T.DoubleType()), T.StructField("cls", T.StringType()),
                           T.StructField("trusted", T.BooleanType())])
    return spark.createDataFrame(rows, schema)


def test_a_missing_column_is_refused_naming_it(small):
    checker = Checker(key="id")
    checker.register(IdentifierConsistencyAssertion("eye", "diagnosis"))
    with pytest.raises(InputError, match="'diagnosis'"):
        checker.run(small)
    keyless = Checker(key="patient")
    keyless.register(IdentifierConsistencyAssertion("eye", "p"))
    with pytest.raises(InputError, match="'patient'"):
        keyless.run(small)


def test_a_window_on_an_unordered_key_is_refused(small):
    checker = Checker(key="id")
    checker.register(SequenceConsistencyAssertion("eye", "text", attribute="p"))
    with pytest.raises(InputError, match="'text' is string"):
        checker.run(small)


def test_too_few_trusted_rows_are_refused_naming_class_and_count(small):
    checker = Checker(key="id")
    checker.register(LearnedAssertion("cls", ["p"], trusted="trusted", min_trusted=3))
    with pytest.raises(InputError, match=r"class 'a' has 2.*class 'b' has 2"):
        checker.run(small)
