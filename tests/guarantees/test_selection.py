"""SUPG / SUPG++: recall and precision targets over 200 seeded trials, precision, oracle hygiene."""

from __future__ import annotations

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


@pytest.mark.xfail(strict=True, reason="SUPG++ loses to SUPG on these populations: their positives are not "
                   "concentrated in the top 3 E[P] |D| proxy ranks, the seed's premise (see the report)")
def test_supg_pp_precision_at_recall_90_not_below_supg(populations):
    data = populations["rare"]
    precision = {method: np.mean([_precision(data, select_recall(
        data, "proxy", Oracle("label"), target=0.9, delta=DELTA, budget=BUDGET, method=method, seed=seed).ids)
        for seed in range(100)]) for method in SELECT_METHODS}
    print(f"\nmean precision at recall 0.9 on rare: {precision}")
    assert precision["supg++"] >= precision["supg"]


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
