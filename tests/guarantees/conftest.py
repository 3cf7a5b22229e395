"""Populations with known truth, generated once per session and shared by every trial."""

from __future__ import annotations

import pandas as pd
import pytest

from scilens.synth.proxies import KINDS, proxy_population


@pytest.fixture(scope="session")
def populations() -> dict[str, pd.DataFrame]:
    return {kind: proxy_population(kind, n=20_000, seed=0) for kind in KINDS}
