"""``Checker``: registers assertions and runs them all over one table into one severity table (OMG's API)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from scilens.assertions.common import RESULT_SCHEMA, Assertion, as_list, require_columns
from scilens.core.inputs import InputError
from scilens.core.quarantine import REJECTED_COLUMN
from scilens.core.session import arrow_batch_bytes

__all__ = ["ROW_BYTES", "CheckResult", "Checker"]

ROW_BYTES = 1024
"""Bytes an Arrow batch budgets per row of a model-output table: small tabular rows, thousands per batch
(the session's default batch is sized for images)."""


@dataclass
class CheckResult:
    """What a run of the assertions gives: one severity table and the rejected rows (both lazy, one pass).

    Attributes
    ----------
    severities : DataFrame
        :data:`~scilens.assertions.common.RESULT_SCHEMA`: ``assertion``, ``key`` (map<string,string>:
        the judged row's key columns, or the group's columns for per-group assertions, values as text),
        ``severity`` (double > 0), ``detail``.
    rejected : DataFrame
        :data:`scilens.core.quarantine.REJECTED_TYPE` rows: rows (or groups) on which an assertion raised,
        ``step`` the assertion's name.
    """

    severities: DataFrame
    rejected: DataFrame
    _persisted: list[DataFrame] = field(default_factory=list, repr=False)

    @contextlib.contextmanager
    def sized_batches(self) -> Iterator[int]:
        """Arrow batches sized for small tabular rows (:data:`ROW_BYTES`) for the actions run in the block.

        Yields
        ------
        int
            Rows per Arrow batch inside the block.
        """
        with arrow_batch_bytes(self.severities.sparkSession, ROW_BYTES, raise_limit=True) as rows:
            yield rows

    def write(self, path: str | Path, mode: str = "error") -> dict[str, int]:
        """Write the severity table as Parquet and count its rows per assertion.

        Parameters
        ----------
        path : str or Path
            Output directory (e.g. ``<output>/severity.parquet``).
        mode : str
            Spark's save mode.

        Returns
        -------
        dict
            Assertion name -> flagged rows or groups (from the written file).
        """
        with self.sized_batches():
            self.severities.write.mode(mode).parquet(str(path))
        spark = self.severities.sparkSession
        counts = spark.read.parquet(str(path)).groupBy("assertion").count().collect()
        return {r["assertion"]: int(r["count"]) for r in counts}

    def unpersist(self) -> None:
        """Release what the run cached (the input's columns and the union of results)."""
        for frame in self._persisted:
            frame.unpersist()
        self._persisted.clear()


class Checker:
    """Registers model assertions and runs them all over a table keyed by ``key``.

    Parameters
    ----------
    key : str or sequence of str
        The table's key columns (what identifies a row: ``id``; ``eye``, ``scan``; ...).
    storage : StorageLevel
        How the input's needed columns and the results are cached for the run.

    Examples
    --------
    >>> checker = Checker(key=["eye", "scan"])                                        # doctest: +SKIP
    >>> checker.register(SequenceConsistencyAssertion("eye", "scan", attribute="label"))  # doctest: +SKIP
    >>> result = checker.run(predictions)                                             # doctest: +SKIP
    >>> counts = result.write("out/severity.parquet")                                 # doctest: +SKIP
    """

    def __init__(self, key: str | Sequence[str], storage: StorageLevel = StorageLevel.MEMORY_AND_DISK) -> None:
        self.key = as_list(key)
        if not self.key:
            raise ValueError("a Checker needs at least one key column")
        self.storage = storage
        self.assertions: dict[str, Assertion] = {}

    def register(self, assertion: Assertion, name: str | None = None) -> str:
        """Add ``assertion`` under ``name`` (default: its own name); names are unique.

        Parameters
        ----------
        assertion : Assertion
            The assertion.
        name : str, optional
            Its name in the severity table.

        Returns
        -------
        str
            The name it was registered under.
        """
        name = name or assertion.name
        if name in self.assertions:
            raise ValueError(f"an assertion named {name!r} is already registered")
        assertion.name = name
        self.assertions[name] = assertion
        return name

    def validate(self, df: DataFrame) -> None:
        """Refuse the table before anything runs: missing key or assertion columns, wrong types.

        Parameters
        ----------
        df : DataFrame
            The table.
        """
        if not self.assertions:
            raise InputError("no assertion is registered")
        require_columns(df, self.key, "key of the table")
        for assertion in self.assertions.values():
            assertion.validate(df)

    def run(self, df: DataFrame) -> CheckResult:
        """Validate, prepare (fit learned assertions) and build the one lazy severity table.

        Parameters
        ----------
        df : DataFrame
            The model's inputs and outputs, one row per item.

        Returns
        -------
        CheckResult
            The severity table and the rejected rows; they share one cached union of every assertion's
            results, so writing one and reading the other runs the assertions once.
        """
        self.validate(df)
        needed = list(dict.fromkeys([*self.key, *(c for a in self.assertions.values() for c in a.columns())]))
        table = df.select(*needed).persist(self.storage)
        for assertion in self.assertions.values():
            assertion.prepare(table)
        parts = []
        for name, assertion in self.assertions.items():
            frame = assertion.evaluate(table, self.key)
            key_columns = assertion.key_columns(self.key)
            entries = [v for c in key_columns for v in (F.lit(c), F.col(c).cast("string"))]
            parts.append(frame.select(F.lit(name).alias("assertion"), F.create_map(*entries).alias("key"),
                                      F.col("severity").cast("double").alias("severity"),
                                      F.col("detail").cast("string").alias("detail"), REJECTED_COLUMN))
        union = parts[0]
        for part in parts[1:]:
            union = union.unionByName(part)
        union = union.persist(self.storage)
        good = union.where(F.col(REJECTED_COLUMN).isNull()).select(*RESULT_SCHEMA.fieldNames())
        rejected = union.where(F.col(REJECTED_COLUMN).isNotNull()).select(f"{REJECTED_COLUMN}.*")
        return CheckResult(severities=good, rejected=rejected, _persisted=[table, union])
