"""Populations with a cheap proxy score and a known oracle, for testing sampling with guarantees.

Every population has ``id``, ``proxy`` (in [0, 1]), ``value`` (a statistic in [0, 1], the aggregation
oracle) and ``label`` (0/1, the selection oracle), all driven by one latent normal ``z`` per row:

* ``strong``: ``value = sigmoid(1.5 z)`` and ``proxy`` the same with noise (correlation with ``value``
  about 0.97, with ``label`` about 0.6); ``label = 1[z + noise > 1]`` (about 17% positives).
* ``useless``: ``strong`` with its proxy column shuffled (correlation about 0).
* ``rare``: ``label = 1[z + noise > 2.2]`` (about 2% positives), ``value = label`` (a skewed statistic);
  the proxy ranks well but is not calibrated (scores shrunk towards 0), the case SUPG++ is made for.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["KINDS", "proxy_population"]

KINDS = ("strong", "useless", "rare")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def proxy_population(kind: str, n: int = 20_000, seed: int = 0) -> pd.DataFrame:
    """A population of ``n`` rows of the given ``kind`` (see the module docstring).

    Parameters
    ----------
    kind : str
        One of :data:`KINDS`.
    n : int
        Rows.
    seed : int
        Seed of every random choice.

    Returns
    -------
    pandas.DataFrame
        Columns ``id`` (0..n-1), ``proxy``, ``value``, ``label``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(n)
    noise = rng.standard_normal((3, n))
    if kind == "rare":
        label = (z + 0.4 * noise[0] > 2.2).astype(np.int64)
        value = label.astype(np.float64)
        proxy = 0.3 * _sigmoid(3.0 * (z + 0.3 * noise[1] - 2.2))
    else:
        value = _sigmoid(1.5 * z)
        label = (z + 0.3 * noise[0] > 1.0).astype(np.int64)
        proxy = _sigmoid(1.5 * (z + 0.25 * noise[1]))
        if kind == "useless":
            proxy = rng.permutation(proxy)
    return pd.DataFrame({"id": np.arange(n, dtype=np.int64), "proxy": proxy, "value": value, "label": label})
