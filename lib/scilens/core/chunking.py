"""Split N-d arrays into keyed blocks (optionally with a halo) and put them back.

A block is identified by its *block index*: a tuple with one entry per axis
counting blocks along that axis. Its *core* is the region of the array it
owns; blocks tile the array without overlap, edge blocks being smaller when
the block shape does not divide the array shape. A *halo* of ``h`` elements
per axis extends each block by up to ``h`` on both sides (clipped at the
array edge) so a stencil (e.g. non-local means with a 5-voxel block radius)
sees its neighbourhood; :func:`assemble` drops the halo again.

These are plain numpy functions: they work the same on the driver and inside
Spark UDFs, where a block travels as a tensor plus its :class:`Block` fields.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Block", "assemble", "block_grid", "core_of", "split"]


@dataclass(frozen=True)
class Block:
    """Where one block sits in the full array.

    Attributes
    ----------
    index : tuple of int
        Block index along each axis.
    start, stop : tuple of int
        Bounds of the block's core in the full array.
    halo_start, halo_stop : tuple of int
        Bounds of the stored data (core plus halo, clipped at the edges).
    """

    index: tuple[int, ...]
    start: tuple[int, ...]
    stop: tuple[int, ...]
    halo_start: tuple[int, ...]
    halo_stop: tuple[int, ...]

    @property
    def core_slices(self) -> tuple[slice, ...]:
        """Slices of the core within the stored (haloed) data."""
        return tuple(slice(s - hs, e - hs) for s, e, hs in zip(self.start, self.stop, self.halo_start))

    @property
    def slices(self) -> tuple[slice, ...]:
        """Slices of the stored (haloed) data within the full array."""
        return tuple(slice(s, e) for s, e in zip(self.halo_start, self.halo_stop))


def _per_axis(value: int | Sequence[int], ndim: int, name: str) -> tuple[int, ...]:
    values = tuple(value) if isinstance(value, Iterable) else (value,) * ndim
    if len(values) != ndim:
        raise ValueError(f"{name} has {len(values)} entries for a {ndim}-d array")
    return tuple(int(v) for v in values)


def block_grid(
    shape: Sequence[int], block_shape: int | Sequence[int], halo: int | Sequence[int] = 0
) -> list[Block]:
    """All blocks of an array of ``shape``, in C order of their block index.

    Parameters
    ----------
    shape : sequence of int
        Shape of the full array.
    block_shape : int or sequence of int
        Core size along each axis (an int applies to every axis). Use the
        full axis length to keep an axis whole.
    halo : int or sequence of int, optional
        Extra elements on each side of each block, per axis.
    """
    shape = tuple(int(n) for n in shape)
    ndim = len(shape)
    bshape = _per_axis(block_shape, ndim, "block_shape")
    halo_t = _per_axis(halo, ndim, "halo")
    if any(b <= 0 for b in bshape):
        raise ValueError(f"block_shape must be positive, got {bshape}")
    if any(h < 0 for h in halo_t):
        raise ValueError(f"halo must be non-negative, got {halo_t}")
    counts = [max(1, -(-n // b)) for n, b in zip(shape, bshape)]
    blocks = []
    for index in itertools.product(*(range(c) for c in counts)):
        start = tuple(i * b for i, b in zip(index, bshape))
        stop = tuple(min(s + b, n) for s, b, n in zip(start, bshape, shape))
        hstart = tuple(max(s - h, 0) for s, h in zip(start, halo_t))
        hstop = tuple(min(e + h, n) for e, h, n in zip(stop, halo_t, shape))
        blocks.append(Block(tuple(index), start, stop, hstart, hstop))
    return blocks


def split(
    array: np.ndarray, block_shape: int | Sequence[int], halo: int | Sequence[int] = 0
) -> Iterator[tuple[Block, np.ndarray]]:
    """Yield ``(block, data)`` pairs covering ``array``; ``data`` includes the halo.

    The data are views into ``array`` (no copy).
    """
    for block in block_grid(array.shape, block_shape, halo):
        yield block, array[block.slices]


def core_of(block: Block, data: np.ndarray) -> np.ndarray:
    """The core of a block's data: the halo removed.

    Leading axes of ``data`` beyond the block's are not allowed; trailing
    extra axes (e.g. a per-voxel vector) are kept whole.
    """
    return data[block.core_slices]


def assemble(
    pieces: Iterable[tuple[Block, np.ndarray]], shape: Sequence[int], dtype: np.dtype | None = None, fill=0
) -> np.ndarray:
    """Reassemble blocks into an array of ``shape``, dropping their halos.

    ``shape`` may have trailing axes beyond the blocks' (e.g. blocks over
    (i, j, k) whose data carry a trailing vector axis). Every element not
    covered by a piece keeps ``fill``.
    """
    out = None
    for block, data in pieces:
        data = np.asarray(data)
        if out is None:
            out = np.full(tuple(shape), fill, dtype=dtype or data.dtype)
        out[tuple(slice(s, e) for s, e in zip(block.start, block.stop))] = core_of(block, data)
    if out is None:
        out = np.full(tuple(shape), fill, dtype=dtype or np.float64)
    return out
