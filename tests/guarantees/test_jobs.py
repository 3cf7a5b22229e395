"""The Spark wrappers and the ``estimate`` / ``select`` jobs: the in-memory answers, the oracle on sampled rows only."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from scilens import cli
from scilens.core.inputs import InputError
from scilens.guarantees.aggregation import estimate_mean, relative_met
from scilens.guarantees.oracle import Oracle
from scilens.guarantees.selection import select_precision, select_recall
from scilens.guarantees.stages import estimate_mean_spark, select_spark
from scilens.jobs.select import recall_curve
from scilens.synth.proxies import proxy_population

ROWS = 3000


@pytest.fixture(scope="module")
def population() -> pd.DataFrame:
    """A strong proxy's population with the oracle's value and a 0/1 label, in shuffled order."""
    data = proxy_population("strong", n=ROWS, seed=3)
    return data.sample(frac=1.0, random_state=1).reset_index(drop=True)  # not in id order: the wrapper sorts


@pytest.fixture(scope="module")
def table(spark, population, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("guarantees") / "table.parquet"
    spark.createDataFrame(population).repartition(3).write.parquet(str(path))
    return str(path)


def _by_id(population: pd.DataFrame) -> pd.DataFrame:
    return population.sort_values("id").reset_index(drop=True)


@pytest.mark.parametrize("method", ["uniform", "blazeit++", "abae"])
def test_spark_estimate_equals_the_in_memory_one(spark, population, table, method):
    df = spark.read.parquet(table)
    found = estimate_mean_spark(df, "proxy", "label", 0.03, 0.05, method, seed=5, pilot=300)
    oracle = Oracle("label")
    expected = estimate_mean(_by_id(population), "proxy", oracle, 0.03, 0.05, method, seed=5, pilot=300)
    got = found.estimate
    assert (got.estimate, got.low, got.high, got.history) == (expected.estimate, expected.low, expected.high,
                                                                expected.history)
    assert got.oracle_calls == expected.oracle_calls == oracle.calls < ROWS  # a sample, not a census
    assert np.array_equal(np.sort(got.sampled_ids), np.sort(expected.sampled_ids))
    # The oracle saw the sampled rows only, each once, and the sample carries their true values.
    sample = found.sample
    assert len(sample) == got.oracle_calls and sample["id"].is_unique
    assert set(sample["id"]) == set(expected.sampled_ids)
    truth = population.set_index("id")
    assert np.array_equal(sample["oracle"].to_numpy(), truth.loc[sample["id"], "label"].to_numpy())
    assert np.array_equal(sample["proxy"].to_numpy(), truth.loc[sample["id"], "proxy"].to_numpy())
    # In draw order: the method's, and (uniform) the seeded permutation's prefix.
    assert np.array_equal(sample["id"].to_numpy(), expected.drawn_ids)
    assert list(sample["draw"]) == list(range(len(sample))) and sample["call"].is_monotonic_increasing
    assert (sample["draws"] == 1).all()  # without replacement
    if method == "uniform":
        prefix = np.random.default_rng(5).permutation(ROWS)[:got.oracle_calls]
        assert np.array_equal(expected.drawn_ids, _by_id(population)["id"].to_numpy()[prefix])
    assert found.rows == ROWS
    assert got.low <= population["label"].mean() <= got.high  # the truth, here; 1 - delta of the time in general


@pytest.mark.parametrize("target", ["recall", "precision"])
def test_spark_selection_equals_the_in_memory_one(spark, population, table, target):
    df = spark.read.parquet(table)
    found = select_spark(df, "proxy", "label", target, 0.9, 0.05, budget=400, method="supg++", bound="clt", seed=2)
    chooser = select_recall if target == "recall" else select_precision
    oracle = Oracle("label")
    expected = chooser(_by_id(population), "proxy", oracle, 0.9, 0.05, 400, "supg++", "clt", seed=2)
    got = found.selection
    assert got.threshold == expected.threshold and np.array_equal(got.ids, expected.ids)
    assert got.oracle_calls == expected.oracle_calls == oracle.calls == len(found.sample) <= 400
    # Spark's selection is the proxy cut union the sampled positives: the in-memory ids.
    selected = np.sort(found.selected.select("id").toPandas()["id"].to_numpy())
    assert np.array_equal(selected, expected.ids)
    assert len(expected.ids) > 0
    # The sample: every draw (with replacement) counted, in the order first drawn.
    sample = found.sample
    assert len(expected.drawn_ids) == 400 == sample["draws"].sum()
    _, first = np.unique(expected.drawn_ids, return_index=True)
    assert np.array_equal(sample["id"].to_numpy(), expected.drawn_ids[np.sort(first)])
    if target == "recall":  # the truth on this population (a strong proxy, 400 draws)
        assert population.loc[population["id"].isin(selected), "label"].sum() >= 0.9 * population["label"].sum()


def test_pandas_input_and_a_callable_oracle(population):
    calls: list[int] = []

    def halved_label(rows: pd.DataFrame) -> np.ndarray:
        calls.append(len(rows))
        return rows["label"].to_numpy() * 0.5  # every column of the sampled rows is there

    found = estimate_mean_spark(population, "proxy", halved_label, 0.03, 0.05, "uniform", seed=1)
    halved = Oracle(lambda rows: rows["label"].to_numpy() * 0.5)
    expected = estimate_mean(_by_id(population), "proxy", halved, 0.03, 0.05, "uniform", seed=1)
    assert sum(calls) == found.estimate.oracle_calls == expected.oracle_calls == halved.calls
    assert found.estimate.estimate == expected.estimate
    assert found.estimate.estimate == pytest.approx(population["label"].mean() / 2.0, abs=0.03)


def test_recall_curve_counts_the_sampled_positives():
    sample = pd.DataFrame({"proxy": [0.9, 0.8, 0.8, 0.5, 0.1], "oracle": [1, 0, 1, 1, 0],
                           "mass": [1.0, 1.0, 1.0, 2.0, 4.0], "draws": [1, 1, 2, 1, 1]})
    curve = recall_curve(sample)
    assert list(curve["cut"]) == [0.9, 0.8, 0.5, 0.1]
    assert np.allclose(curve["sample_recall"], [1 / 3, 2 / 3, 1, 1])
    # positive mass x draws: 1 (0.9), 2 (0.8, drawn twice), 2 (0.5): of 5
    assert np.allclose(curve["weighted_recall"], [1 / 5, 3 / 5, 1, 1])


def test_estimate_job_writes_what_it_says(table, tmp_path, population):
    out = tmp_path / "estimate"
    assert cli.main(["estimate", "--input", table, "--output", str(out), "--set", "proxy=proxy",
                     "--set", "oracle=label", "--set", "method=blazeit++", "--set", "pilot=300",
                     "--set", "where=id < 2500", "--set", "seed=4"]) == 0
    answer = json.loads((out / "answer.json").read_text())
    part = population[population["id"] < 2500]
    expected = estimate_mean(_by_id(part), "proxy", Oracle("label"), 0.03, 0.05, "blazeit++", seed=4, pilot=300)
    assert answer["rows"] == 2500 and answer["method"] == "blazeit++"
    assert (answer["estimate"], answer["low"], answer["high"], answer["oracle_calls"]) == (
        expected.estimate, expected.low, expected.high, expected.oracle_calls)
    assert answer["high"] - answer["low"] <= 2 * 0.03 + 1e-12
    sample = pd.read_parquet(out / "sample.parquet")
    assert len(sample) == answer["oracle_calls"] and set(sample["id"]) == set(expected.sampled_ids)
    assert (out / "interval.png").stat().st_size > 0 and "interval.png" in (out / "report.html").read_text()


def test_estimate_job_relative_error(table, tmp_path, population):
    out = tmp_path / "relative"
    assert cli.main(["estimate", "--input", table, "--output", str(out), "--set", "oracle=value",
                     "--set", "method=blazeit++", "--set", "pilot=300", "--set", "error=0.05",
                     "--set", "relative=true"]) == 0
    answer = json.loads((out / "answer.json").read_text())
    expected = estimate_mean(_by_id(population), "proxy", Oracle("value"), 0.05, 0.05, "blazeit++", pilot=300,
                             relative=True)
    assert (answer["estimate"], answer["oracle_calls"], answer["relative"]) == (expected.estimate,
                                                                                expected.oracle_calls, True)
    assert relative_met(answer["estimate"], answer["low"], answer["high"], 0.05) and answer["oracle_calls"] < ROWS


def test_select_job_writes_what_it_says(spark, table, tmp_path, population):
    out = tmp_path / "select"
    assert cli.main(["select", "--input", table, "--output", str(out), "--set", "proxy=proxy",
                     "--set", "oracle=label", "--set", "budget=300", "--set", "method=supg",
                     "--set", "bound=conservative"]) == 0
    answer = json.loads((out / "answer.json").read_text())
    expected = select_recall(_by_id(population), "proxy", Oracle("label"), 0.9, 0.05, 300, "supg", "conservative")
    selected = spark.read.parquet(str(out / "selected.parquet")).toPandas()
    assert np.array_equal(np.sort(selected["id"].to_numpy()), expected.ids)
    assert answer["selected"] == len(expected.ids) and answer["oracle_calls"] == expected.oracle_calls
    assert answer["threshold"] == expected.threshold
    sample = pd.read_parquet(out / "sample.parquet")
    assert set(sample["id"]) == set(expected.sampled_ids) and (sample["mass"] > 0).all()
    assert (out / "recall.png").stat().st_size > 0 and "recall.png" in (out / "report.html").read_text()


def test_bad_input_is_named(spark, population, table, tmp_path, job_log, capsys):
    runs = iter(range(100))

    def fails(*settings: str, job: str = "estimate", source: str = table) -> str:
        """What the failed run said: the job's log and (config errors, before the job) its stderr."""
        args = [a for s in settings for a in ("--set", s)]
        assert cli.main([job, "--input", source, "--output", str(tmp_path / f"o{next(runs)}"), *args]) != 0
        return "\n".join(job_log) + capsys.readouterr().err

    assert "no column 'score'" in fails("proxy=score", "oracle=label")
    assert "no oracle column 'truth'" in fails("oracle=truth", job="select")
    assert "error: 0.0 is not allowed" in fails("oracle=label", "error=0")
    assert "delta: 1.0 is not allowed" in fails("oracle=label", "delta=1.0")
    assert "delta: 0.0 is not allowed" in fails("oracle=label", "delta=0", job="select")
    assert f"oracle_model {tmp_path}/absent.keras: no such file" in fails(f"oracle_model={tmp_path}/absent.keras")
    assert "oracle: give the column" in fails()
    assert "a relative error is a fraction of the mean, below 1" in fails("oracle=label", "relative=true", "error=1.5")
    # A null proxy value is an error naming its id (nothing is estimated from a population with a hole).
    holed = population.copy()
    holed.loc[holed["id"] == 17, "proxy"] = np.nan
    path = tmp_path / "holed.parquet"
    spark.createDataFrame(holed).write.parquet(str(path))
    assert "null (or not a number) for 1 rows, ids 17" in fails("oracle=label", source=str(path))
    with pytest.raises(InputError, match="ids 17"):
        select_spark(spark.read.parquet(str(path)), "proxy", "label", "recall", 0.9, 0.05, 100)
    # An oracle value outside the declared range is named by id.
    ranged = population.assign(label=population["label"] * 2.0)
    with pytest.raises(InputError, match="outside"):
        estimate_mean_spark(ranged, "proxy", "label", 0.03, 0.05, "uniform")
