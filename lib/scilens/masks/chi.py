"""Pure kernels of the mask index: the quantiser, the CHI, exact counts and their bounds.

A mask is a 2-D array of floats. Its values are first *normalised* to
``[0, 1]`` by a rule (:class:`Normalisation`), then compared with
thresholds. Queries count ``CP(mask, roi, t)``: the pixels of a half-open box
``roi = (y0, y1, x0, x1)`` whose normalised value is ``> t``.

**Quantiser (shared by the index and the verifier).** With ``bins`` levels
the edges are ``e_l = l / bins`` for ``l = 0 .. bins-1`` (float64, computed by
one division each). A pixel of normalised value ``v`` has level
``q(v) = #{l : e_l < v}`` (``0 .. bins``), so ``v > e_l  <=>  q(v) > l``
exactly: the count above any edge is a count of levels, with no rounding
between the two. ``v = 0`` has level 0 and is above no edge; ``t = 1`` is the
top edge (nothing is above it), so every ``l / bins``, ``l = 0 .. bins``, is
answered exactly.

**CHI layout.** Grid lines along y are ``0, cell, 2 cell, ...`` plus ``H``
when ``H`` is not a multiple of ``cell`` (likewise along x): ``gy = ceil(H /
cell) + 1`` lines. ``chi[i, j, l]`` is the number of pixels in
``[0, ys[i]) x [0, xs[j])`` with ``v > e_l`` (cumulative over both axes,
reverse-cumulative over levels). Row and column 0 are all zeros and are not
stored: a mask's CHI is ``(gy - 1, gx - 1, bins)`` counts, flattened. Counts
are stored in the smallest unsigned integer dtype holding ``H x W``
(:func:`count_dtype`: uint16 up to 65,535 pixels, so 224 x 224 is uint16).

**Bounds.** For any box the count above edge ``e_l`` inside a box between grid
lines is four look-ups. For a box that is not aligned, the *inner* box
(grid lines inside it) gives a lower bound and the *outer* box (grid lines
around it) an upper bound; for a threshold between edges, ``e_lo <= t <=
e_hi`` (the nearest edges), ``count(v > e_hi) <= count(v > t) <= count(v >
e_lo)``. Both bounds equal the exact count when the box lies on grid lines
and ``t`` is an edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "NORMALISATIONS",
    "Grid",
    "Normalisation",
    "bounds",
    "build_chi",
    "check_boxes",
    "check_thresholds",
    "count_dtype",
    "edges",
    "exact_cp",
    "levels",
]

NORMALISATIONS = ("per-mask-max", "fixed", "abs-per-mask-max")


@dataclass(frozen=True)
class Normalisation:
    """How mask values map to ``[0, 1]``, parsed once from ``per-mask-max|abs-per-mask-max|fixed:<lo>,<hi>``.

    Rules (computed in float64; results clipped to ``[0, 1]``):

    * ``per-mask-max``: ``v / max(v)`` (negative values become 0); a mask whose
      maximum is ``<= 0`` is all 0;
    * ``abs-per-mask-max``: ``|v| / max|v|``; an all-zero mask stays 0;
    * ``fixed:<lo>,<hi>``: ``(v - lo) / (hi - lo)``, ``lo < hi``.

    Attributes
    ----------
    kind : str
        One of :data:`NORMALISATIONS`.
    lo, hi : float
        The fixed range (only for ``fixed``).
    """

    kind: str
    lo: float = 0.0
    hi: float = 1.0

    @classmethod
    def parse(cls, spec: str | Normalisation) -> Normalisation:
        """Parse a rule.

        Parameters
        ----------
        spec : str or Normalisation
            ``"per-mask-max"``, ``"abs-per-mask-max"`` or ``"fixed:<lo>,<hi>"``.

        Returns
        -------
        Normalisation
            The rule.

        Raises
        ------
        ValueError
            On an unknown rule or a fixed range that is not ``lo < hi`` (finite).
        """
        if isinstance(spec, Normalisation):
            return spec
        text = str(spec).strip()
        if text in ("per-mask-max", "abs-per-mask-max"):
            return cls(text)
        if text.startswith("fixed:"):
            parts = text[len("fixed:") :].split(",")
            try:
                lo, hi = (float(p) for p in parts)
            except ValueError:
                raise ValueError(f"normalise={spec!r}: expected fixed:<lo>,<hi> with two numbers") from None
            if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
                raise ValueError(f"normalise={spec!r}: the fixed range needs finite lo < hi")
            return cls("fixed", lo, hi)
        raise ValueError(f"normalise={spec!r}: use per-mask-max, abs-per-mask-max or fixed:<lo>,<hi>")

    @property
    def spec(self) -> str:
        """Return the rule as text (what ``index.json`` stores; :meth:`parse` reads it back)."""
        return f"fixed:{self.lo!r},{self.hi!r}" if self.kind == "fixed" else self.kind

    def apply(self, masks: np.ndarray, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """Normalise masks to ``[0, 1]``, optionally only inside a box (the scale still from the whole mask).

        Parameters
        ----------
        masks : numpy.ndarray
            (M, H, W) or (H, W) values (finite).
        box : tuple of int, optional
            ``(y0, y1, x0, x1)``: return only this crop, equal to cropping the
            whole result (elementwise, same scale), at the cost of the crop.

        Returns
        -------
        numpy.ndarray
            float64 of the same shape (or the crop's), in ``[0, 1]``.
        """
        raw = np.asarray(masks)
        part = raw if box is None else raw[..., box[0] : box[1], box[2] : box[3]]
        if self.kind == "fixed":
            out = (part.astype(np.float64) - self.lo) / (self.hi - self.lo)
            return np.clip(out, 0.0, 1.0)
        if self.kind == "abs-per-mask-max":
            if raw.dtype.kind in "iu":  # |int16 -32768| overflows in int16; |x| of an integer is exact in float64
                raw, part = raw.astype(np.float64), part.astype(np.float64)
            raw, part = np.abs(raw), np.abs(part)
        # The max of the values equals the max of their float64 casts: the scale is the same either way.
        top = raw.max(axis=(-2, -1), keepdims=True).astype(np.float64)
        safe = np.where(top > 0, top, 1.0)
        return np.clip(np.where(top > 0, part.astype(np.float64) / safe, 0.0), 0.0, 1.0)


def count_dtype(n_pixels: int) -> np.dtype:
    """Return the smallest unsigned dtype holding counts up to ``n_pixels`` (uint16 up to 65,535).

    Parameters
    ----------
    n_pixels : int
        ``H x W``.

    Returns
    -------
    numpy.dtype
        uint16, uint32 or uint64.
    """
    for dt in (np.uint16, np.uint32):
        if n_pixels <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.uint64)


def edges(bins: int) -> np.ndarray:
    """Return the ``bins`` bin edges ``l / bins`` (float64), the thresholds the index answers exactly.

    Parameters
    ----------
    bins : int
        Number of levels, 1..255.

    Returns
    -------
    numpy.ndarray
        (bins,) float64.
    """
    if not 1 <= bins <= 255:
        raise ValueError(f"bins must be in 1..255, got {bins}")
    return np.arange(bins, dtype=np.float64) / bins


def levels(normalised: np.ndarray, bins: int) -> np.ndarray:
    """Quantise normalised values: ``q(v) = #{l : l / bins < v}`` (0..bins).

    Parameters
    ----------
    normalised : numpy.ndarray
        Values in ``[0, 1]``.
    bins : int
        Number of levels.

    Returns
    -------
    numpy.ndarray
        uint8 levels, same shape.
    """
    return np.searchsorted(edges(bins), normalised, side="left").astype(np.uint8)


@dataclass(frozen=True)
class Grid:
    """The CHI's grid lines for one mask shape.

    Attributes
    ----------
    height, width : int
        Mask shape.
    cell : int
        Grid spacing in pixels.
    """

    height: int
    width: int
    cell: int

    def lines(self, size: int) -> np.ndarray:
        """Return the grid lines along an axis of ``size`` pixels (``0, cell, ...`` and ``size``)."""
        pts = np.arange(0, size, self.cell, dtype=np.int64)
        return np.append(pts, size)

    @property
    def ys(self) -> np.ndarray:
        """Return the grid lines along y."""
        return self.lines(self.height)

    @property
    def xs(self) -> np.ndarray:
        """Return the grid lines along x."""
        return self.lines(self.width)

    @property
    def shape(self) -> tuple[int, int]:
        """Return ``(gy - 1, gx - 1)``, the stored grid (row and column 0 dropped)."""
        return len(self.ys) - 1, len(self.xs) - 1

    def floor_line(self, coord: np.ndarray, size: int) -> np.ndarray:
        """Return the index of the largest grid line ``<= coord``."""
        n_lines = -(-size // self.cell) + 1
        return np.where(coord >= size, n_lines - 1, coord // self.cell)

    def ceil_line(self, coord: np.ndarray) -> np.ndarray:
        """Return the index of the smallest grid line ``>= coord`` (the last line is the edge)."""
        return -(-coord // self.cell)


def _check_masks(masks: np.ndarray) -> np.ndarray:
    m = np.asarray(masks)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3:
        raise ValueError(f"masks must be (M, H, W) or (H, W), got shape {m.shape}")
    return m


def build_chi(masks: np.ndarray, *, bins: int = 16, cell: int = 16,
              normalise: str | Normalisation = "per-mask-max") -> np.ndarray:
    """CHI of each mask, flattened: ``(M, (gy-1) * (gx-1) * bins)`` counts in :func:`count_dtype`.

    Parameters
    ----------
    masks : numpy.ndarray
        (M, H, W) or (H, W) finite values.
    bins : int, default 16
        Levels.
    cell : int, default 16
        Grid spacing.
    normalise : str or Normalisation, default "per-mask-max"
        Normalisation rule.

    Returns
    -------
    numpy.ndarray
        (M, K) counts; ``chi.reshape(M, gy-1, gx-1, bins)[m, i-1, j-1, l]`` is the
        count of pixels in ``[0, ys[i]) x [0, xs[j])`` with ``v > l / bins``.
    """
    m = _check_masks(masks)
    n, h, w = m.shape
    if cell < 1:
        raise ValueError(f"cell must be >= 1, got {cell}")
    grid = Grid(h, w, cell)
    gy, gx = grid.shape
    dtype = count_dtype(h * w)
    out = np.empty((n, gy, gx, bins), dtype=dtype)
    rule = Normalisation.parse(normalise)
    # Each pixel's cell, so one bincount gives every cell's histogram of levels.
    cell_of = (np.arange(h)[:, None] // cell) * gx + (np.arange(w)[None, :] // cell)
    n_keys = gy * gx * (bins + 1)
    step = max(1, (1 << 22) // max(1, h * w))
    for s in range(0, n, step):
        q = levels(rule.apply(m[s : s + step]), bins).astype(np.int64)
        k = len(q)
        keys = (np.arange(k)[:, None, None] * (gy * gx) + cell_of) * (bins + 1) + q
        hist = np.bincount(keys.ravel(), minlength=k * n_keys).reshape(k, gy, gx, bins + 1)
        # Pixels above edge l are those of level > l: a reverse cumulative sum over levels 1..bins.
        above = hist[..., :0:-1].cumsum(axis=-1)[..., ::-1]
        out[s : s + step] = above.cumsum(axis=1).cumsum(axis=2)
    return out.reshape(n, -1)


def check_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Check half-open boxes ``(y0, y1, x0, x1)`` lie inside an ``H x W`` mask and are not empty.

    Parameters
    ----------
    boxes : array-like
        (4,) or (n, 4) integers.
    height, width : int
        Mask shape.

    Returns
    -------
    numpy.ndarray
        (n, 4) int64.

    Raises
    ------
    ValueError
        Naming the first bad box and the mask shape.
    """
    b = np.asarray(boxes)
    b2 = np.atleast_2d(b)
    if b2.ndim != 2 or b2.shape[1] != 4:
        raise ValueError(f"a box is (y0, y1, x0, x1); got shape {b.shape}")
    if b2.size and not np.issubdtype(b2.dtype, np.integer):
        as_int = b2.astype(np.int64)
        if not np.array_equal(as_int, b2):
            raise ValueError(f"box coordinates must be integers, got {b2[0].tolist()}")
        b2 = as_int
    b2 = b2.astype(np.int64)
    y0, y1, x0, x1 = b2.T
    bad = (y0 < 0) | (x0 < 0) | (y1 > height) | (x1 > width) | (y0 >= y1) | (x0 >= x1)
    if bad.any():
        first = b2[np.flatnonzero(bad)[0]].tolist()
        raise ValueError(
            f"box (y0, y1, x0, x1) = {tuple(first)} is outside the {height} x {width} mask or empty "
            f"(need 0 <= y0 < y1 <= {height}, 0 <= x0 < x1 <= {width})"
        )
    return b2


def check_thresholds(thresholds: float | np.ndarray) -> np.ndarray:
    """Check thresholds lie in ``[0, 1]``.

    Parameters
    ----------
    thresholds : float or array-like
        Normalised thresholds.

    Returns
    -------
    numpy.ndarray
        float64, at least 1-D.
    """
    t = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    bad = ~((t >= 0.0) & (t <= 1.0))
    if bad.any():
        raise ValueError(f"threshold {float(t[np.flatnonzero(bad)[0]])!r} is outside [0, 1] (values are normalised)")
    return t


def exact_cp(normalised: np.ndarray, boxes: np.ndarray, thresholds: float | np.ndarray) -> np.ndarray:
    """Exact ``CP``: pixels of each box with normalised value ``> threshold``.

    Parameters
    ----------
    normalised : numpy.ndarray
        (M, H, W) normalised masks (:meth:`Normalisation.apply`).
    boxes : numpy.ndarray
        (M, 4) or (4,) half-open boxes ``(y0, y1, x0, x1)``.
    thresholds : float or numpy.ndarray
        Scalar or (M,) thresholds.

    Returns
    -------
    numpy.ndarray
        (M,) int64 counts.
    """
    v = _check_masks(normalised)
    n = v.shape[0]
    b = np.broadcast_to(np.atleast_2d(boxes), (n, 4))
    t = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (n,))
    if n and (b == b[0]).all():
        y0, y1, x0, x1 = (int(c) for c in b[0])
        return np.count_nonzero(v[:, y0:y1, x0:x1] > t[:, None, None], axis=(1, 2)).astype(np.int64)
    # Boxes differ per mask: one integral image of the pixels above, then four look-ups each.
    integral = np.zeros((n, v.shape[1] + 1, v.shape[2] + 1), dtype=np.int64)
    integral[:, 1:, 1:] = (v > t[:, None, None]).cumsum(axis=1).cumsum(axis=2)
    r = np.arange(n)
    ys0, ys1, xs0, xs1 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    return integral[r, ys1, xs1] - integral[r, ys0, xs1] - integral[r, ys1, xs0] + integral[r, ys0, xs0]


def _box_count(chi: np.ndarray, rows: np.ndarray, shape: tuple[int, int, int],
               iy: tuple[np.ndarray, np.ndarray], ix: tuple[np.ndarray, np.ndarray],
               level: np.ndarray) -> np.ndarray:
    """Count above ``level`` in grid box ``[iy0, iy1) x [ix0, ix1)`` (line indices) by four look-ups."""
    _, gx, bins = shape
    total = np.zeros(len(rows), dtype=np.int64)
    for yi, sy in ((iy[1], 1), (iy[0], -1)):
        for xi, sx in ((ix[1], 1), (ix[0], -1)):
            # Line 0 is not stored: its cumulative count is 0.
            ok = (yi > 0) & (xi > 0) & (level < bins)
            flat = ((np.maximum(yi, 1) - 1) * gx + (np.maximum(xi, 1) - 1)) * bins + np.minimum(level, bins - 1)
            total += sy * sx * np.where(ok, chi[rows, flat].astype(np.int64), 0)
    return total


def bounds(chi: np.ndarray, grid: Grid, bins: int, boxes: np.ndarray, thresholds: float | np.ndarray,
           rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of ``CP`` from the CHI, for any boxes and thresholds in ``[0, 1]``.

    Parameters
    ----------
    chi : numpy.ndarray
        (M, K) flattened CHIs (:func:`build_chi`).
    grid : Grid
        The masks' grid.
    bins : int
        Levels.
    boxes : numpy.ndarray
        (4,) or (n, 4) checked boxes (:func:`check_boxes`).
    thresholds : float or numpy.ndarray
        Scalar or (n,) thresholds in ``[0, 1]``.
    rows : numpy.ndarray, optional
        (n,) rows of ``chi`` to bound (default all ``M``).

    Returns
    -------
    tuple of numpy.ndarray
        (n,) int64 lower and upper bounds; both exact for grid-aligned boxes and edge thresholds.
    """
    r = np.arange(chi.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
    n = len(r)
    b = np.broadcast_to(np.atleast_2d(boxes), (n, 4))
    t = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (n,))
    e = edges(bins)
    # e[lo] <= t <= e[hi]; hi == bins means t is above the last edge: nothing can be above it.
    lo_level = np.searchsorted(e, t, side="right") - 1
    hi_level = np.searchsorted(e, t, side="left")
    y0, y1, x0, x1 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    h, w = grid.height, grid.width
    gy, gx = grid.shape
    shape = (gy, gx, bins)
    inner_y = (grid.ceil_line(y0), grid.floor_line(y1, h))
    inner_x = (grid.ceil_line(x0), grid.floor_line(x1, w))
    outer_y = (grid.floor_line(y0, h), grid.ceil_line(y1))
    outer_x = (grid.floor_line(x0, w), grid.ceil_line(x1))
    empty = (inner_y[0] >= inner_y[1]) | (inner_x[0] >= inner_x[1])
    lower = np.where(empty, 0, _box_count(chi, r, shape, inner_y, inner_x, hi_level))
    # Normalised values never exceed 1: nothing is above t = 1, the top edge.
    upper = np.where(t >= 1.0, 0, _box_count(chi, r, shape, outer_y, outer_x, lo_level))
    return lower, upper
