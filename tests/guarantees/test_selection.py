"""SUPG / SUPG++: recall and precision targets over 200 seeded trials, precision, oracle hygiene."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from scilens.guarantees.oracle import BudgetExceeded, Oracle
from scilens.guarantees.selection import BOUNDS, SELECT_METHODS, select_precision, select_recall
from scilens.synth.proxies import KINDS

TRIALS = 200
DELTA = 0.05
BUDGET = 1000
ALLOWED = {"clt": 10, "conservative": 14}


def _recall(data: pd.DataFrame, ids: np.ndarray) -> float:
    labels = data["label"].to_numpy()
    return float(labels[ids].sum() / labels.sum())


def _precision(data: pd.DataFrame, ids: np.ndarray) -> float:
    return float(data["label"].to_numpy()[ids].mean()) if len(ids) else 0.0


def meets_precision(data: pd.DataFrame, ids: np.ndarray, factor: float = 5.0) -> bool:
    """The issue's precision requirement: at least ``factor`` times the base rate."""
    return _precision(data, ids) >= factor * float(data["label"].mean())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bound", BOUNDS)
@pytest.mark.parametrize("method", SELECT_METHODS)
def test_recall_target_is_met(populations, method, bound, kind):
    data = populations[kind]
    results = [select_recall(data, "proxy", Oracle("label"), target=0.9, delta=DELTA, budget=BUDGET,
                             method=method, bound=bound, seed=seed) for seed in range(TRIALS)]
    failures = sum(_recall(data, r.ids) < 0.9 for r in results)
    precision = np.mean([_precision(data, r.ids) for r in results])
    print(f"\n{method}/{bound} on {kind}: recall < 0.9 in {failures}/{TRIALS}, mean precision {precision:.3f}")
    assert failures <= ALLOWED[bound]
    assert all(r.oracle_calls <= BUDGET for r in results)


@pytest.mark.parametrize("method", SELECT_METHODS)
def test_precision_target_is_met(populations, method):
    data = populations["rare"]
    results = [select_precision(data, "proxy", Oracle("label"), target=0.5, delta=DELTA, budget=BUDGET,
                                method=method, seed=seed) for seed in range(TRIALS)]
    failures = sum(_precision(data, r.ids) < 0.5 for r in results)
    recall = np.mean([_recall(data, r.ids) for r in results])
    print(f"\n{method} precision 0.5 on rare: failed {failures}/{TRIALS}, mean recall {recall:.3f}")
    assert failures <= 10
    # every selection that met its target passes the requirement; returning everything fails it
    assert sum(meets_precision(data, r.ids) for r in results) >= TRIALS - 10
    assert not meets_precision(data, data["id"].to_numpy())


def _top_3a_recall(data: pd.DataFrame) -> float:
    """Share of the positives in the top ``ceil(3 E[P] |D|)`` proxy ranks: what SUPG++ sets to 1."""
    scores, labels = data["proxy"].to_numpy(), data["label"].to_numpy()
    top = math.ceil(3.0 * scores.mean() * len(scores))
    return float(labels[np.argsort(-scores, kind="stable")[:top]].sum() / labels.sum())


def _mean_precision_at_recall_90(data: pd.DataFrame, seeds: int = 100) -> dict[str, tuple[float, int]]:
    """Per method, the mean precision of ``select_recall`` and its recall misses, on the same seeds and budget."""
    out = {}
    for method in SELECT_METHODS:
        results = [select_recall(data, "proxy", Oracle("label"), target=0.9, delta=DELTA, budget=BUDGET,
                                 method=method, seed=seed) for seed in range(seeds)]
        out[method] = (float(np.mean([_precision(data, r.ids) for r in results])),
                       sum(_recall(data, r.ids) < 0.9 for r in results))
    return out


def overconfident_population(n: int = 20_000, seed: int = 0) -> pd.DataFrame:
    """SUPG++'s premise (the seed's section 5.3.3): a monotonic, overconfident proxy, positives near the top.

    About 1.5 % positives (``z + 0.2 noise > 2.2``) and a proxy ``sigmoid(12 (z - 2.2))``: it ranks by the
    latent ``z``, near 1 at the top and falling steeply below it (overconfident, not calibrated); the top
    ``3 E[P] |D|`` ranks hold 99 % of the positives.
    """
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(n)
    label = (z + 0.2 * rng.standard_normal(n) > 2.2).astype(np.int64)
    proxy = 1.0 / (1.0 + np.exp(-12.0 * (z - 2.2)))
    return pd.DataFrame({"id": np.arange(n, dtype=np.int64), "proxy": proxy, "label": label})


def test_supg_pp_precision_at_recall_90_not_below_supg_where_its_premise_holds():
    """The seed's claim (SUPG++ >= SUPG at recall 0.9) on the population it is made for, same seeds and budget.

    Measured (100 seeds, budget 1000, clt): mean precision 0.450 (SUPG) and 0.555 (SUPG++), no recall miss.
    Other populations of the same family (sigmoid(k (z - 2.2)), noise s), measured while finding out:
    k 12, s 0.3: 0.203 -> 0.279; k 20, s 0.3: 0.198 -> 0.412 (SUPG missed recall 0.9 in 35 of 100 seeds,
    SUPG++ in none); k 8, s 0.3: 0.270 -> 0.239 on the mean but 0.281 -> 0.299 on the median. With a
    smooth proxy (k 4) SUPG++ lost even when its top 3 E[P] |D| ranks held 0.90 of the positives
    (0.288 -> 0.267): positives in the top 3A are necessary, not sufficient; sqrt(P) is scale-free, so
    shrinking the scores changes nothing, and what SUPG++ helped here is a steep (overconfident) proxy.
    """
    data = overconfident_population()
    assert _top_3a_recall(data) >= 0.9  # the premise
    found = _mean_precision_at_recall_90(data)
    print(f"\nmean precision, recall misses at recall 0.9 on the overconfident proxy: {found}")
    assert found["supg++"][0] >= found["supg"][0]
    assert found["supg++"][1] <= 10  # not bought with missed recall targets


@pytest.mark.xfail(strict=True, reason="the premise fails on the rare population: its proxy is shrunk "
                   "(underconfident), E[P] = 0.010 for 0.019 positives, and the top 3 E[P] |D| = 603 ranks hold "
                   "0.71 of the positives (recall 0.9 needs 1,487); the upweighting takes draws from the ranks "
                   "holding the other 0.29. Measured (100 seeds, budget 1000, clt): mean precision 0.087 (SUPG) "
                   "and 0.047 (SUPG++); SUPG++ selects everything in 84 seeds, SUPG in 48")
def test_supg_pp_precision_at_recall_90_not_below_supg_on_rare(populations):
    data = populations["rare"]
    assert _top_3a_recall(data) < 0.9
    found = _mean_precision_at_recall_90(data)
    print(f"\nmean precision, recall misses at recall 0.9 on rare: {found}")
    assert found["supg++"][0] >= found["supg"][0]


class _Recorder:
    def __init__(self) -> None:
        self.seen: list[int] = []

    def __call__(self, rows: pd.DataFrame) -> np.ndarray:
        self.seen.extend(rows["id"].tolist())
        return rows["label"].to_numpy()


@pytest.mark.parametrize("select", [select_recall, select_precision])
def test_oracle_sees_only_sampled_rows_within_budget(populations, select):
    recorder = _Recorder()
    oracle = Oracle(recorder, budget=BUDGET)
    result = select(populations["rare"], "proxy", oracle, target=0.9 if select is select_recall else 0.5,
                    delta=DELTA, budget=BUDGET, method="supg++", seed=4)
    assert len(recorder.seen) == len(set(recorder.seen)) == oracle.calls == result.oracle_calls <= BUDGET
    assert set(recorder.seen) == set(result.sampled_ids.tolist())
    with pytest.raises(BudgetExceeded):
        select(populations["rare"], "proxy", Oracle("label", budget=BUDGET // 10), target=0.9, delta=DELTA,
               budget=BUDGET, method="supg", seed=4)


@pytest.mark.parametrize("select", [select_recall, select_precision])
@pytest.mark.parametrize("method", SELECT_METHODS)
def test_unsampled_labels_do_not_matter(populations, select, method):
    data = populations["strong"]
    first = select(data, "proxy", Oracle("label"), target=0.5, delta=DELTA, budget=BUDGET, method=method, seed=6)
    unsampled = np.setdiff1d(data["id"].to_numpy(), first.sampled_ids)
    shuffled = data.copy()
    shuffled.loc[unsampled, "label"] = np.random.default_rng(9).permutation(data.loc[unsampled, "label"].to_numpy())
    assert not np.array_equal(shuffled["label"].to_numpy(), data["label"].to_numpy())
    again = select(shuffled, "proxy", Oracle("label"), target=0.5, delta=DELTA, budget=BUDGET, method=method, seed=6)
    assert np.array_equal(again.ids, first.ids) and again.threshold == first.threshold
    assert np.array_equal(again.sampled_ids, first.sampled_ids)


def test_selection_is_the_proxy_cut_plus_sampled_positives(populations):
    data = populations["strong"]
    result = select_recall(data, "proxy", Oracle("label"), target=0.9, delta=DELTA, budget=BUDGET, seed=1)
    labels = data["label"].to_numpy()
    sampled_positives = result.sampled_ids[labels[result.sampled_ids] == 1]
    cut = data["id"].to_numpy()[data["proxy"].to_numpy() >= result.threshold]
    assert np.array_equal(result.ids, np.union1d(cut, sampled_positives))
