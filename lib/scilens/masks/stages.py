"""Spark layer of the mask index: every mask's CHI computed by the executor that reads the mask.

:func:`chi_rows` maps :func:`chi_batch` (one Arrow batch of masks -> their
CHIs, no Spark) over a mask table; a mask that cannot be indexed (not 2-D,
NaN or infinite values, undecodable) becomes a ``_rejected`` record naming
its id and the rest proceed. :func:`build_index_spark` checks what the
index needs of the whole table (one shape, unique ids), writes
``chi.parquet`` from the executors sorted by id and then ``index.json``
(:func:`scilens.masks.index.write_meta`); nothing is collected to the
driver but the shape counts and one duplicate id, if any.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from scilens.core import tensor
from scilens.core.inputs import InputError
from scilens.core.parquet import write_sorted
from scilens.core.quarantine import REJECTED_COLUMN, rejection, with_rejected_field
from scilens.core.session import arrow_batch_bytes
from scilens.masks.chi import Grid, Normalisation, build_chi
from scilens.masks.index import CHI_TABLE, write_meta

__all__ = ["build_index_spark", "chi_batch", "chi_rows"]

log = logging.getLogger(__name__)


def chi_batch(batch: pd.DataFrame, *, table: str, mask_column: str, key_columns: Sequence[str], bins: int,
              cell: int, normalise: Normalisation) -> pd.DataFrame:
    """The CHI of every mask of one batch (masks of several shapes are indexed shape by shape).

    Parameters
    ----------
    batch : pandas.DataFrame
        ``key_columns`` and ``mask_column`` (tensor records).
    table : str
        The mask table, named in rejections.
    mask_column : str
        Tensor column.
    key_columns : sequence of str
        Key columns; the first is the mask id.
    bins, cell : int
        Levels and grid spacing.
    normalise : Normalisation
        The rule.

    Returns
    -------
    pandas.DataFrame
        ``key_columns``, ``height``, ``width``, ``chi`` (little-endian bytes of the
        flattened CHI) and ``_rejected`` (a record for a mask that cannot be indexed).
    """
    id_column = key_columns[0]
    masks: list[np.ndarray | None] = []
    problems: list[dict[str, str] | None] = []
    for mask_id, record in zip(batch[id_column], batch[mask_column], strict=True):
        mask, problem = _checked(record)
        masks.append(mask)
        problems.append(None if problem is None else
                        rejection(table, "mask-index", f"mask {id_column}={mask_id} {problem}", str(mask_id)))
    out = batch[list(key_columns)].copy()
    out["height"] = [None if m is None else m.shape[0] for m in masks]
    out["width"] = [None if m is None else m.shape[1] for m in masks]
    chis: list[bytes | None] = [None] * len(masks)
    shapes = {m.shape for m in masks if m is not None}
    for shape in shapes:
        same = [(i, m) for i, m in enumerate(masks) if m is not None and m.shape == shape]
        rows = [i for i, _ in same]
        built = build_chi(np.stack([m for _, m in same]), bins=bins, cell=cell, normalise=normalise)
        little = built.astype(built.dtype.newbyteorder("<"), copy=False)
        for i, chi in zip(rows, little, strict=True):
            chis[i] = chi.tobytes()
    out["chi"] = chis
    out[REJECTED_COLUMN] = problems
    return out


def _checked(record: Any) -> tuple[np.ndarray | None, str | None]:
    """A mask ready to index, or why it is not."""
    try:
        mask = tensor.decode(record)
    except (ValueError, TypeError, KeyError) as err:
        return None, f"cannot be decoded: {err}"
    if mask.ndim != 2 or 0 in mask.shape:
        return None, f"is not a non-empty 2-D mask (shape {mask.shape})"
    if not np.issubdtype(mask.dtype, np.number) or np.issubdtype(mask.dtype, np.complexfloating):
        return None, f"has dtype {mask.dtype}, not real numbers"
    finite = np.isfinite(mask)
    if not finite.all():
        what = "NaN" if np.isnan(mask).any() else "an infinite value"
        return None, f"holds {what} ({int((~finite).sum())} pixels)"
    return mask, None


def chi_rows(frame: DataFrame, *, table: str, mask_column: str, key_columns: Sequence[str], bins: int, cell: int,
             normalise: Normalisation) -> DataFrame:
    """Map :func:`chi_batch` over a mask table (lazy).

    Parameters
    ----------
    frame : DataFrame
        The mask table (at least ``key_columns`` and ``mask_column``).
    table : str
        Its path, named in rejections.
    mask_column : str
        Tensor column.
    key_columns : sequence of str
        Key columns; the first is the mask id (an integer).
    bins, cell : int
        Levels and grid spacing.
    normalise : Normalisation
        The rule.

    Returns
    -------
    DataFrame
        One row per mask: the keys, ``height``, ``width``, ``chi`` and ``_rejected``.
    """
    for name in [*key_columns, mask_column]:
        if name not in frame.columns:
            raise InputError(f"{table}: no column {name!r}; the mask table has {frame.columns}")
    id_type = frame.schema[key_columns[0]].dataType
    if not isinstance(id_type, T.IntegralType):
        raise InputError(f"{table}: the mask id {key_columns[0]!r} (the first key column) must be an integer "
                         f"column, it is {id_type.simpleString()}")
    keys = [T.StructField(c, frame.schema[c].dataType, True) for c in key_columns]
    schema = with_rejected_field(T.StructType([*keys, T.StructField("height", T.IntegerType()),
                                               T.StructField("width", T.IntegerType()),
                                               T.StructField("chi", T.BinaryType())]))

    def build(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            yield chi_batch(batch, table=table, mask_column=mask_column, key_columns=key_columns, bins=bins,
                            cell=cell, normalise=normalise)

    return frame.select(*key_columns, mask_column).mapInPandas(build, schema)


def build_index_spark(frame: DataFrame, output: str | Path, *, table: str, mask_column: str,
                      key_columns: Sequence[str], bins: int, cell: int, normalise: str | Normalisation,
                      source: Mapping[str, Any]) -> tuple[dict[str, Any], DataFrame]:
    """Build and write the mask index of ``frame`` under ``output``.

    Parameters
    ----------
    frame : DataFrame
        The masks to index (a mask table, or the rows of one chosen by a condition).
    output : path-like
        The index directory.
    table : str
        The mask table's path, named in errors and rejections.
    mask_column : str
        Tensor column.
    key_columns : sequence of str
        Key columns; the first is the mask id (integer, unique).
    bins, cell : int
        Levels and grid spacing.
    normalise : str or Normalisation
        The rule.
    source : mapping
        What the index records it was built from (must hold ``digest``).

    Returns
    -------
    tuple
        ``index.json``'s content, and the rejected records (a DataFrame of
        :data:`scilens.core.quarantine.REJECTED_TYPE`, already computed).

    Raises
    ------
    InputError
        Masks of several shapes (naming each with its count), a mask id held
        twice (naming it), or no mask left to index.
    """
    rule = Normalisation.parse(normalise)
    rows = chi_rows(frame, table=table, mask_column=mask_column, key_columns=key_columns, bins=bins, cell=cell,
                    normalise=rule)
    if not isinstance(frame.schema[mask_column].dataType, T.StructType):
        raise InputError(f"{table}: column {mask_column!r} is {frame.schema[mask_column].dataType.simpleString()}, "
                         f"not a scilens tensor (struct of shape, dtype, data)")
    # Arrow batches sized by one mask's bytes, so an executor holds a bounded number of masks at once
    first = frame.select(F.col(f"{mask_column}.data")).where(F.col(mask_column).isNotNull()).first()
    row_bytes = len(first[0]) if first is not None else 1 << 20
    with arrow_batch_bytes(frame.sparkSession, row_bytes):
        # persisted: the shapes, the duplicate check, the write and the rejections read it; CHIs are small
        rows = rows.persist()
        shapes = rows.where(F.col(REJECTED_COLUMN).isNull()).groupBy("height", "width").count().collect()
    try:
        rejected = rows.where(F.col(REJECTED_COLUMN).isNotNull()).select(f"{REJECTED_COLUMN}.*").cache()
        n_rejected = rejected.count()
        good = rows.where(F.col(REJECTED_COLUMN).isNull())
        _check_shapes(shapes, table)
        id_column = key_columns[0]
        twice = good.groupBy(id_column).count().where(F.col("count") > 1).limit(1).collect()
        if twice:
            raise InputError(f"{table}: mask id {id_column}={twice[0][0]} is held by {twice[0][1]} rows; the first "
                             f"key column must identify one mask (e.g. key_columns=[mask_id, id, method] for masks "
                             f"of several methods per image)")
        height, width, n = int(shapes[0]["height"]), int(shapes[0]["width"]), int(shapes[0]["count"])
        out = Path(output)
        chi = good.select(F.col(id_column).cast("long").alias(id_column), *key_columns[1:], "chi")
        write_sorted(chi, out / CHI_TABLE, [id_column])
        meta = write_meta(out, grid=Grid(height, width, cell), bins=bins, normalisation=rule, rows=n,
                          keys=list(key_columns[1:]), source={**source, "mask_column": mask_column},
                          id_column=id_column)
        log.info("indexed %d masks of %d x %d (%d rejected): %d index bytes", n, height, width, n_rejected,
                 meta["bytes"]["chi"])
        return meta, rejected
    finally:
        rows.unpersist()


def _check_shapes(shapes: list[Any], table: str) -> None:
    if not shapes:
        raise InputError(f"{table}: no mask to index (every row was rejected or none was chosen)")
    if len(shapes) > 1:
        named = ", ".join(f"{r['height']}x{r['width']} ({r['count']} masks)"
                          for r in sorted(shapes, key=lambda r: (r["height"], r["width"])))
        raise InputError(f"{table}: masks of different shapes in one index: {named}; index each shape "
                         f"separately (where=...)")
