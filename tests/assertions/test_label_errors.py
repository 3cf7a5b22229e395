"""Finding label errors (issue 18): on real Fashion-MNIST with 5% of the labels flipped (seeded), the
learned assertion's top 100 items are mostly the flipped ones.

The model is a multinomial logistic regression on 14x14 block-averaged pixels (seconds to fit; the bench
uses the LeNet-5 and compares with cleanlab), cross-fitted over three folds so no item is scored by a
model that learned its label.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from scilens.assertions.label_errors import cross_fitted, label_error_features, label_error_severity
from scilens.diagnosis.datasets import fashion_mnist

ITEMS, FLIPPED = 3000, 0.05


def _fit_predict(train_x, train_y, test_x):
    return LogisticRegression(max_iter=300).fit(train_x, train_y).predict_proba(test_x)


@pytest.fixture(scope="module")
def flipped():
    train = fashion_mnist("train")
    rng = np.random.default_rng(0)
    idx = rng.choice(len(train.labels), ITEMS, replace=False)
    x = train.images[idx, :, :, 0].reshape(ITEMS, 14, 2, 14, 2).mean(axis=(2, 4)).reshape(ITEMS, -1) / 255.0
    truth = train.labels[idx]
    wrong = rng.random(ITEMS) < FLIPPED
    given = truth.copy()
    given[wrong] = (given[wrong] + rng.integers(1, 10, wrong.sum())) % 10  # always another class
    return x, truth, given, wrong


def test_the_top_100_flagged_items_are_mostly_flipped_labels(flipped):
    x, truth, given, wrong = flipped
    p = cross_fitted(x, given, _fit_predict, folds=3, seed=0)
    severity = label_error_severity(p, given)
    top = np.argsort(-severity, kind="stable")[:100]
    precision = wrong[top].mean()
    print(f"\n{wrong.sum()} flipped of {ITEMS} (base rate {wrong.mean():.3f}); model accuracy on the truth "
          f"{(p.argmax(1) == truth).mean():.3f}; top-100 precision {precision:.2f}")
    assert precision >= 0.5 and precision >= 10 * wrong.mean()
    # Without cross-fitting the model has seen the wrong labels: it confirms many of them.
    in_sample = _fit_predict(x, given, x)
    assert (in_sample.argmax(1) == given)[wrong].mean() > (p.argmax(1) == given)[wrong].mean()


def test_features_and_one_sided_severity():
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4], [0.2, 0.8], [0.1, 0.9], [0.3, 0.7], [0.95, 0.05]])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    features, trusted = label_error_features(p, labels)
    assert trusted.tolist() == [True, True, True, True, True, True, True, False]
    assert np.allclose(features[:, 0], np.log(p[np.arange(8), labels]))
    assert np.allclose(features[:, 1], np.log(p[np.arange(8), labels]) - np.log(p[np.arange(8), 1 - labels]))
    severity = label_error_severity(p, labels)
    assert severity[0] == 0.0 and severity[5] == 0.0  # more confident than the class's median: no suspect
    assert severity[7] == severity.max() > 0  # labelled 1, the model says 0 with 0.95
    with pytest.raises(ValueError, match="class 1: 1 trusted"):
        label_error_severity(np.array([[0.9, 0.1], [0.8, 0.2], [0.2, 0.8]]), np.array([0, 0, 1]))
    with pytest.raises(ValueError, match="folds"):
        cross_fitted(np.zeros((4, 1)), np.zeros(4, int), _fit_predict, folds=1)
