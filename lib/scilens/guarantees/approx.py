"""Approximate aggregates over a table from a progressive uniform sample (BlinkDB-style), in memory.

``Approx(reader).mean("x").within_ci(0.95, error=0.01)`` answers from a growing sample of the table's
rows and returns an :class:`Answer` (estimate, low, high, rows read, rows in the table). The reader
decides where rows come from: :class:`FrameReader` here (a pandas frame, no Spark), and
:class:`scilens.guarantees.stages.SparkReader` on a Spark table; the loop, the estimators and the
intervals are this module's, so both readers give the same answer on the same sample.

The sample
----------
Every row carries a stored uniform number ``_u`` in [0, 1) (:func:`scilens.guarantees.stages.write_sampled`).
The sample of fraction ``f`` is the rows with ``_u < f``: given its size ``n``, a simple random sample
without replacement of ``n`` of the table's ``N`` rows (the ``_u`` are i.i.d., so every ``n``-subset is
equally likely to hold the ``n`` smallest). Samples of growing ``f`` are nested; step ``k`` reads only
the rows with ``f_{k-1} <= _u < f_k`` and merges them into the running statistics, so the whole loop
reads each sampled row once. The fraction starts at ``start_rows / N`` and doubles.

Estimators and intervals (``1 - confidence`` split over both tails)
------------------------------------------------------------------
``mean(col)``
    The sample mean of the non-null values; closed form: the CLT half-width
    (:func:`scilens.guarantees.bounds.clt_halfwidth`) with the finite-population correction
    ``sqrt((N_g - n_g) / (N_g - 1))``, where ``N_g`` (the table's non-null rows of the group, or of the
    ``where`` domain) is estimated as ``N n_g / n`` from the ``n_g`` of the ``n`` sampled rows (exactly
    ``N`` ungrouped, unfiltered, without nulls). Array columns (an activation layer) get one interval per
    element.
``sum(col)``, ``count(where=...)``
    Totals: ``N`` times the sample mean of a per-row value ``z`` over *all* sampled rows (``z`` is the
    value, nulls as 0, or the indicator of ``where``; outside the group, 0 -- the domain total of survey
    sampling), with the same CLT + FPC interval scaled by ``N``. A sample holding no match (or only
    matches) has zero variance, where the normal interval is empty; then that end of the interval is the
    exact binomial (Clopper-Pearson) limit ``1 - (alpha/2)^(1/n)`` of the matching share. ``count()``
    with no ``where`` and no groups is ``N`` itself (exact, no row read).
``quantile(col, q)``
    The sample's inverted-CDF quantile ``x_(ceil(q n))`` (``numpy.quantile(method="inverted_cdf")`` of the
    table is its target); distribution-free interval ``[x_(l), x_(u)]`` from order statistics: the number
    of sampled values at most the quantile is hypergeometric (``n`` draws from ``N`` rows of which at
    least ``ceil(q N)`` qualify), so ``l`` and ``u`` are hypergeometric quantiles; coverage is at least
    ``confidence`` for any distribution, ties included, and the interval closes to the value at a census.
    No bootstrap: the order-statistic interval is exact where the bootstrap is asymptotic, and costs
    nothing beyond the sorted sample.

Stopping
--------
``within_ci`` stops once the interval is narrow enough, a decision that depends on the sample
(optional stopping: the interval at a data-chosen step covers less often than one at a fixed step). So
that its answer covers with ``confidence`` whichever step stops, each of the schedule's ``K`` checks
before the census (``K = ceil(log2(N / start_rows))``) is made at ``1 - (1 - confidence) / K``
(Bonferroni; ``Answer.looks`` is ``K``): intervals about 1.4x wider at ``K = 10`` and 95%, hence about
twice the rows of a single look, and in practice conservative. ``within_time`` stops on the clock, not
on the data, and :meth:`Query.at` reads one fixed sample: both use the plain ``confidence``. The CLT
intervals remain asymptotic (the normal approximation of a mean of ``n`` values); the order-statistic
and exact-binomial ones are not.

Grouped answers hold one interval per group, each at ``confidence`` (no correction across groups);
``within_ci`` stops when all of them are narrow enough. A group the sample has not met has no answer
(a stratified sample would; BlinkDB keeps both), and a group met fewer than twice has an infinite mean
interval, which keeps the loop going (to the census if the group is that rare).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
from scipy import stats

from scilens.guarantees import bounds

__all__ = [
    "U_COLUMN",
    "Answer",
    "Approx",
    "FrameReader",
    "Moments",
    "Query",
    "Reader",
    "Spec",
    "Step",
    "answer",
    "frame_sample",
    "mean_interval",
    "progressive",
    "quantile_interval",
    "total_interval",
]

U_COLUMN = "_u"
"""The stored uniform column a sampled table carries."""

START_ROWS = 1000
"""Rows the first step reads on average (``f_0 = START_ROWS / N``)."""


@dataclass(frozen=True)
class Moments:
    """Count, mean and sum of squared deviations of some values (elementwise for array values).

    Attributes
    ----------
    n : int
        Number of values.
    mean : float or numpy.ndarray
        Their mean (0 when ``n == 0``).
    m2 : float or numpy.ndarray
        ``sum((x - mean)^2)``.
    """

    n: int
    mean: Any
    m2: Any

    @classmethod
    def of(cls, values: np.ndarray) -> Moments:
        """Moments of ``values`` (rows along axis 0)."""
        values = np.asarray(values, dtype=np.float64)
        n = len(values)
        if n == 0:
            zero = np.zeros(values.shape[1:]) if values.ndim > 1 else 0.0
            return cls(0, zero, zero)
        mean = values.mean(axis=0)
        return cls(n, mean, ((values - mean) ** 2).sum(axis=0))

    @classmethod
    def from_variance(cls, n: int, mean: Any, variance: Any) -> Moments:
        """From a count, mean and sample variance (``ddof=1``; ignored, may be null/NaN, when ``n < 2``)."""
        if n == 0:
            return cls(0, 0.0, 0.0)
        mean = np.asarray(mean, dtype=np.float64) if np.ndim(mean) else float(mean)
        if n < 2 or variance is None:
            return cls(n, mean, np.zeros_like(mean) if np.ndim(mean) else 0.0)
        variance = np.asarray(variance, dtype=np.float64) if np.ndim(variance) else float(variance)
        return cls(n, mean, variance * (n - 1))

    def __add__(self, other: Moments) -> Moments:
        """Moments of both sets of values (Chan, Golub and LeVeque's pairwise update)."""
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        return Moments(n, self.mean + delta * other.n / n, self.m2 + other.m2 + delta**2 * self.n * other.n / n)

    @property
    def variance(self) -> Any:
        """Sample variance (``ddof=1``; 0 for fewer than two values)."""
        return self.m2 / (self.n - 1) if self.n > 1 else self.m2 * 0.0


@dataclass(frozen=True)
class Spec:
    """One aggregate query.

    Attributes
    ----------
    kind : str
        ``"mean"``, ``"sum"``, ``"count"`` or ``"quantile"``.
    column : str, optional
        The aggregated column (none for ``count``).
    where : tuple
        Conditions a row must meet (all of them; a null condition fails): SQL expression strings (both
        readers) or Spark ``Column`` objects (Spark only). A filtered aggregate is a domain estimate: the
        sample is of the whole table and the rows outside the domain count as 0 (totals) or are left out
        (mean, quantile).
    q : float, optional
        ``quantile``'s level in (0, 1).
    by : tuple of str
        Grouping columns.
    """

    kind: str
    column: str | None = None
    where: tuple = ()
    q: float | None = None
    by: tuple[str, ...] = ()

    @property
    def is_total(self) -> bool:
        """``sum`` and ``count``: a table size times a mean over all sampled rows."""
        return self.kind in ("sum", "count")


@dataclass
class Step:
    """What a reader returns for one slice of ``_u`` (or the running merge of several).

    Attributes
    ----------
    rows : int
        Rows in the slice (all of them, whatever the group or nulls).
    groups : dict
        Group key (a tuple; ``()`` ungrouped) to :class:`Moments` (mean: of the non-null values; sum,
        count: of ``z`` over the group's rows) or, for quantiles, a 1-d array of non-null values.
    """

    rows: int = 0
    groups: dict[tuple, Any] = field(default_factory=dict)

    def __add__(self, other: Step) -> Step:
        """Both slices' statistics."""
        groups = dict(self.groups)
        for key, value in other.groups.items():
            if key not in groups:
                groups[key] = value
            elif isinstance(value, Moments):
                groups[key] = groups[key] + value
            else:
                groups[key] = np.concatenate([groups[key], value])
        return Step(self.rows + other.rows, groups)


@dataclass
class Answer:
    """An approximate aggregate and its interval.

    Attributes
    ----------
    estimate, low, high : float or numpy.ndarray
        The estimate and its ``confidence`` interval (arrays for an array column's mean, one per element;
        NaN on a grouped answer's top level, whose values are in ``groups``).
    rows_read : int
        Sampled rows the answer used (all groups; the rows with ``_u`` below ``fraction``).
    rows_total : int
        Rows in the table.
    confidence : float
        Coverage asked for.
    method : str
        ``"clt-fpc"``, ``"clt-fpc+exact-binomial"`` (a count whose sample has no match, or only matches),
        ``"order-statistic"`` or ``"exact"`` (a census, or ``count()`` from the table's size).
    fraction : float
        The sample's fraction of ``_u``.
    seconds : float
        Wall time of the whole progressive loop.
    groups : dict, optional
        Group key tuple to :class:`Answer` when grouped.
    looks : int
        Checks ``1 - confidence`` was split over (Bonferroni): the steps ``within_ci``'s schedule can take;
        1 for a single read or a stop on time.
    """

    estimate: Any
    low: Any
    high: Any
    rows_read: int
    rows_total: int
    confidence: float
    method: str
    fraction: float = 1.0
    seconds: float = 0.0
    groups: dict[tuple, Answer] | None = None
    looks: int = 1

    @property
    def half_width(self) -> float:
        """Largest half-width (over the elements of an array answer and the groups)."""
        if self.groups is not None:
            return max((a.half_width for a in self.groups.values()), default=math.inf)
        return float(np.max((np.asarray(self.high) - np.asarray(self.low)) / 2.0))

    def to_pandas(self, by: Sequence[str] = ()) -> pd.DataFrame:
        """One row per group (or one row): the group columns named ``by``, estimate, low, high, rows_read."""
        items = self.groups.items() if self.groups is not None else [((), self)]
        names = list(by) or [f"key{i}" for i in range(len(next(iter(items), ((),))[0]))]
        rows = [{**dict(zip(names, key, strict=True)), "estimate": a.estimate, "low": a.low, "high": a.high,
                 "rows_read": a.rows_read} for key, a in items]
        return pd.DataFrame(rows)


def _alpha(confidence: float) -> float:
    return 1.0 - confidence


def mean_interval(moments: Moments, confidence: float, population: float | None) -> tuple[Any, Any, Any]:
    """CLT interval of a mean from a sample without replacement of ``moments.n`` of ``population`` values.

    Parameters
    ----------
    moments : Moments
        The sample's moments (scalar or elementwise).
    confidence : float
        Two-sided coverage.
    population : float, optional
        Population size for the finite-population correction (none: no correction).

    Returns
    -------
    tuple
        ``(estimate, low, high)``; infinite ends with fewer than two values (no variance estimate).
    """
    if population is not None and moments.n >= population:  # a census: the mean itself
        return moments.mean, moments.mean, moments.mean
    if moments.n < 2:
        inf = np.full_like(np.asarray(moments.mean, dtype=np.float64), np.inf)
        return moments.mean, moments.mean - inf, moments.mean + inf
    if population is not None:
        population = max(population, moments.n)
    half = bounds.clt_halfwidth(np.sqrt(moments.variance), moments.n, _alpha(confidence),
                                None if population is None else math.ceil(population))
    return moments.mean, moments.mean - half, moments.mean + half


def total_interval(moments: Moments, rows: int, rows_total: int, confidence: float,
                   indicator: bool = False) -> tuple[float, float, float, str]:
    """Interval of a total ``sum_{table} z`` from a group's moments of ``z`` in a sample of ``rows`` rows.

    Parameters
    ----------
    moments : Moments
        Moments of ``z`` over the group's sampled rows (``z = 0`` on every other sampled row).
    rows : int
        Sampled rows (all groups).
    rows_total : int
        Rows in the table ``N``.
    confidence : float
        Two-sided coverage.
    indicator : bool
        ``z`` is 0/1 (a count): a sample with no match or only matches takes the exact binomial end.

    Returns
    -------
    tuple
        ``(estimate, low, high, method)``.
    """
    # moments of z over all sampled rows: the group's values and rows - n_g zeros
    mean = moments.n * moments.mean / rows
    m2 = moments.m2 + moments.n * moments.mean**2 - rows * mean**2
    est, low, high = mean_interval(Moments(rows, mean, max(m2, 0.0)), confidence, rows_total)
    method = "clt-fpc"
    if indicator and rows < rows_total:
        matches = round(moments.n * moments.mean)
        edge = (_alpha(confidence) / 2.0) ** (1.0 / rows)
        if matches == 0:
            high, method = 1.0 - edge, "clt-fpc+exact-binomial"
        elif matches == rows:
            low, method = edge, "clt-fpc+exact-binomial"
    return rows_total * est, rows_total * low, rows_total * high, method


def quantile_interval(values: np.ndarray, q: float, confidence: float,
                      population: int) -> tuple[float, float, float]:
    """Order-statistic interval of the inverted-CDF ``q``-quantile from a sample without replacement.

    Parameters
    ----------
    values : numpy.ndarray
        The sampled values (any order).
    q : float
        Level in (0, 1).
    confidence : float
        Two-sided coverage (at least this for any distribution).
    population : int
        Population size ``N`` (at least ``len(values)``).

    Returns
    -------
    tuple of float
        ``(estimate, low, high)``; an end is infinite when the sample is too small to bound it.
    """
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = len(x)
    if n == 0:
        return math.nan, -math.inf, math.inf
    big_n = max(int(population), n)
    k = math.ceil(q * big_n)  # population rows at or below the quantile: at least k; strictly below: at most k - 1
    tail = _alpha(confidence) / 2.0
    # low = x_(l) misses iff fewer than l sampled values are <= the quantile: P(H_k <= l - 1) <= tail
    lo_rank = int(stats.hypergeom.ppf(tail, big_n, k, n))
    # high = x_(u) misses iff at least u sampled values are < the quantile: P(H_{k-1} >= u) <= tail
    hi_rank = int(stats.hypergeom.ppf(1.0 - tail, big_n, k - 1, n)) + 1
    low = x[lo_rank - 1] if lo_rank >= 1 else -math.inf
    high = x[hi_rank - 1] if hi_rank <= n else math.inf
    return float(x[max(math.ceil(q * n), 1) - 1]), float(low), float(high)


def _plain(value: Any) -> Any:
    """A Python float for a scalar, the array otherwise."""
    return float(value) if np.ndim(value) == 0 else np.asarray(value, dtype=np.float64)


def answer(spec: Spec, state: Step, rows_total: int, confidence: float, fraction: float,
           seconds: float = 0.0) -> Answer:
    """The :class:`Answer` of ``spec`` from the sample statistics ``state``.

    Parameters
    ----------
    spec : Spec
        The query.
    state : Step
        Statistics of every sampled row so far.
    rows_total : int
        Rows in the table.
    confidence : float
        Two-sided coverage.
    fraction : float
        The sample's ``_u`` bound.
    seconds : float
        Time spent so far.

    Returns
    -------
    Answer
        Grouped: one per group met, under ``groups``.
    """
    census = state.rows >= rows_total
    out = {}
    for key, stat in state.groups.items():
        method = "clt-fpc"
        if spec.kind == "quantile":
            # a group's non-null rows in the table, from its share of the sample (exact: ungrouped, no nulls)
            size = round(rows_total * len(stat) / state.rows) if state.rows else rows_total
            est, low, high = quantile_interval(stat, spec.q or 0.5, confidence, size)
            method = "order-statistic"
        elif spec.is_total:
            est, low, high, method = total_interval(stat, state.rows, rows_total, confidence,
                                                    indicator=spec.kind == "count")
        else:
            est, low, high = mean_interval(stat, confidence, rows_total * stat.n / state.rows if state.rows else None)
        out[key] = Answer(_plain(est), _plain(low), _plain(high), state.rows, rows_total, confidence,
                          "exact" if census else method, fraction, seconds)
    if not spec.by:
        if () in out:
            return out[()]
        return Answer(math.nan, -math.inf, math.inf, state.rows, rows_total, confidence, "clt-fpc", fraction, seconds)
    return Answer(math.nan, math.nan, math.nan, state.rows, rows_total, confidence, "exact" if census else
                  ("order-statistic" if spec.kind == "quantile" else "clt-fpc"), fraction, seconds, groups=out)


class Reader(Protocol):
    """A sampled table: its size, its columns, and the statistics of a slice of ``_u``."""

    @property
    def rows_total(self) -> int:
        """Rows in the table."""
        ...

    @property
    def columns(self) -> Sequence[str]:
        """Its column names."""
        ...

    def read(self, spec: Spec, low: float, high: float) -> Step:
        """Statistics of ``spec`` over the rows with ``low <= _u < high``."""
        ...


def _table_size(reader: Reader, spec: Spec, confidence: float) -> Answer | None:
    """``count()`` with no condition and no groups: the table's size, exact, no row read."""
    if spec.kind == "count" and not spec.where and not spec.by:
        total = reader.rows_total
        return Answer(total, total, total, 0, total, confidence, "exact", 0.0)
    return None


def progressive(reader: Reader, spec: Spec, confidence: float, *, error: float | None = None,
                seconds: float | None = None, start_rows: int = START_ROWS,
                clock: Callable[[], float] = time.monotonic, relative: bool = False) -> Answer:
    """Grow the sample (doubling the fraction) until the half-width is at most ``error`` or time runs out.

    Parameters
    ----------
    reader : Reader
        The table.
    spec : Spec
        The query.
    confidence : float
        Two-sided coverage in (0, 1).
    error : float, optional
        Stop once every half-width (every group, every element) is at most this.
    seconds : float, optional
        Stop before a step whose projected time (a fixed cost plus a cost per row, fitted to the last
        two steps) would pass this budget. The first step always runs.
    start_rows : int
        Rows the first step reads on average.
    clock : callable
        Time source (seconds).
    relative : bool
        ``error`` is a fraction of each estimate: stop once every interval (every group, every element)
        proves ``|estimate - truth| <= error |truth|`` (:func:`scilens.guarantees.aggregation.relative_met`).

    Returns
    -------
    Answer
        The last step's answer (a census when nothing stopped the loop earlier).
    """
    started = clock()
    total = reader.rows_total
    exact = _table_size(reader, spec, confidence)
    if exact is not None:
        return exact
    fraction = 1.0 if total == 0 else min(1.0, max(start_rows, 1) / total)
    # stopping when the interval is narrow enough depends on the data: the reported interval covers with
    # 1 - alpha only if every check the schedule can make spends alpha / looks (a stop on time is data-blind)
    # (the schedule's last step, a census, cannot miss)
    looks = 1 if error is None else max(1, math.ceil(math.log2(1.0 / fraction) - 1e-9))
    per_look = 1.0 - (1.0 - confidence) / looks
    state, low = Step(), 0.0
    costs: list[tuple[float, float]] = []  # (fraction read, seconds) of each step
    while True:
        step_start = clock()
        high = 1.0 if fraction >= 1.0 else fraction
        state = state + reader.read(spec, low, high)
        now = clock()
        costs.append((high - low, now - step_start))
        result = _relabel(answer(spec, state, total, per_look, min(fraction, 1.0), now - started), confidence, looks)
        if fraction >= 1.0 or (error is not None and (_relative_met(result, error) if relative
                                                      else result.half_width <= error)):
            return result
        next_low, next_fraction = fraction, min(1.0, 2.0 * fraction)
        if seconds is not None and (now - started) + _projected(costs, next_fraction - next_low) > seconds:
            return result
        low, fraction = next_low, next_fraction


def _relative_met(result: Answer, error: float) -> bool:
    """Every group's (or the one) interval proves a relative error of at most ``error``."""
    from scilens.guarantees.aggregation import relative_met

    if result.groups is not None:
        return bool(result.groups) and all(_relative_met(part, error) for part in result.groups.values())
    return relative_met(result.estimate, result.low, result.high, error)


def _relabel(result: Answer, confidence: float, looks: int) -> Answer:
    """``result`` (computed at the per-look confidence) labelled with the confidence of the whole loop."""
    for part in [result, *(result.groups or {}).values()]:
        part.confidence, part.looks = confidence, looks
    return result


def _projected(costs: list[tuple[float, float]], width: float) -> float:
    """Seconds a step reading ``width`` of ``_u`` should take.

    A line (fixed cost + cost per fraction) through the last two steps' costs (a Spark step's fixed cost
    dominates small samples); after one step, that step's cost per fraction.
    """
    if len(costs) < 2:
        (w, t), = costs
        return t * width / w
    (w1, t1), (w2, t2) = costs[-2:]
    slope = max((t2 - t1) / (w2 - w1), 0.0) if w2 != w1 else t2 / w2
    fixed = max(t2 - slope * w2, 0.0)
    return fixed + slope * width


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


class Query:
    """An aggregate over a sampled table, answered by :meth:`within_ci`, :meth:`within_time` or :meth:`at`."""

    def __init__(self, reader: Reader, spec: Spec) -> None:
        self.reader = reader
        self.spec = spec

    def within_ci(self, confidence: float = 0.95, *, error: float, start_rows: int = START_ROWS,
                  relative: bool = False) -> Answer:
        """Sample until the ``confidence`` interval's half-width is at most ``error`` (absolute, or relative).

        ``1 - confidence`` is split over the schedule's checks (see the module doc, "Stopping").

        Parameters
        ----------
        confidence : float
            Two-sided coverage in (0, 1).
        error : float
            Largest half-width accepted (> 0); a census stops the loop anyway.
        start_rows : int
            Rows the first step reads on average.
        relative : bool
            ``error`` is a fraction of the estimate (below 1): stop once every interval excludes 0 and
            proves ``|estimate - truth| <= error |truth|``.

        Returns
        -------
        Answer
            The answer.
        """
        _check_confidence(confidence)
        if not error > 0:
            raise ValueError(f"error must be > 0, got {error}")
        if relative and error >= 1.0:
            raise ValueError(f"a relative error must be below 1 (a fraction of the estimate), got {error}")
        return progressive(self.reader, self.spec, confidence, error=error, start_rows=start_rows,
                           relative=relative)

    def within_time(self, seconds: float, confidence: float = 0.95, *, start_rows: int = START_ROWS) -> Answer:
        """The narrowest interval the time allows: keep doubling the sample while the next step fits.

        Parameters
        ----------
        seconds : float
            Time budget (> 0); the first step runs whatever it costs.
        confidence : float
            Two-sided coverage in (0, 1).
        start_rows : int
            Rows the first step reads on average.

        Returns
        -------
        Answer
            The answer.
        """
        _check_confidence(confidence)
        if not seconds > 0:
            raise ValueError(f"seconds must be > 0, got {seconds}")
        return progressive(self.reader, self.spec, confidence, seconds=seconds, start_rows=start_rows)

    def at(self, fraction: float, confidence: float = 0.95) -> Answer:
        """The answer from the fixed sample ``_u < fraction`` (one read).

        Parameters
        ----------
        fraction : float
            Sample fraction in (0, 1].
        confidence : float
            Two-sided coverage in (0, 1).

        Returns
        -------
        Answer
            The answer.
        """
        _check_confidence(confidence)
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        exact = _table_size(self.reader, self.spec, confidence)
        if exact is not None:
            return exact
        started = time.monotonic()
        state = self.reader.read(self.spec, 0.0, fraction)
        return answer(self.spec, state, self.reader.rows_total, confidence, fraction, time.monotonic() - started)


class Approx:
    """Builder of approximate aggregates over a sampled table: ``Approx(reader).group_by("g").mean("x")``.

    Parameters
    ----------
    reader : Reader
        The table.
    by : sequence of str
        Grouping columns.
    where : sequence
        Conditions every aggregate is restricted to (see :class:`Spec`).
    """

    def __init__(self, reader: Reader, by: Sequence[str] = (), where: Sequence[Any] = ()) -> None:
        self.reader = reader
        self.by = tuple(by)
        self.filters = tuple(where)
        self._check(*self.by)

    def _check(self, *columns: str) -> None:
        unknown = [c for c in columns if c not in self.reader.columns]
        if unknown:
            raise ValueError(f"no column {', '.join(map(repr, unknown))} in the table; "
                             f"columns are {', '.join(c for c in self.reader.columns if c != U_COLUMN)}")

    def group_by(self, *columns: str) -> Approx:
        """The same table, grouped by ``columns`` (each answer then holds one answer per group met)."""
        return Approx(self.reader, (*self.by, *columns), self.filters)

    def where(self, condition: Any) -> Approx:
        """The aggregates restricted to the rows meeting ``condition`` (a SQL string, or a Spark Column)."""
        return Approx(self.reader, self.by, (*self.filters, condition))

    def mean(self, column: str) -> Query:
        """Mean of the non-null values of ``column`` (elementwise for an array column)."""
        self._check(column)
        return Query(self.reader, Spec("mean", column, self.filters, by=self.by))

    def sum(self, column: str) -> Query:
        """Sum of ``column`` (nulls count 0, as in Spark's ``sum``)."""
        self._check(column)
        return Query(self.reader, Spec("sum", column, self.filters, by=self.by))

    def count(self, where: Any = None) -> Query:
        """Rows (where ``where`` holds: a SQL expression string, or a Spark Column on a Spark table)."""
        where_all = self.filters if where is None else (*self.filters, where)
        return Query(self.reader, Spec("count", where=where_all, by=self.by))

    def quantile(self, column: str, q: float) -> Query:
        """The inverted-CDF ``q``-quantile of the non-null values of ``column``."""
        self._check(column)
        if not 0.0 < q < 1.0:
            raise ValueError(f"q must be in (0, 1), got {q}")
        return Query(self.reader, Spec("quantile", column, self.filters, q=q, by=self.by))


class FrameReader:
    """A sampled table in memory: a pandas frame with a ``_u`` column (the pure reference of the Spark reader).

    Parameters
    ----------
    frame : pandas.DataFrame
        The rows, ``_u`` included; array columns hold one 1-d array per row.
    """

    def __init__(self, frame: pd.DataFrame) -> None:
        if U_COLUMN not in frame.columns:
            raise ValueError(f"the frame has no {U_COLUMN!r} column of uniform numbers")
        self.frame = frame
        self.rows_total = len(frame)
        self.columns = list(frame.columns)
        self._u = frame[U_COLUMN].to_numpy()

    def read(self, spec: Spec, low: float, high: float) -> Step:
        """Statistics of ``spec`` over the rows with ``low <= _u < high``."""
        rows = self.frame[(self._u >= low) & (self._u < high)]
        mask = pd.Series(True, index=rows.index)
        for condition in spec.where:
            mask &= rows.eval(condition).fillna(False).astype(bool)
        if spec.kind == "count":
            z = mask.astype(np.float64)
        elif spec.kind == "sum":
            z = rows[spec.column].astype(np.float64).fillna(0.0) * mask
        else:
            z = rows.loc[mask, spec.column].dropna()
        groups: dict[tuple, Any] = {}
        parts = z.groupby([rows.loc[z.index, c] for c in spec.by], dropna=False) if spec.by else [((), z)]
        for key, part in parts:
            key = key if isinstance(key, tuple) else (key,)
            values = (np.stack(part.to_numpy()) if len(part) and isinstance(part.iloc[0], np.ndarray)
                      else part.to_numpy(dtype=np.float64))
            groups[key] = np.asarray(values, dtype=np.float64) if spec.kind == "quantile" else Moments.of(values)
        return Step(len(rows), groups)


def frame_sample(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """``frame`` with a seeded uniform ``_u`` column (what :func:`~scilens.guarantees.stages.write_sampled` stores)."""
    return frame.assign(**{U_COLUMN: np.random.default_rng(seed).random(len(frame))})
