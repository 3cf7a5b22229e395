"""Consistency assertions: per identifier, along an ordered key, and between two outputs for one item.

Semantics (the tests hold a pandas reference of each, written after OMG's ``model_assertions``):

* :class:`IdentifierConsistencyAssertion` -- one attribute should be constant per identifier. Among an
  identifier's rows with a non-null attribute (``n`` of them), a row whose value ``v`` is shared by ``c(v)``
  rows gets severity ``(n - c(v)) / n``, the share of its identifier disagreeing with it, whenever the
  identifier holds more than one distinct value (OMG flags such an identifier with one row per value; here
  every row is scored, the minority highest, ties equally); consistent identifiers abstain.
  ``per="identifier"`` scores the identifier instead: ``(n - c(mode)) / n``.
* :class:`SequenceConsistencyAssertion` -- OMG's ``TimeConsistencyAssertion``: within each identifier, rows
  sorted by the order key (ties broken by the attribute), a *transition* is a change of the attribute
  between consecutive rows (``|a - b| > tolerance`` for a numeric attribute with a tolerance), or, with no
  attribute, a gap in the order key (``o_k - o_{k-1} > step``), which counts 2 (disappear, reappear) as in
  OMG. The window of order value ``o`` holds the rows with order in ``[o, o + window)``; every row at ``o``
  gets severity = the transitions between consecutive rows of that window when they exceed
  ``allowed_transitions`` (else it abstains).
* :class:`CrossConsistencyAssertion` -- two outputs for the same item (two models, or one model on an item
  and its mirrored copy) disagree: label mismatch (severity 1), probabilities further apart than
  ``tolerance`` (severity ``|p1 - p2|``), or probabilities on two sides of ``cut`` (severity ``|p1 - p2|``).

Cross-view outputs are computed by :func:`view_predictions`: a saved Keras model on each image of an image
table and on its transformed copy (:data:`VIEW_TRANSFORMS`: mirrored left-right, flipped upside down), both
in one pass on the executors (``predict_batch_udf`` of :mod:`scilens.vision.inference`).

Rows with a null identifier, order key, attribute or output (or NaN) take no part and abstain.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from scilens.assertions.common import Assertion, as_list, describe, output_schema, present, rejected_row
from scilens.core.config import Config, field
from scilens.core.inputs import InputError
from scilens.core.quarantine import REJECTED_COLUMN, rejection
from scilens.core.tensor import TENSOR_TYPE, encode_column
from scilens.vision.inference import (
    PREDICTION,
    PROBABILITIES,
    ImageLayout,
    ModelInfo,
    decode_images,
    model_outputs,
)

__all__ = [
    "VIEW_TRANSFORMS",
    "CrossConsistencyAssertion",
    "CrossConsistencyConfig",
    "IdentifierConsistencyAssertion",
    "IdentifierConsistencyConfig",
    "SequenceConsistencyAssertion",
    "SequenceConsistencyConfig",
    "transformed_images",
    "view_predictions",
    "window_transitions",
]

def _nonempty(value: list[str]) -> bool:
    return len(value) > 0


@dataclass
class IdentifierConsistencyConfig(Config):
    """One attribute should be constant per identifier."""

    identifier: list[str] = field(doc="Columns identifying an entity (an eye, a source).", check=_nonempty,
                                  check_doc="at least one column")
    attribute: str = field(doc="The column that should be constant per identifier.")
    per: str = field("row", "'row': score each row by the share of its identifier disagreeing with it; "
                     "'identifier': score each inconsistent identifier.", choices=("row", "identifier"))


class IdentifierConsistencyAssertion(Assertion):
    """Flags identifiers whose attribute takes more than one value (OMG's ``IdentifierConsistencyAssertion``).

    Parameters
    ----------
    identifier : str or sequence of str
        Columns identifying an entity.
    attribute : str
        The column that should be constant per identifier.
    per : {"row", "identifier"}
        What is scored; see the module's semantics.
    name : str, optional
        The assertion's name.
    """

    def __init__(self, identifier: str | Sequence[str], attribute: str, per: str = "row",
                 name: str | None = None) -> None:
        self.config = IdentifierConsistencyConfig(identifier=as_list(identifier), attribute=attribute, per=per)
        self.name = name or f"identifier consistency {'/'.join(self.config.identifier)}: {attribute}"

    def columns(self) -> list[str]:
        """The identifier and attribute columns."""
        return [*self.config.identifier, self.config.attribute]

    def key_columns(self, key: Sequence[str]) -> list[str]:
        """The table's key (``per="row"``) or the identifier (``per="identifier"``).

        Parameters
        ----------
        key : sequence of str
            The table's key columns.

        Returns
        -------
        list of str
            The result's key columns.
        """
        return list(key) if self.config.per == "row" else list(self.config.identifier)

    def evaluate(self, df: DataFrame, key: Sequence[str]) -> DataFrame:
        """Group counts per (identifier, value), then scores joined back to the rows (no collect).

        Parameters
        ----------
        df : DataFrame
            The table.
        key : sequence of str
            The table's key columns.

        Returns
        -------
        DataFrame
            See :meth:`Assertion.evaluate`.
        """
        ids, attr = list(self.config.identifier), self.config.attribute
        valid = df.where(present(df, [*ids, attr]))
        by_id = Window.partitionBy(*ids)
        counts = (valid.groupBy(*ids, attr).agg(F.count(F.lit(1)).alias("_c"))
                  .withColumn("_n", F.sum("_c").over(by_id))
                  .withColumn("_k", F.count(F.lit(1)).over(by_id))
                  .withColumn("_rank", F.row_number().over(by_id.orderBy(F.desc("_c"), F.asc(attr)))))
        mode = counts.where(F.col("_rank") == 1).select(*ids, F.col(attr).alias("_mode"), F.col("_c").alias("_cm"))
        counts = counts.where(F.col("_k") > 1).join(mode, on=ids)
        summary = F.format_string("%d distinct values of %s over %d rows; most common %s (%d rows)",
                                  F.col("_k"), F.lit(attr), F.col("_n"), F.col("_mode").cast("string"),
                                  F.col("_cm"))
        if self.config.per == "identifier":
            out = counts.where(F.col("_rank") == 1).select(
                *ids, ((F.col("_n") - F.col("_cm")) / F.col("_n")).cast("double").alias("severity"),
                summary.alias("detail"))
        else:
            row_key = [c for c in dict.fromkeys(key)]
            out = valid.select(*dict.fromkeys([*row_key, *ids, attr])).join(counts, on=[*ids, attr]).select(
                *row_key, ((F.col("_n") - F.col("_c")) / F.col("_n")).cast("double").alias("severity"),
                F.concat(F.lit(f"{attr}="), F.col(attr).cast("string"),
                         F.format_string(" shared by %d of %d rows; ", F.col("_c"), F.col("_n")),
                         summary).alias("detail"))
        return out.withColumn(REJECTED_COLUMN, F.lit(None).cast(output_schema(df, [])[REJECTED_COLUMN].dataType))


@dataclass
class SequenceConsistencyConfig(Config):
    """At most ``allowed_transitions`` changes within ``window`` along an ordered key, per identifier."""

    identifier: list[str] = field(doc="Columns identifying a sequence (an eye's volume, a patient).",
                                  check=_nonempty,
                                  check_doc="at least one column")
    order: str = field(doc="The ordered key: numeric, date (window in days) or timestamp (window in seconds).")
    attribute: str | None = field(None, "The output that should not change often; none: count gaps in the "
                                  "order key instead (a missing frame), each 2 transitions as in OMG.")
    window: float = field(3.0, "Window length in order-key units: the rows with order in [o, o + window).",
                          min=1e-12, max=1e18)
    allowed_transitions: int = field(1, "Transitions allowed within one window.", min=0)
    tolerance: float | None = field(None, "For a numeric attribute: a change is |a - b| > tolerance "
                                    "(none: any inequality).", min=0.0, max=1e300)
    step: float = field(1.0, "Without an attribute: consecutive rows further apart than this are a gap.",
                        min=0.0, max=1e18)


def window_transitions(order: np.ndarray, values: np.ndarray | None, window: float,
                       tolerance: float | None = None, step: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Transitions within each row's window, for one identifier's rows sorted by (order, value).

    Parameters
    ----------
    order : numpy.ndarray
        The order key, sorted ascending.
    values : numpy.ndarray or None
        The attribute in the same order; None counts gaps in ``order`` (2 each).
    window : float
        Window length: the window of row ``i`` holds the rows with order in ``[order[i], order[i] + window)``.
    tolerance : float, optional
        A numeric change counts only when larger than this.
    step : float
        Gap threshold without an attribute.

    Returns
    -------
    counts : numpy.ndarray
        Transitions between consecutive rows inside each row's window (int64).
    last : numpy.ndarray
        Index of the last row of each row's window.
    """
    n = len(order)
    if values is None:
        changes = np.where(np.diff(order) > step, 2, 0)
    elif tolerance is not None:
        changes = (np.abs(np.diff(values.astype("float64"))) > tolerance).astype(np.int64)
    else:
        changes = (values[1:] != values[:-1]).astype(np.int64)
    cumulative = np.concatenate([[0], np.cumsum(changes, dtype=np.int64)]) if n else np.zeros(0, np.int64)
    first = np.searchsorted(order, order, side="left")
    last = np.searchsorted(order, order + window, side="left") - 1
    return cumulative[last] - cumulative[first], last


def _order_value(df: DataFrame, order: str) -> Column:
    dtype = df.schema[order].dataType
    if isinstance(dtype, T.DateType):
        return F.datediff(F.col(order), F.lit("1970-01-01").cast("date")).cast("long")
    if isinstance(dtype, (T.TimestampType, T.TimestampNTZType)):
        return (F.unix_micros(F.col(order).cast("timestamp")) / 1e6).cast("double")
    if isinstance(dtype, T.IntegralType):
        return F.col(order).cast("long")
    return F.col(order).cast("double")


class SequenceConsistencyAssertion(Assertion):
    """Windows over an ordered key (OMG's ``TimeConsistencyAssertion``), one identifier per pandas group.

    Parameters
    ----------
    identifier : str or sequence of str
        Columns identifying a sequence.
    order : str
        The ordered key (numeric, date or timestamp).
    attribute : str, optional
        The output that should not change often; without one, gaps in ``order`` are counted.
    window, allowed_transitions, tolerance, step
        See :class:`SequenceConsistencyConfig`.
    name : str, optional
        The assertion's name.

    Notes
    -----
    Each identifier's rows are sorted and scored in one ``applyInPandas`` group (an identifier's rows must
    fit in a task's memory: an eye's 128 B-scans, a patient's visits); the table is never collected. A group
    whose scoring raises becomes one rejected row naming the assertion and the identifier.
    """

    def __init__(self, identifier: str | Sequence[str], order: str, attribute: str | None = None,
                 window: float = 3.0, allowed_transitions: int = 1, tolerance: float | None = None,
                 step: float = 1.0, name: str | None = None) -> None:
        self.config = SequenceConsistencyConfig(
            identifier=as_list(identifier), order=order, attribute=attribute, window=window,
            allowed_transitions=allowed_transitions, tolerance=tolerance, step=step)
        what = attribute or "presence"
        self.name = name or f"sequence consistency {'/'.join(self.config.identifier)} over {order}: {what}"

    def columns(self) -> list[str]:
        """The identifier, order and attribute columns."""
        cfg = self.config
        return [*cfg.identifier, cfg.order, *([cfg.attribute] if cfg.attribute else [])]

    def validate(self, df: DataFrame) -> None:
        """Refuse missing columns, an order key that is not numeric, date or timestamp, a tolerance on text.

        Parameters
        ----------
        df : DataFrame
            The table.
        """
        super().validate(df)
        cfg = self.config
        dtype = df.schema[cfg.order].dataType
        if not isinstance(dtype, (T.NumericType, T.DateType, T.TimestampType, T.TimestampNTZType)):
            raise InputError(f"assertion {self.name!r}: the window needs an ordered numeric, date or timestamp "
                             f"key; column {cfg.order!r} is {dtype.simpleString()}")
        if cfg.tolerance is not None and cfg.attribute is not None \
                and not isinstance(df.schema[cfg.attribute].dataType, T.NumericType):
            raise InputError(f"assertion {self.name!r}: a tolerance needs a numeric attribute; column "
                             f"{cfg.attribute!r} is {df.schema[cfg.attribute].dataType.simpleString()}")

    def evaluate(self, df: DataFrame, key: Sequence[str]) -> DataFrame:
        """Each identifier's window counts, the rows over the limit kept.

        Parameters
        ----------
        df : DataFrame
            The table.
        key : sequence of str
            The table's key columns.

        Returns
        -------
        DataFrame
            See :meth:`Assertion.evaluate`.
        """
        cfg, name, key = self.config, self.name, list(key)
        attr = cfg.attribute
        needed = list(dict.fromkeys([*key, *cfg.identifier, *([attr] if attr else [])]))
        rows = (df.where(present(df, [*cfg.identifier, cfg.order, *([attr] if attr else [])]))
                .select(*needed, _order_value(df, cfg.order).alias("_order")))
        sort_by = ["_order", *([attr] if attr else [])]

        def score(group: pd.DataFrame) -> pd.DataFrame:
            try:
                group = group.sort_values(sort_by, kind="mergesort").reset_index(drop=True)
                order = group["_order"].to_numpy()
                values = group[attr].to_numpy() if attr else None
                counts, last = window_transitions(order, values, cfg.window, cfg.tolerance, cfg.step)
                flagged = counts > cfg.allowed_transitions
                out = group.loc[flagged, key].reset_index(drop=True)
                out["severity"] = counts[flagged].astype("float64")
                out["detail"] = [
                    f"{c} transitions of {attr or 'presence'} over {cfg.order} in [{describe(order[i])}, "
                    f"{describe(order[j])}] (window {describe(cfg.window)}, {cfg.allowed_transitions} allowed)"
                    for c, i, j in zip(counts[flagged], np.flatnonzero(flagged), last[flagged])]
                out[REJECTED_COLUMN] = None
                return out
            except Exception as exc:  # this identifier is quarantined, the rest run
                ident = ", ".join(f"{c}={group[c].iloc[0]}" for c in cfg.identifier)
                return rejected_row(key, rejection("", name, exc, ident), name)

        return rows.groupBy(*cfg.identifier).applyInPandas(score, output_schema(df, key))


@dataclass
class CrossConsistencyConfig(Config):
    """Two outputs for the same item should agree."""

    left: str = field(doc="One output (a model's label or probability).")
    right: str = field(doc="The other output for the same item (another model, or the mirrored copy).")
    mode: str = field("label", "'label': severity 1 where the two differ; 'probability': |left - right| where "
                      "it exceeds tolerance; 'decision': |left - right| where the two fall on two sides of cut.",
                      choices=("label", "probability", "decision"))
    tolerance: float = field(0.0, "'probability': the largest difference that is no disagreement.",
                             min=0.0, max=1e300)
    cut: float = field(0.5, "'decision': the threshold turning a probability into a decision (>= cut).",
                       min=-1e300, max=1e300)


class CrossConsistencyAssertion(Assertion):
    """Flags items whose two outputs disagree (cross-model or cross-view consistency).

    Parameters
    ----------
    left, right : str
        The two outputs' columns (the job joins or computes them into one table).
    mode : {"label", "probability", "decision"}
        See :class:`CrossConsistencyConfig`.
    tolerance, cut : float
        See :class:`CrossConsistencyConfig`.
    name : str, optional
        The assertion's name.
    """

    def __init__(self, left: str, right: str, mode: str = "label", tolerance: float = 0.0, cut: float = 0.5,
                 name: str | None = None) -> None:
        self.config = CrossConsistencyConfig(left=left, right=right, mode=mode, tolerance=tolerance, cut=cut)
        self.name = name or f"cross consistency {left} vs {right}"

    def columns(self) -> list[str]:
        """The two output columns."""
        return [self.config.left, self.config.right]

    def validate(self, df: DataFrame) -> None:
        """Refuse missing columns and non-numeric outputs in the probability modes.

        Parameters
        ----------
        df : DataFrame
            The table.
        """
        super().validate(df)
        if self.config.mode != "label":
            for c in self.columns():
                if not isinstance(df.schema[c].dataType, T.NumericType):
                    raise InputError(f"assertion {self.name!r}: mode {self.config.mode!r} needs numeric outputs; "
                                     f"column {c!r} is {df.schema[c].dataType.simpleString()}")

    def evaluate(self, df: DataFrame, key: Sequence[str]) -> DataFrame:
        """Column expressions only: no Python runs.

        Parameters
        ----------
        df : DataFrame
            The table.
        key : sequence of str
            The table's key columns.

        Returns
        -------
        DataFrame
            See :meth:`Assertion.evaluate`.
        """
        cfg = self.config
        left, right = F.col(cfg.left), F.col(cfg.right)
        severity: Any
        if cfg.mode == "label":
            severity = F.when(left != right, F.lit(1.0))
        else:
            gap = F.abs(left.cast("double") - right.cast("double"))
            disagree = gap > cfg.tolerance if cfg.mode == "probability" else (left >= cfg.cut) != (right >= cfg.cut)
            severity = F.when(disagree, gap)
        detail = F.concat(F.lit(f"{cfg.left}="), left.cast("string"), F.lit(f", {cfg.right}="),
                          right.cast("string"))
        out = (df.where(present(df, self.columns()))
                 .select(*dict.fromkeys(key), severity.cast("double").alias("severity"), detail.alias("detail"))
                 .where(F.col("severity") > 0))
        return out.withColumn(REJECTED_COLUMN, F.lit(None).cast(output_schema(df, [])[REJECTED_COLUMN].dataType))


# --- views computed with a model ------------------------------------------------------------------------

VIEW_TRANSFORMS = {"mirror": 1, "vertical_flip": 0}
"""Transforms of an image the model should not care about -> which image axis they reverse (0 height, 1
width: the first and second axes of the stored shape longer than 1, so (28, 28), (28, 28, 1) and (1, 28, 28)
flip alike): ``mirror`` is left-right, ``vertical_flip`` upside down."""

VIEW_COLUMN = "_view_image"


def transformed_images(df: DataFrame, layout: ImageLayout, shape: Sequence[int],
                       transform: str) -> tuple[DataFrame, ImageLayout]:
    """``df`` with a column :data:`VIEW_COLUMN` holding each image transformed, stored as the image is.

    Parameters
    ----------
    df : DataFrame
        Valid image rows (every image has ``shape``; e.g. an opened image table's frame).
    layout : ImageLayout
        How ``df`` stores its images.
    shape : sequence of int
        The stored image shape, (height, width[, channels]).
    transform : str
        A key of :data:`VIEW_TRANSFORMS`.

    Returns
    -------
    frame : DataFrame
        ``df``'s columns and :data:`VIEW_COLUMN` (a tensor of the stored dtype, or ``array<float>``).
    layout : ImageLayout
        The layout of :data:`VIEW_COLUMN`.
    """
    if transform not in VIEW_TRANSFORMS:
        raise InputError(f"view transform {transform!r}; use one of {sorted(VIEW_TRANSFORMS)}")
    shape = tuple(int(n) for n in shape)
    spatial = [i for i, n in enumerate(shape) if n != 1]
    if len(spatial) < 2:
        raise InputError(f"a {transform} needs images of shape (height, width[, channels]), not {shape}")
    axis, column, kind = spatial[VIEW_TRANSFORMS[transform]], layout.column, layout.kind
    # Decoded with the one tensor codec, reversed, encoded back; a flattened array is reshaped around it.
    view_type = TENSOR_TYPE if kind == "tensor" else T.ArrayType(T.FloatType())
    schema = T.StructType([*df.schema.fields, T.StructField(VIEW_COLUMN, view_type)])

    def transform_batches(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            ids = batch["id"].tolist() if "id" in batch else None
            flipped = [np.flip(a, axis) for a in decode_images(batch[column], layout, shape, ids, dtype=None)]
            batch[VIEW_COLUMN] = encode_column(flipped) if kind == "tensor" else [a.ravel() for a in flipped]
            yield batch

    view_layout = ImageLayout(VIEW_COLUMN, kind, (shape,), layout.dtypes)
    return df.mapInPandas(transform_batches, schema), view_layout


def view_predictions(df: DataFrame, info: ModelInfo, layout: ImageLayout, shape: Sequence[int], transform: str,
                     batch_size: int = 128) -> DataFrame:
    """The model's outputs on each image and on its transformed copy, side by side (one lazy pass).

    Parameters
    ----------
    df : DataFrame
        Valid image rows with ``id`` and ``label`` (an opened image table's frame).
    info : ModelInfo
        The saved model.
    layout : ImageLayout
        How ``df`` stores its images.
    shape : sequence of int
        The stored image shape (matching the model's input).
    transform : str
        A key of :data:`VIEW_TRANSFORMS`.
    batch_size : int
        Images per model call.

    Returns
    -------
    DataFrame
        ``id``, ``label``, ``prediction`` (int), ``probabilities`` (``array<float>``), ``view_prediction`` and
        ``view_probabilities`` (the same on the transformed image).
    """
    outputs = [PROBABILITIES, PREDICTION]
    both, view_layout = transformed_images(df, layout, shape, transform)
    return (both.withColumn("_out", model_outputs(info, outputs, layout, batch_size))
                .withColumn("_view", model_outputs(info, outputs, view_layout, batch_size))
                .select("id", "label", F.col("_out.prediction").alias("prediction"),
                        F.col("_out.probabilities").alias("probabilities"),
                        F.col("_view.prediction").alias("view_prediction"),
                        F.col("_view.probabilities").alias("view_probabilities")))
