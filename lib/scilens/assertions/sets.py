"""Assertion sets: named YAML files (``conf/assertions/<name>.yaml``) that say which tables to check and how.

A set is read against an input directory (a job's output: ``glaucoma-infer``'s, ``sample``'s, ``astro``'s)::

    description: what the set checks
    views:                     # Parquet tables of the input directory, by name ('.' is the input itself)
      scans: oct_predictions.parquet
    model_views:               # optional: tables the job computes with --set model=... (name: transform)
      mirrored: mirror         # the model on each image and on its mirrored copy (VIEW_TRANSFORMS)
    optional_views:            # optional: Parquet tables the input may lack (an astro run without visit_sources)
      visits: visit_sources.parquet
    tables:                    # in order; each is a Spark SQL query over the views and the tables before it
      scans:
        sql: SELECT *, probability >= 0.5 AS flagged FROM scans
        key: [eid, eye, visit, scan]
      pairs:
        sql: SELECT id, prediction, view_prediction FROM mirrored
        key: [id]
        needs: [mirrored]      # the model or optional views it reads (or a table reading them does)
    assertions:
      - kind: sequence         # per_row | identifier | sequence | cross | learned
        table: scans
        name: neighbouring B-scans agree
        identifier: [eid, eye, visit]
        ...                    # the rest: the keyword arguments of the assertion's class
    show:                      # optional: which items the report ranks (and a curve per top item)
      group: [eid, eye]
      table: scans
      x: scan
      y: probability

A model view holds ``id``, ``label``, ``prediction``, ``probabilities``, ``view_prediction`` and
``view_probabilities`` (:func:`~scilens.assertions.consistency.view_predictions`) for every image of the
table the model reads. A table that needs a model view runs only when the job is given a model; without
one it and its assertions are skipped (the job logs why). Likewise a table that needs an optional view
runs only when the input holds that file.

A ``per_row`` assertion gives ``expression`` (a :meth:`pandas.DataFrame.eval` expression over ``columns``)
and ``result`` (``predicate``: true flags the row; ``score``: the value is the severity). Everything is
checked before any Spark work: an unknown kind, view or table, or a keyword the assertion does not take,
is refused naming the set and the entry.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from scilens.assertions.common import Assertion
from scilens.assertions.consistency import (
    VIEW_TRANSFORMS,
    CrossConsistencyAssertion,
    IdentifierConsistencyAssertion,
    SequenceConsistencyAssertion,
)
from scilens.assertions.learned import LearnedAssertion
from scilens.assertions.per_row import PerRowAssertion
from scilens.core.config import ConfigError
from scilens.core.session import conf_dirs

__all__ = ["KINDS", "AssertionSet", "Show", "TableSpec", "load_set"]

KINDS: dict[str, type[Assertion]] = {
    "per_row": PerRowAssertion,
    "identifier": IdentifierConsistencyAssertion,
    "sequence": SequenceConsistencyAssertion,
    "cross": CrossConsistencyAssertion,
    "learned": LearnedAssertion,
}


@dataclass
class TableSpec:
    """One table of a set: its SQL over the views, its key, the model views it needs, its assertions."""

    name: str
    sql: str
    key: list[str]
    assertions: list[Assertion] = field(default_factory=list)
    needs: list[str] = field(default_factory=list)


@dataclass
class Show:
    """What the report ranks: items by ``group`` columns; a ``y`` against ``x`` curve of ``table`` per top item."""

    group: list[str]
    table: str | None = None
    x: str | None = None
    y: str | None = None


@dataclass
class AssertionSet:
    """A loaded set."""

    name: str
    description: str
    views: dict[str, str]
    tables: list[TableSpec]
    show: Show | None
    model_views: dict[str, str] = field(default_factory=dict)
    """Name -> transform (a key of :data:`~scilens.assertions.consistency.VIEW_TRANSFORMS`)."""
    optional_views: dict[str, str] = field(default_factory=dict)
    """Name -> Parquet path relative to the input: views the input may lack."""


def _expression(expression: str, columns: list[str]) -> Callable[..., pd.Series]:
    """A per-row function evaluating ``expression`` over its columns (pandas' ``eval``)."""

    def evaluate(*series: pd.Series) -> pd.Series:
        frame = pd.DataFrame(dict(zip(columns, series, strict=True)))
        return pd.Series(frame.eval(expression), index=frame.index)

    evaluate.__name__ = expression
    return evaluate


def _assertion(entry: Mapping[str, Any], where: str) -> Assertion:
    args = dict(entry)
    kind = args.pop("kind", None)
    args.pop("table", None)
    if kind not in KINDS:
        raise ConfigError(f"{where}: kind {kind!r}; use one of {sorted(KINDS)}")
    if kind == "per_row":
        expression, columns = args.pop("expression", None), args.pop("columns", None)
        if not expression or not columns:
            raise ConfigError(f"{where}: a per_row assertion needs expression and columns")
        args["kind"] = args.pop("result", "predicate")
        args.setdefault("description", expression)
        args.update(fn=_expression(str(expression), list(columns)), columns=list(columns))
    accepted = set(inspect.signature(KINDS[kind]).parameters)
    unknown = sorted(set(args) - accepted)
    if unknown:
        raise ConfigError(f"{where}: {kind} assertions take no {', '.join(unknown)}; they take "
                          f"{', '.join(sorted(accepted - {'fn'}))}")
    try:
        return KINDS[kind](**args)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from err


def set_path(spec: str) -> Path:
    """The YAML file of a set: a path, or a built-in name looked up in ``<conf>/assertions/``.

    Parameters
    ----------
    spec : str
        ``glaucoma``, ``diagnosis``, ``astro`` (or another file of ``conf/assertions``), or a YAML path.

    Returns
    -------
    pathlib.Path
        The file.
    """
    if spec.endswith((".yaml", ".yml")):
        if not Path(spec).is_file():
            raise ConfigError(f"assertions={spec}: no such file")
        return Path(spec)
    for folder in conf_dirs():
        candidate = folder / "assertions" / f"{spec}.yaml"
        if candidate.is_file():
            return candidate
    raise ConfigError(f"assertions={spec}: no built-in set of that name (looked in "
                      f"{', '.join(str(d / 'assertions') for d in conf_dirs())}) and not a YAML path")


def load_set(spec: str) -> AssertionSet:
    """Load and check an assertion set (see the module doc).

    Parameters
    ----------
    spec : str
        A built-in name or a YAML path.

    Returns
    -------
    AssertionSet
        Tables in order, each with its assertions.
    """
    path = set_path(spec)
    data = yaml.safe_load(path.read_text()) or {}
    model_views = {str(k): str(v) for k, v in (data.get("model_views") or {}).items()}
    optional_views = {str(k): str(v) for k, v in (data.get("optional_views") or {}).items()}
    for name, transform in model_views.items():
        if transform not in VIEW_TRANSFORMS:
            raise ConfigError(f"{path}: model view {name!r}: transform {transform!r}; use one of "
                              f"{sorted(VIEW_TRANSFORMS)}")
    tables: dict[str, TableSpec] = {}
    for name, table in (data.get("tables") or {}).items():
        if not isinstance(table, Mapping) or "sql" not in table or "key" not in table:
            raise ConfigError(f"{path}: table {name!r} needs sql and key")
        needs = [str(v) for v in table.get("needs") or []]
        unknown = [v for v in needs if v not in model_views and v not in optional_views]
        if unknown:
            known = ", ".join([*model_views, *optional_views]) or "it has none"
            raise ConfigError(f"{path}: table {name!r} needs {', '.join(map(repr, unknown))}, neither a model nor "
                              f"an optional view of the set ({known})")
        tables[name] = TableSpec(name, str(table["sql"]), [str(k) for k in table["key"]], needs=needs)
    if not tables:
        raise ConfigError(f"{path}: no tables")
    for i, entry in enumerate(data.get("assertions") or []):
        where = f"{path}: assertion {i + 1} ({entry.get('name', entry.get('kind'))})"
        if entry.get("table") not in tables:
            raise ConfigError(f"{where}: table {entry.get('table')!r} is not one of {sorted(tables)}")
        tables[entry["table"]].assertions.append(_assertion(entry, where))
    show = data.get("show")
    return AssertionSet(name=path.stem, description=str(data.get("description", "")),
                        views={str(k): str(v) for k, v in (data.get("views") or {}).items()},
                        tables=[t for t in tables.values() if t.assertions],
                        show=Show(**show) if show else None, model_views=model_views,
                        optional_views=optional_views)
