"""Approximate aggregates: coverage over 200 seeds (in memory), reads of a stored sample, Spark = in-memory.

Plain 95% CLT intervals checked at every doubling covered 95.0% of 2,000 seeds (the mean and count cases
below, before ``within_ci`` split ``1 - confidence`` over its checks): about 190 of 200, so ">= 190 of 200"
was a coin flip for them. The split (the guarantee a data-dependent stop needs) is what makes it hold.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scilens.guarantees.approx import (
    Answer,
    Approx,
    FrameReader,
    Moments,
    Spec,
    Step,
    frame_sample,
    progressive,
    quantile_interval,
)

SEEDS = 200
CONFIDENCE = 0.95
N = 20_000


@pytest.fixture(scope="module")
def population() -> pd.DataFrame:
    """Skewed values (lognormal), ties (Poisson counts), three unequal groups."""
    rng = np.random.default_rng(0)
    return pd.DataFrame({"x": rng.lognormal(0.0, 1.0, N), "k": rng.poisson(3.0, N),
                         "g": rng.choice([0, 1, 2], N, p=[0.5, 0.3, 0.2])})


def _inverted_cdf(values: np.ndarray, q: float) -> float:
    return float(np.quantile(values, q, method="inverted_cdf"))


# (name, query on a builder, full-scan value(s), error): errors chosen so the loop stops at a few percent of N
CASES = {
    "mean": (lambda a: a.mean("x"), lambda p: p.x.mean(), 0.1),
    "sum": (lambda a: a.sum("x"), lambda p: p.x.sum(), 0.1 * N),
    "count-where": (lambda a: a.count(where="x > 2"), lambda p: float((p.x > 2).sum()), 0.02 * N),
    "quantile": (lambda a: a.quantile("x", 0.9), lambda p: _inverted_cdf(p.x.to_numpy(), 0.9), 0.25),
    "quantile-ties": (lambda a: a.quantile("k", 0.5), lambda p: _inverted_cdf(p.k.to_numpy(), 0.5), 0.5),
    "mean-where": (lambda a: a.where("g == 2").mean("x"), lambda p: p.x[p.g == 2].mean(), 0.2),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_95_percent_intervals_cover_the_full_scan_value_in_190_of_200_seeds(population, case):
    query, truth_of, error = CASES[case]
    truth = truth_of(population)
    covered, rows = 0, []
    for seed in range(SEEDS):
        result = query(Approx(FrameReader(frame_sample(population, seed)))).within_ci(CONFIDENCE, error=error,
                                                                                      start_rows=200)
        assert result.half_width <= error
        assert result.method != "exact", "the loop read the whole table: coverage would prove nothing"
        covered += result.low <= truth <= result.high
        rows.append(result.rows_read)
    print(f"\n{case}: {covered}/{SEEDS} intervals cover {truth:.4g}; median rows read {np.median(rows):.0f} of {N}")
    assert covered >= 190


def test_grouped_95_percent_intervals_cover_each_groups_value(population):
    truth = population.groupby("g").x.mean()
    covered, answers = 0, 0
    for seed in range(SEEDS):
        result = Approx(FrameReader(frame_sample(population, seed))).group_by("g").mean("x").within_ci(
            CONFIDENCE, error=0.2, start_rows=200)
        assert result.groups is not None and set(result.groups) == {(0,), (1,), (2,)}
        assert result.rows_read < N
        for (g,), a in result.groups.items():
            assert a.half_width <= 0.2
            covered += a.low <= truth[g] <= a.high
            answers += 1
    print(f"\ngrouped mean: {covered}/{answers} group intervals cover")
    assert covered >= 0.95 * answers


def test_census_answers_are_exact(population):
    a = Approx(FrameReader(frame_sample(population, 0)))
    assert a.mean("x").at(1.0).low == a.mean("x").at(1.0).high == pytest.approx(population.x.mean(), rel=1e-12)
    q = a.quantile("k", 0.3).at(1.0)
    assert q.low == q.high == q.estimate == _inverted_cdf(population.k.to_numpy(), 0.3)
    assert a.group_by("g").count().at(1.0).to_pandas(["g"]).set_index("g")["estimate"].to_dict() == \
        pytest.approx(population.g.value_counts().astype(float).to_dict())
    # count() with neither groups nor condition is the table's size: no row is read
    size = a.count().within_ci(error=1.0)
    assert (size.estimate, size.low, size.high, size.rows_read, size.method) == (N, N, N, 0, "exact")


def test_a_count_without_matches_keeps_an_upper_end(population):
    # no row has x < 0: the normal interval would be [0, 0]; the exact binomial end stays above 0
    result = Approx(FrameReader(frame_sample(population, 1))).count(where="x < 0").at(0.05)
    assert result.estimate == result.low == 0.0
    n = result.rows_read
    assert result.high == pytest.approx(N * (1 - 0.025 ** (1 / n)))
    assert result.method == "clt-fpc+exact-binomial"


def test_moments_merge_like_the_concatenated_values():
    rng = np.random.default_rng(3)
    a, b = rng.normal(5, 2, 300), rng.normal(-1, 1, 17)
    merged, whole = Moments.of(a) + Moments.of(b), Moments.of(np.concatenate([a, b]))
    assert merged.n == whole.n
    assert merged.mean == pytest.approx(whole.mean, rel=1e-12)
    assert merged.variance == pytest.approx(np.var(np.concatenate([a, b]), ddof=1), rel=1e-12)


def test_quantile_interval_ranks_match_the_binomial_limit_for_a_large_table():
    # drawing 400 of 10^9 rows is sampling with replacement: the ranks are the binomial interval's
    from scipy import stats

    values = np.arange(1, 401, dtype=float)
    _, low, high = quantile_interval(values, 0.5, 0.95, 10**9)
    assert low == stats.binom.ppf(0.025, 400, 0.5) and high == stats.binom.ppf(0.975, 400, 0.5) + 1


class _TimedReader:
    """Rows in memory; each read advances a fake clock by a fixed cost plus a cost per row read."""

    def __init__(self, frame: pd.DataFrame, fixed: float, per_row: float) -> None:
        self.inner = FrameReader(frame)
        self.rows_total, self.columns = self.inner.rows_total, self.inner.columns
        self.fixed, self.per_row, self.now = fixed, per_row, 0.0

    def read(self, spec: Spec, low: float, high: float) -> Step:
        step = self.inner.read(spec, low, high)
        self.now += self.fixed + self.per_row * step.rows
        return step


def test_within_time_stops_before_the_step_that_would_not_fit(population):
    reader = _TimedReader(frame_sample(population, 4), fixed=0.5, per_row=1e-3)
    result = progressive(reader, Spec("mean", "x"), CONFIDENCE, seconds=4.0, start_rows=200,
                         clock=lambda: reader.now)
    # steps read ~200, 200, 400, 800 rows (0.7, 0.7, 0.9, 1.3 s: 3.6 s); the next (~1600 rows, 2.1 s) would not fit
    assert result.seconds <= 4.0
    assert result.seconds + 0.5 + 1e-3 * result.rows_read > 4.0
    assert result.fraction == pytest.approx(0.08)
    assert result.low < result.estimate < result.high and math.isfinite(result.high)


def test_bad_arguments_are_named(population):
    a = Approx(FrameReader(frame_sample(population, 0)))
    with pytest.raises(ValueError, match=r"no column 'y'.*columns are x, k, g"):
        a.mean("y")
    with pytest.raises(ValueError, match="no column 'h'"):
        a.group_by("h")
    with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\), got 1.5"):
        a.mean("x").within_ci(1.5, error=0.1)
    with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\), got 0"):
        a.sum("x").within_time(1.0, confidence=0)
    with pytest.raises(ValueError, match="error must be > 0, got 0"):
        a.mean("x").within_ci(0.95, error=0)
    with pytest.raises(ValueError, match="seconds must be > 0"):
        a.mean("x").within_time(-1)
    with pytest.raises(ValueError, match=r"q must be in \(0, 1\), got 1"):
        a.quantile("x", 1)
    with pytest.raises(ValueError, match="no '_u' column"):
        FrameReader(population)


# --- Spark ---------------------------------------------------------------------------------------------------

ROWS = 1_000_000


@pytest.fixture(scope="module")
def million(spark, tmp_path_factory) -> Path:
    """A stored sampled table of 10^6 rows (id, lognormal x, group g); _u = rand(11)."""
    from pyspark.sql import functions as F

    from scilens.guarantees.stages import write_sampled

    path = tmp_path_factory.mktemp("approx") / "million"
    df = spark.range(ROWS).select("id", F.exp(F.randn(7)).alias("x"), (F.col("id") % 3).cast("int").alias("g"))
    info = write_sampled(df, path, seed=11, files=1)
    assert info.rows == ROWS
    return path


def _stage_input_bytes(spark) -> dict[int, int]:
    """Bytes read by each retained stage, by stage id: Spark's task input metric (the UI's "Input")."""
    sc = spark.sparkContext
    sc._jsc.sc().listenerBus().waitUntilEmpty()
    jvm = sc._jvm
    stages = sc._jsc.sc().statusStore().stageList(jvm.java.util.ArrayList(), False, False,
                                                  sc._gateway.new_array(jvm.double, 0), jvm.java.util.ArrayList())
    return {stages.apply(i).stageId(): stages.apply(i).inputBytes() for i in range(stages.size())}


def _bytes_of(spark, action) -> int:
    # By stage id, not a difference of totals: the status store evicts old stages past
    # spark.ui.retainedStages, which late in a test session shrinks the total under us.
    last = max(_stage_input_bytes(spark), default=-1)
    action()
    return sum(b for stage, b in _stage_input_bytes(spark).items() if stage > last)


def test_a_1_percent_sample_of_a_million_row_table_reads_at_most_5_percent_of_its_bytes(spark, million):
    from pyspark.sql import functions as F

    from scilens.guarantees.stages import approx, sample_read_cost

    read, whole = sample_read_cost(million, 0.01)
    on_disk = sum(p.stat().st_size for p in million.glob("*.parquet"))
    print(f"\nfooters: a 1% sample reads {read.row_groups} of {whole.row_groups} row groups, "
          f"{read.bytes / whole.bytes:.2%} of the column-chunk bytes")
    assert whole.row_groups >= 50 and read.bytes <= 0.05 * whole.bytes
    result = []
    sampled = _bytes_of(spark, lambda: result.append(approx(million).mean("x").at(0.01)))
    assert 0.008 * ROWS < result[0].rows_read < 0.012 * ROWS
    table = spark.read.parquet(str(million))
    full_x = _bytes_of(spark, lambda: table.agg(F.avg("x")).collect())
    spark_sample = _bytes_of(spark, lambda: table.sample(fraction=0.01, seed=1).agg(F.avg("x")).collect())
    print(f"Spark input bytes: the 1% prefix {sampled / on_disk:.2%} of the table's files; df.sample(0.01) "
          f"{spark_sample / full_x:.0%} of a full scan of the same column")
    assert 0 < sampled <= 0.05 * on_disk
    assert spark_sample >= 0.9 * full_x  # df.sample decodes every row to draw its sample


QUERIES = {"mean": lambda a: a.mean("x").within_ci(error=0.05, start_rows=8000),
           "sum": lambda a: a.sum("x").within_ci(error=2_500, start_rows=8000),
           "count": lambda a: a.count(where="x > 2").within_ci(error=500, start_rows=8000),
           "quantile": lambda a: a.group_by("g").quantile("x", 0.75).within_ci(error=0.15, start_rows=8000),
           "grouped": lambda a: a.group_by("g").where("x < 5").mean("x").within_ci(error=0.05, start_rows=8000)}


@pytest.mark.parametrize("seed,names", [(0, ("mean", "count", "quantile")), (1, ("sum", "grouped"))])
def test_spark_answers_equal_the_in_memory_answers_on_the_same_sample(spark, tmp_path, seed, names):
    from pyspark.sql import functions as F

    from scilens.guarantees.stages import approx, write_sampled

    rows = 50_000
    df = spark.range(rows).select("id", F.exp(F.randn(seed)).alias("x"), (F.col("id") % 3).cast("int").alias("g"))
    write_sampled(df, tmp_path / "t", seed=seed)  # _u = rand(seed), stored: both readers see the same rows
    frame = spark.read.parquet(str(tmp_path / "t")).toPandas()
    on_spark, in_memory = approx(tmp_path / "t"), Approx(FrameReader(frame))
    queries = {name: QUERIES[name] for name in names}
    for name, ask in queries.items():
        got, want = ask(on_spark), ask(in_memory)
        assert (got.rows_read, got.fraction, got.method) == (want.rows_read, want.fraction, want.method), name
        assert got.rows_read < rows / 2, name
        pairs = ([(got, want)] if got.groups is None else
                 [(got.groups[k], want.groups[k]) for k in sorted(want.groups)])
        assert got.groups is None or set(got.groups) == set(want.groups) == {(0,), (1,), (2,)}
        for g, w in pairs:
            assert (g.estimate, g.low, g.high) == pytest.approx((w.estimate, w.low, w.high), rel=1e-9), name


def test_within_time_on_spark_returns_a_valid_answer_in_about_the_time(spark, million):
    from scilens.guarantees.stages import approx

    result = approx(million).group_by("g").mean("x").within_time(2.0)
    assert result.groups is not None and set(result.groups) == {(0,), (1,), (2,)}
    # On a quiet machine the doubling can reach a census within the budget: then the answer is exact.
    census = result.rows_read == ROWS
    for a in result.groups.values():
        assert a.low <= a.estimate <= a.high and math.isfinite(a.high - a.low)
        assert (a.low == a.high) == census, a  # only a census closes an interval over continuous values
    assert 0 < result.rows_read <= ROWS
    assert result.seconds < 5.0  # the projection keeps it near the budget even on a shared machine


def test_a_frame_without_the_stored_column_is_answered_with_a_warning(spark, tmp_path):
    from pyspark.sql import functions as F

    from scilens.guarantees.stages import SampledTable, approx

    df = spark.range(5_000).select(F.col("id").cast("double").alias("x"))
    with pytest.warns(UserWarning, match="no stored '_u' column.*write_sampled"):
        builder = approx(df)
    result = builder.count(where="x < 1000").within_ci(error=50.0)
    assert result.low <= result.estimate <= result.high and result.half_width <= 50.0
    assert builder.sum("x").at(1.0).estimate == float(sum(range(5_000)))
    with pytest.raises(ValueError, match=r"not a sampled table.*write_sampled"):
        SampledTable.open(tmp_path)
    with pytest.raises(ValueError, match="no column 'y'"):
        builder.mean("y")


# --- the diagnosis queries on an activation store ------------------------------------------------------------

NEURONS = 6


@pytest.fixture(scope="module")
def store(spark, tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """An activation-store table (id, label, prediction, correct, layer) sampled by id; neuron j's mean is j
    (neuron 0: 3 on the misclassified)."""
    from pyspark.sql import functions as F

    from scilens.guarantees.stages import write_sampled

    label = (F.rand(1) * 3).cast("int")
    items = spark.range(30_000).select(
        "id", label.alias("label"),
        F.array(*[(F.randn(10 + j) * 2.0 + j).cast("float") for j in range(NEURONS)]).alias("dense"))
    items = items.withColumn("prediction", F.when(F.rand(2) < 0.8, F.col("label"))
                             .otherwise((F.rand(3) * 3).cast("int")))
    items = items.withColumn("correct", F.col("label") == F.col("prediction"))
    # neuron 0 fires 3 higher on the misclassified items (what Q3 should find)
    items = items.withColumn("dense", F.transform("dense", lambda v, i: F.when(
        (i == 0) & ~F.col("correct"), v + F.lit(3.0).cast("float")).otherwise(v)))
    path = tmp_path_factory.mktemp("store") / "activations-sampled"
    write_sampled(items, path, seed=2, key="id", row_group_bytes=64 << 10)
    return path, spark.read.parquet(str(path)).toPandas()


def test_q1_mean_activation_with_intervals_equals_the_in_memory_answer(store):
    from scilens.diagnosis.queries import Group
    from scilens.guarantees.stages import approx_mean_activation

    path, frame = store
    frame = frame.assign(dense=[np.asarray(v, dtype=np.float64) for v in frame.dense])
    got = approx_mean_activation(path, "dense", Group(label=1, correct=False), error=0.3)
    want = (Approx(FrameReader(frame)).where("label == 1").where("correct == False").mean("dense")
            .within_ci(error=0.3))
    assert got.rows_read == want.rows_read < len(frame)
    for field in ("estimate", "low", "high"):
        np.testing.assert_allclose(getattr(got, field), getattr(want, field), rtol=1e-6)
    assert np.all(np.asarray(got.high) - np.asarray(got.low) <= 0.6)
    exact = approx_mean_activation(path, "dense", Group(label=1, correct=False), fraction=1.0)
    full = np.stack(frame.dense[(frame.label == 1) & ~frame.correct]).mean(0)
    np.testing.assert_allclose(exact.estimate, full, rtol=1e-6)
    np.testing.assert_array_equal(exact.low, exact.high)


def test_q3_finds_the_neuron_that_separates_incorrect_from_correct(store):
    from scilens.diagnosis.queries import Group
    from scilens.guarantees.stages import approx_compare_mean_activation

    path, frame = store
    wrong, right, differs = approx_compare_mean_activation(path, "dense", Group(label=2, correct=False),
                                                           Group(label=2, correct=True), error=0.4)
    assert differs[0]
    assert np.asarray(wrong.low)[0] - np.asarray(right.high)[0] < 3.0 < np.asarray(wrong.high)[0] - np.asarray(
        right.low)[0]
    assert wrong.rows_read < len(frame)


def test_q2_top_neurons_are_found_and_certain_from_a_small_sample(store):
    from scilens.guarantees.stages import approx_top_k_neurons

    path, frame = store
    top, means, certain = approx_top_k_neurons(path, "dense", 2, error=0.15)
    assert top.tolist() == [NEURONS - 1, NEURONS - 2] and certain  # the means are 0, 1, ..., 5
    assert means.rows_read < len(frame) / 2


def test_q5_argmax_distribution_with_intervals(store):
    from scilens.guarantees.stages import approx_max_neuron_distribution

    path, frame = store
    peaks = np.bincount(np.stack(frame.dense).argmax(1), minlength=NEURONS)
    exact = approx_max_neuron_distribution(path, "dense", NEURONS, fraction=1.0)
    np.testing.assert_allclose(exact.estimate, peaks, rtol=1e-12)
    result = approx_max_neuron_distribution(path, "dense", NEURONS, error=600.0)
    assert result.rows_read < len(frame)
    assert np.all(result.high - result.low <= 1200.0 + 1e-9) and np.all(result.low <= result.estimate)
    assert isinstance(result, Answer)


def test_within_ci_relative_error_covers_and_stops_on_the_relative_rule(population):
    """``relative=True``: each answer proves |estimate - truth| <= error |truth|, and does in >= 95 % of seeds."""
    from scilens.guarantees.aggregation import relative_met

    cases = {"mean": (lambda a: a.mean("x"), population.x.mean()),
             "sum": (lambda a: a.sum("x"), population.x.sum()),
             "count-where": (lambda a: a.count(where="x > 2"), float((population.x > 2).sum()))}
    error = 0.08
    for case, (query, truth) in cases.items():
        within, rows = 0, []
        for seed in range(100):
            result = query(Approx(FrameReader(frame_sample(population, seed)))).within_ci(
                CONFIDENCE, error=error, start_rows=200, relative=True)
            assert result.method != "exact" and relative_met(result.estimate, result.low, result.high, error)
            within += abs(result.estimate - truth) <= error * abs(truth)
            rows.append(result.rows_read)
        print(f"\n{case}: relative error <= {error} in {within}/100 seeds; median rows read {np.median(rows):.0f}")
        assert within >= 95
    with pytest.raises(ValueError, match="a relative error must be below 1"):
        Approx(FrameReader(frame_sample(population, 0))).mean("x").within_ci(error=1.0, relative=True)
