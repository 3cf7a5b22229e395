"""The CHI's bounds are bounds, and tight on grid-aligned boxes at bin edges; the quantiser's edge rule."""

from __future__ import annotations

import numpy as np
import pytest

from scilens.masks.chi import Grid, Normalisation, bounds, build_chi, count_dtype, exact_cp, levels
from scilens.synth.masks import saliency_masks

BINS, CELL = 16, 16


@pytest.fixture(scope="module")
def masks():
    # 64 x 64 and a shape whose sides are not multiples of the cell (last cell line at the edge).
    return {shape: saliency_masks(200, shape, seed=3)[0] for shape in ((64, 64), (50, 37))}


def _random_triples(rng, n, h, w, m):
    rows = rng.integers(0, m, n)
    y0 = rng.integers(0, h, n)
    y1 = y0 + 1 + (rng.random(n) * (h - y0)).astype(np.int64)
    x0 = rng.integers(0, w, n)
    x1 = x0 + 1 + (rng.random(n) * (w - x0)).astype(np.int64)
    # Half the thresholds anywhere in [0, 1], half on bin edges (0 and 1 included).
    t = np.where(rng.random(n) < 0.5, rng.random(n), rng.integers(0, BINS + 1, n) / BINS)
    return rows, np.stack([y0, y1, x0, x1], axis=1), t


@pytest.mark.parametrize("shape", [(64, 64), (50, 37)])
def test_bounds_are_bounds(masks, shape):
    m = masks[shape]
    h, w = shape
    chi = build_chi(m, bins=BINS, cell=CELL)
    v = Normalisation.parse("per-mask-max").apply(m)
    rng = np.random.default_rng(11)
    rows, boxes, t = _random_triples(rng, 5000, h, w, len(m))
    exact = np.array([exact_cp(v[r], b, tt)[0] for r, b, tt in zip(rows, boxes, t, strict=True)])
    lo, hi = bounds(chi, Grid(h, w, CELL), BINS, boxes, t, rows=rows)
    assert (lo <= exact).all() and (exact <= hi).all()
    # Not vacuous: most triples leave a gap, some are decided exactly.
    assert (lo < hi).mean() > 0.3 and (exact > 0).mean() > 0.2


@pytest.mark.parametrize("shape", [(64, 64), (50, 37)])
def test_bounds_tight_on_grid_and_edges(masks, shape):
    m = masks[shape]
    h, w = shape
    grid = Grid(h, w, CELL)
    chi = build_chi(m, bins=BINS, cell=CELL)
    v = Normalisation.parse("per-mask-max").apply(m)
    rng = np.random.default_rng(12)
    n = 2000
    iy = np.sort(rng.choice(len(grid.ys), (n, 2), replace=True), axis=1)
    ix = np.sort(rng.choice(len(grid.xs), (n, 2), replace=True), axis=1)
    ok = (iy[:, 0] < iy[:, 1]) & (ix[:, 0] < ix[:, 1])
    boxes = np.stack([grid.ys[iy[ok, 0]], grid.ys[iy[ok, 1]], grid.xs[ix[ok, 0]], grid.xs[ix[ok, 1]]], axis=1)
    rows = rng.integers(0, len(m), len(boxes))
    t = rng.integers(0, BINS + 1, len(boxes)) / BINS
    exact = np.array([exact_cp(v[r], b, tt)[0] for r, b, tt in zip(rows, boxes, t, strict=True)])
    lo, hi = bounds(chi, grid, BINS, boxes, t, rows=rows)
    assert np.array_equal(lo, exact) and np.array_equal(hi, exact)
    assert len(boxes) > 500


def test_edge_rule_counts_strictly_above():
    # A value exactly on an edge is not above it; a hair above is.
    e = 5 / BINS
    q = levels(np.array([0.0, e, np.nextafter(e, 1.0), 1.0]), BINS)
    assert q.tolist() == [0, 5, 6, BINS]
    mask = np.array([[0.0, e, np.nextafter(e, 1.0), 1.0]])
    chi = build_chi(mask, bins=BINS, cell=CELL, normalise="fixed:0,1")
    lo, hi = bounds(chi, Grid(1, 4, CELL), BINS, np.array([0, 1, 0, 4]), e)
    assert lo[0] == hi[0] == 2 == exact_cp(mask[None], np.array([0, 1, 0, 4]), e)[0]


def test_normalisations_and_dtype():
    m = np.array([[[-2.0, 0.0], [1.0, 4.0]]])
    assert Normalisation.parse("per-mask-max").apply(m).tolist() == [[[0.0, 0.0], [0.25, 1.0]]]
    assert Normalisation.parse("abs-per-mask-max").apply(m).tolist() == [[[0.5, 0.0], [0.25, 1.0]]]
    assert Normalisation.parse("fixed:-2,2").apply(m).tolist() == [[[0.0, 0.5], [0.75, 1.0]]]
    assert Normalisation.parse(Normalisation.parse("fixed:-2,2").spec) == Normalisation("fixed", -2.0, 2.0)
    for bad in ("max", "fixed:1,1", "fixed:a,b"):
        with pytest.raises(ValueError, match="normalise="):
            Normalisation.parse(bad)
    assert count_dtype(224 * 224) == np.uint16 and count_dtype(256 * 256) == np.uint32
    assert build_chi(np.zeros((2, 224, 224))).dtype == np.uint16
    assert build_chi(np.zeros((1, 224, 224))).shape == (1, 14 * 14 * 16)
