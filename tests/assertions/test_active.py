"""Choosing what to label (issue 18): the rounds' bookkeeping and BAL's bandit, on real Fashion-MNIST.

Whether BAL needs fewer labels than random is measured in ``bench/active_learning.py`` (it does not, on
this model and data, at the accuracies tried: see bench/results/assertions-labelling.md), not asserted here.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from scilens.assertions.active import (
    BanditChooser,
    Round,
    label_rounds,
    labels_to_reach,
    random_selection,
    standard_arms,
    uncertainty_sampling,
)
from scilens.diagnosis.datasets import fashion_mnist


@pytest.fixture(scope="module")
def pool():
    train = fashion_mnist("test")  # the 10,000 test images: smaller to load
    rng = np.random.default_rng(0)
    idx = rng.choice(len(train.labels), 1800, replace=False)
    x = train.images[idx, :, :, 0].reshape(len(idx), 14, 2, 14, 2).mean(axis=(2, 4)).reshape(len(idx), -1) / 255.0
    return x[:1200], train.labels[idx[:1200]], x[1200:], train.labels[idx[1200:]]


class Recording:
    """A chooser that remembers what it was offered and what it returned."""

    def __init__(self, inner):
        self.inner, self.offered, self.picked = inner, [], []

    @property
    def history(self):
        return getattr(self.inner, "history", None)

    @property
    def labelled(self):
        return getattr(self.inner, "labelled", None)

    @labelled.setter
    def labelled(self, value):
        if hasattr(self.inner, "labelled"):
            self.inner.labelled = value

    def __call__(self, model, pool_x, unlabelled, k, rng):
        picked = self.inner(model, pool_x, unlabelled, k, rng)
        self.offered.append(set(unlabelled.tolist()))
        self.picked.append(picked)
        return picked


def _fit(x, y):
    return LogisticRegression(max_iter=100).fit(x, y)


@pytest.mark.parametrize("method", ["random", "uncertainty", "bal"])
def test_every_round_labels_new_items_and_is_counted(pool, method):
    px, py, tx, ty = pool
    inner = {"random": random_selection, "uncertainty": uncertainty_sampling}.get(method) or BanditChooser(
        standard_arms((14, 14)))
    chooser = Recording(inner)
    rounds = label_rounds(px, py, tx, ty, chooser, _fit, 100, 50, 3, seed=1)
    assert [r.labels for r in rounds] == [100, 150, 200, 250]
    seen: set[int] = set()
    for offered, picked in zip(chooser.offered, chooser.picked):
        assert len(picked) == 50 == len(set(picked.tolist())) and set(picked.tolist()) <= offered
        assert not seen & set(picked.tolist())
        seen |= set(picked.tolist())
    assert len(chooser.offered[0]) == len(py) - 100 and all(0 < r.accuracy <= 1 for r in rounds)
    if method == "bal":  # each round after the first names the arm it labelled for
        assert all(r.arm in (*standard_arms((14, 14)), "") for r in rounds[1:])


def test_uncertainty_picks_the_least_confident(pool):
    px, py, *_ = pool
    model = _fit(px[:300], py[:300])
    unlabelled = np.arange(300, len(py))
    picked = uncertainty_sampling(model, px, unlabelled, 20, np.random.default_rng(0))
    confidence = model.predict_proba(px[unlabelled]).max(1)
    assert model.predict_proba(px[picked]).max(1).max() <= np.sort(confidence)[19]


def _scripted_arms(calls: dict[str, list[int]]) -> dict:
    """Arms flagging the first ``calls[name][round]`` items each round: a bandit's inputs, scripted."""

    def arm(name):
        def severity(model, x, p, labelled):
            flags = np.zeros(len(x))
            flags[: calls[name].pop(0)] = 1.0
            return flags
        return severity

    return {name: arm(name) for name in calls}


def test_bandit_rewards_the_drop_in_flags_and_never_picks_a_silent_arm(pool):
    px, py, *_ = pool
    calls = {"dropping": [30, 10], "silent": [0, 0], "steady": [20, 20]}

    bandit = BanditChooser(_scripted_arms(calls), explore_rounds=1)
    model = _fit(px[:300], py[:300])
    rng = np.random.default_rng(0)
    first = bandit(model, px, np.arange(300, 900), 10, rng)
    assert bandit.history[0] in ("dropping", "steady") and len(first) == 10
    bandit(model, px, np.arange(300, 900), 10, rng)
    # The first arm's reward is its drop in flags: 30 -> 10 is 20, 20 -> 20 is 0.
    assert bandit.reward[bandit.history[0]] == {"dropping": 20.0, "steady": 0.0}[bandit.history[0]]
    assert "silent" not in bandit.history


def test_labels_to_reach():
    rounds = [Round(100, 0.6), Round(200, 0.75), Round(300, 0.7), Round(400, 0.8)]
    assert labels_to_reach(rounds, 0.75) == 200 and labels_to_reach(rounds, 0.9) == float("inf")


def test_bandit_draws_among_flags_at_random_unless_told_most_severe_first(pool):
    px, py, *_ = pool
    model = _fit(px[:300], py[:300])
    unlabelled = np.arange(300, 900)
    severity = np.zeros(len(unlabelled))
    severity[:100] = np.linspace(1.0, 2.0, 100)  # the first 100 unlabelled items are flagged, the last most severe

    def arm(model, x, p, labelled):
        return severity

    for severe_first in (False, True):
        picked = BanditChooser({"a": arm}, severe_first=severe_first)(model, px, unlabelled, 10,
                                                                      np.random.default_rng(0))
        assert np.isin(picked, unlabelled[:100]).all() and len(set(picked)) == 10
        top = set(unlabelled[90:100])
        # Most severe first takes exactly the 10 most severe; a uniform draw of 10 of 100 hits all of them
        # with probability 1 / C(100, 10) (it is seeded, so it cannot flake).
        assert (set(picked) == top) == severe_first


def test_bandit_explores_when_no_arm_improved(pool):
    px, py, *_ = pool
    calls = {"rising": [10, 30] + [30] * 40, "steady": [20] * 42}

    bandit = BanditChooser(_scripted_arms(calls), explore_rounds=1)
    model = _fit(px[:300], py[:300])
    rng = np.random.default_rng(1)
    for _ in range(21):
        bandit(model, px, np.arange(300, 900), 5, rng)
    # No arm's flags ever drop (rewards <= 0), so every round is a uniform draw among the arms: both get picked.
    assert max(bandit.reward.values()) <= 0 and set(bandit.history) == {"rising", "steady"}
