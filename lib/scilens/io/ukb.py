"""UK Biobank showcase exports -> a tidy table with one row per (participant, visit).

An export (``ukbconv`` CSV, a TSV, or Parquet) has one row per participant: ``eid`` and
columns named ``<field>-<instance>.<array>`` (``21003-0.0``: field 21003, first visit, first
array index). A :class:`FieldMap` (``conf/ukb_fields.yaml``) says which fields to read, under
which feature names and how; :func:`decode_export` turns a batch of export rows into visit
rows (pure pandas), and :func:`read_export` is its Spark layer.

The visit table (:func:`visit_schema`) has ``eid`` (long), ``visit`` (int, the UK Biobank
instance) and, per feature:

* ``number``: a double; measures taken per eye give ``<name>_right`` and ``<name>_left``;
  repeated readings (array indices) are reduced by the field's ``arrays`` rule;
* ``code``: the UK Biobank code as an int, special codes (-1 "do not know", -3 "prefer not
  to answer") kept so cohort rules can see them;
* ``codes``: an array of ints (one per answer, e.g. the eye problems of field 6148);
* ``text_list``: an array of strings (e.g. the ICD-10 codes of field 41270).

Participant-level fields (``per: participant``, e.g. sex) take their first non-empty
instance and are copied to every visit. A visit row exists when the participant has any
visit-level value at that instance.

Bad input: an export without ``eid``, a required field without any column, or a number
column holding no number at all raise :class:`~scilens.core.inputs.InputError` before
anything runs. A participant with text where a number belongs, or a code outside the
field's coding, or whose CSV/TSV line has more or fewer fields than the header, is rejected
(``_rejected``, record = the eid) with a message naming the eid, column, feature and the rule
broken; the other participants go on.

Messages never quote a participant's value: they reach the terminal, ``manifest.json``
(``rejected_examples``) and ``_rejected/rejected.parquet``, which are shared more widely than
the export itself (logs, bug reports). The eid, the column and the rule locate the value in
the export for whoever may read it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from scilens.core.config import Config, ConfigError, field, load_config
from scilens.core.inputs import InputError
from scilens.core.quarantine import REJECTED_COLUMN, rejection, split_rejected, with_rejected_field
from scilens.core.session import arrow_batch_bytes, conf_dirs, restored_conf

__all__ = [
    "EXPORT_SUFFIXES",
    "EYES",
    "FieldMap",
    "FieldSpec",
    "check_export",
    "decode_export",
    "export_layout",
    "load_field_map",
    "read_export",
    "read_export_pandas",
    "visit_schema",
]

EYES = ("right", "left")
EXPORT_SUFFIXES = (".csv", ".tsv", ".tab", ".txt", ".parquet", ".pq")
_COLUMN = re.compile(r"^(\d+)-(\d+)\.(\d+)$")
_STEP = "read_ukb"
_CORRUPT = "_corrupt_line"  # Spark's corrupt-record column: the raw line, dropped as soon as it is flagged
MALFORMED_COLUMN = "_malformed"

# One export row of ~100 short text columns is about 2 kB; 16 MB batches keep the
# per-batch pandas overhead small without holding much memory.
_ROW_BYTES = 2048
_BATCH_BUDGET = 16 * 2**20


@dataclass
class FieldSpec(Config):
    """Where one feature lives in an export and how to read it."""

    kind: str = field("number", "number, code (one coded answer), codes (several answers), text_list (free codes).",
                      choices=("number", "code", "codes", "text_list"))
    id: int | None = field(None, "Field id, for a measure taken once per participant and visit.", min=1)
    right: int | None = field(None, "Field id of the right-eye measure (per-eye fields).", min=1)
    left: int | None = field(None, "Field id of the left-eye measure (per-eye fields).", min=1)
    codes: dict[int, str] = field({}, "Allowed codes and their meaning (code and codes kinds).")
    arrays: str = field("first", "How array indices of a number combine: first, mean (repeated readings), "
                        "max (best attempt).", choices=("first", "mean", "max"))
    per: str = field("visit", "visit, or participant (first non-empty instance copied to every visit).",
                     choices=("visit", "participant"))
    required: bool = field(False, "The export must hold this field.")
    title: str = field("", "Showcase title and unit.")
    verified: str = field("unverified", "How the field id and coding were checked.")

    def validate(self) -> None:
        """Check the field is either one ``id`` or a right/left pair, and that coded fields have codes."""
        per_eye = self.right is not None or self.left is not None
        if per_eye and (self.id is not None or self.right is None or self.left is None):
            raise ConfigError("a per-eye field needs both right and left ids and no id")
        if not per_eye and self.id is None:
            raise ConfigError("id (or right and left) is required")
        if self.kind in ("code", "codes") and not self.codes:
            raise ConfigError(f"a {self.kind} field needs its codes")

    def field_ids(self) -> dict[str, int]:
        """Output column suffix -> field id: ``{"": id}`` or ``{"_right": r, "_left": l}``."""
        if self.id is not None:
            return {"": self.id}
        if self.right is None or self.left is None:  # validate() refuses this; narrows the ids to int
            raise ConfigError("a per-eye field needs both right and left ids and no id")
        return {"_right": self.right, "_left": self.left}


@dataclass
class FieldMap(Config):
    """The features read from an export (``conf/ukb_fields.yaml``)."""

    special_codes: dict[int, str] = field({-1: "do_not_know", -3: "prefer_not_to_answer"},
                                          "Codes meaning 'no answer', allowed in every code field.")
    fields: dict[str, FieldSpec] = field({}, "Feature name -> where it lives.")

    def validate(self) -> None:
        """Check the map is not empty and its feature names are snake_case."""
        if not self.fields:
            raise ConfigError("fields: the field map is empty")
        for name in self.fields:
            if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
                raise ConfigError(f"fields.{name}: feature names are snake_case")

    def spec(self, name: str) -> FieldSpec:
        """Where feature ``name`` lives in the export."""
        return self.fields[name]


def load_field_map(path: str | Path | None = None) -> FieldMap:
    """Read a field map; ``None`` finds ``ukb_fields.yaml`` in the config directories."""
    if path is None:
        for directory in conf_dirs():
            if (directory / "ukb_fields.yaml").is_file():
                path = directory / "ukb_fields.yaml"
                break
        else:
            raise ConfigError(f"ukb_fields.yaml not found in {', '.join(map(str, conf_dirs()))}")
    elif not Path(path).is_file():
        for directory in conf_dirs():
            if (directory / str(path)).is_file():
                path = directory / str(path)
                break
    return load_config(FieldMap, path)


# ---------------------------------------------------------------------------- columns


@dataclass
class ExportLayout:
    """Which export columns hold each (field, instance): ``columns[field][instance] = [col, ...]`` by array index."""

    columns: dict[int, dict[int, list[str]]]
    instances: list[int]


def export_layout(columns: Sequence[str], field_map: FieldMap) -> ExportLayout:
    """Index the ``<field>-<instance>.<array>`` columns the field map uses."""
    wanted = {fid for spec in field_map.fields.values() for fid in spec.field_ids().values()}
    found: dict[int, dict[int, list[tuple[int, str]]]] = {}
    for name in columns:
        match = _COLUMN.match(name)
        if match is None:
            continue
        fid, instance, array = (int(g) for g in match.groups())
        if fid in wanted:
            found.setdefault(fid, {}).setdefault(instance, []).append((array, name))
    layout = {fid: {inst: [c for _, c in sorted(cols)] for inst, cols in by_instance.items()}
              for fid, by_instance in found.items()}
    instances = sorted({inst for by_instance in layout.values() for inst in by_instance})
    return ExportLayout(layout, instances)


def check_export(columns: Sequence[str], field_map: FieldMap) -> ExportLayout:
    """Fail fast on an export that cannot be read: no ``eid``, or required fields without columns."""
    if "eid" not in columns:
        raise InputError(f"the export has no 'eid' column (columns start {list(columns)[:5]})")
    layout = export_layout(columns, field_map)
    missing = [f"{fid} ({name}: {spec.title or 'no title'})"
               for name, spec in field_map.fields.items() if spec.required
               for fid in spec.field_ids().values() if fid not in layout.columns]
    if missing:
        raise InputError(f"the export lacks required field(s) {'; '.join(missing)}: no column named "
                         f"'<field>-<instance>.<array>' for them")
    return layout


def _number_columns(field_map: FieldMap, layout: ExportLayout) -> dict[str, str]:
    """Export column -> feature name, for the columns that must hold numbers."""
    out = {}
    for name, spec in field_map.fields.items():
        if spec.kind == "text_list":
            continue
        for fid in spec.field_ids().values():
            for cols in layout.columns.get(fid, {}).values():
                out.update(dict.fromkeys(cols, name))
    return out


# ---------------------------------------------------------------------------- schema


def visit_schema(field_map: FieldMap) -> T.StructType:
    """Spark schema of the visit table (without ``_rejected``)."""
    kinds = {"number": T.DoubleType(), "code": T.IntegerType(), "codes": T.ArrayType(T.IntegerType()),
             "text_list": T.ArrayType(T.StringType())}
    fields = [T.StructField("eid", T.LongType(), False), T.StructField("visit", T.IntegerType(), False)]
    for name, spec in field_map.fields.items():
        fields += [T.StructField(name + suffix, kinds[spec.kind]) for suffix in spec.field_ids()]
    return T.StructType(fields)


# ---------------------------------------------------------------------------- decoding


def _text(series: pd.Series) -> pd.Series:
    """Values as stripped text, None where empty."""
    text = series.astype("string").str.strip()
    out = text.astype(object)
    out[~(text.notna() & (text != "")).fillna(False).to_numpy(bool)] = None
    return out


class _Errors:
    """First error message per row."""

    def __init__(self, index: pd.Index):
        self.messages = pd.Series(None, index=index, dtype=object)

    def add(self, bad: pd.Series, message: pd.Series) -> None:
        fresh = bad & self.messages.isna()
        self.messages[fresh] = message[fresh]


def _parse_numbers(text: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(values as float, mask of text that is not a number)."""
    values = pd.to_numeric(text, errors="coerce").astype(float)
    return values, text.notna() & values.isna()


def _reduce(matrix: np.ndarray, how: str) -> np.ndarray:
    """Combine array indices (columns) of a number field, ignoring missing readings."""
    if matrix.shape[1] == 1:
        return matrix[:, 0]
    present = ~np.isnan(matrix)
    out = np.full(matrix.shape[0], np.nan)
    rows = present.any(axis=1)
    if how == "first":
        first = np.argmax(present, axis=1)
        out[rows] = matrix[rows, first[rows]]
    elif how == "mean":
        out[rows] = np.nanmean(matrix[rows], axis=1)
    else:
        out[rows] = np.nanmax(matrix[rows], axis=1)
    return out


def _decode_instance(export: pd.DataFrame, cols: list[str], where: str, spec: FieldSpec, special: set[int],
                     errors: _Errors, eid_label: pd.Series) -> pd.Series:
    """One feature's values at one instance from its array columns ``cols``, recording bad cells in ``errors``."""
    index = export.index
    texts = [_text(export[c]) for c in cols]
    if spec.kind == "text_list":
        frame = pd.concat(texts, axis=1)
        return pd.Series([[v for v in row if v is not None] or None for row in frame.itertuples(index=False)],
                         index=index, dtype=object)
    parsed = []
    for col, text in zip(cols, texts):
        values, bad = _parse_numbers(text)
        errors.add(bad, eid_label + f"column {col} {where} holds text that is not a number")
        if spec.kind in ("code", "codes"):
            allowed = set(spec.codes) | special
            unknown = values.notna() & ~values.isin(allowed)
            shown = ", ".join(str(c) for c in sorted(allowed))
            errors.add(unknown, eid_label + f"column {col} {where} holds a code not in its coding ({shown})")
        parsed.append(values)
    matrix = np.column_stack([p.to_numpy() for p in parsed])
    if spec.kind == "number":
        return pd.Series(_reduce(matrix, spec.arrays), index=index)
    if spec.kind == "code":
        return pd.Series(_reduce(matrix, "first"), index=index).astype("Int32")
    return pd.Series([[int(v) for v in row if not np.isnan(v)] or None for row in matrix], index=index, dtype=object)


def _visit_rows(field_map: FieldMap, layout: ExportLayout, per_instance: dict[str, dict[int, pd.Series]],
                eid_values: pd.Series, good: pd.Series) -> list[pd.DataFrame]:
    """One frame per instance of the good participants' visits; participant-level fields copied to every visit."""
    index = eid_values.index
    rows = []
    participant_columns = {name + suffix for name, spec in field_map.fields.items() if spec.per == "participant"
                           for suffix in spec.field_ids()}
    participant_values = {}
    for column in participant_columns:
        value = pd.Series(None, index=index, dtype=object)
        for instance in sorted(per_instance[column]):
            candidate = per_instance[column][instance].astype(object)
            value = value.where(value.notna(), candidate)
        participant_values[column] = value
    for instance in layout.instances:
        present = pd.Series(False, index=index)
        for column, by_instance in per_instance.items():
            if column not in participant_columns and instance in by_instance:
                present |= by_instance[instance].notna()
        keep = good & present
        if not keep.any():
            continue
        frame = pd.DataFrame({"eid": eid_values[keep].astype("int64"),
                              "visit": np.full(int(keep.sum()), instance, dtype="int32")}, index=index[keep])
        for name, spec in field_map.fields.items():
            for suffix in spec.field_ids():
                column = name + suffix
                if column in participant_columns:
                    values = participant_values[column][keep]
                else:
                    values = per_instance[column].get(instance, pd.Series(None, index=index, dtype=object))[keep]
                frame[column] = _typed(values, spec.kind)
        frame[REJECTED_COLUMN] = None
        rows.append(frame)
    return rows


def decode_export(export: pd.DataFrame, field_map: FieldMap, layout: ExportLayout,
                  malformed: pd.Series | None = None) -> pd.DataFrame:
    """Turn export rows into visit rows (the pure step of :func:`read_export`).

    Parameters
    ----------
    export : DataFrame
        Export rows: ``eid`` and ``<field>-<instance>.<array>`` columns, as text or numbers.
    field_map : FieldMap
        What to read.
    layout : ExportLayout
        Which columns hold which (field, instance), from :func:`export_layout`.
    malformed : Series of bool, optional
        Rows whose line in a CSV/TSV export had more or fewer fields than its header: their
        values may sit in the wrong columns, so the participant is rejected.

    Returns
    -------
    DataFrame
        Columns of :func:`visit_schema` plus ``_rejected``: good participants give one
        row per visit (``_rejected`` None); a bad participant gives one row with only
        ``_rejected`` set (record = its eid).
    """
    index = export.index
    errors = _Errors(index)
    eid_text = _text(export["eid"])
    eid_values, eid_bad = _parse_numbers(eid_text)
    eid_bad |= eid_text.isna() | (eid_values.notna() & (eid_values != np.floor(eid_values)))
    # A malformed eid is not an identifier but whatever text stood in the eid column (a shifted row may
    # put any participant value there): it is withheld like the other values, and the record left empty.
    errors.add(eid_bad, pd.Series(np.where(eid_text.isna(), "a row with an empty eid",
                                           "a row whose eid is not a whole number (its text is withheld)"),
                                  index=index))
    eid_label = "eid " + eid_text.fillna("(empty)").astype(str) + ": "
    if malformed is not None:
        errors.add(pd.Series(np.asarray(malformed, dtype=bool), index=index) & ~eid_bad,
                   eid_label + "its line has more or fewer fields than the export's header, so its values may "
                   "be in the wrong columns")
    special = set(field_map.special_codes)

    # per (feature column, instance): a Series of values (float, Int, list) indexed like the export
    per_instance: dict[str, dict[int, pd.Series]] = {}
    for name, spec in field_map.fields.items():
        for suffix, fid in spec.field_ids().items():
            column = name + suffix
            per_instance[column] = {}
            for instance, cols in layout.columns.get(fid, {}).items():
                per_instance[column][instance] = _decode_instance(export, cols, f"({name}, field {fid})", spec,
                                                                  special, errors, eid_label)

    good = errors.messages.isna()
    rows = _visit_rows(field_map, layout, per_instance, eid_values, good)
    bad = ~good
    if bad.any():
        rejected = pd.DataFrame({c: [None] * int(bad.sum()) for c in visit_schema(field_map).names})
        rejected[REJECTED_COLUMN] = [rejection("", _STEP, msg, record="" if malformed else str(text))
                                     for msg, text, malformed in zip(errors.messages[bad], eid_text[bad],
                                                                     eid_bad[bad])]
        rows.append(rejected)
    if not rows:
        return pd.DataFrame({c: [] for c in [*visit_schema(field_map).names, REJECTED_COLUMN]})
    return pd.concat(rows, ignore_index=True)


def _typed(values: pd.Series, kind: str) -> pd.Series:
    if kind == "number":
        return values.astype(float)
    if kind == "code":
        return values.astype("Int32")
    return values.astype(object)


# ---------------------------------------------------------------------------- Spark layer


def _reader_options(path: str) -> tuple[str, dict[str, str]]:
    lower = path.lower()
    if lower.endswith((".parquet", ".pq")) or Path(path).is_dir():
        return "parquet", {}
    sep = "," if lower.endswith(".csv") else "\t"
    # Showcase exports quote text; every value is read as text and parsed by decode_export. A line with
    # more or fewer fields than the header is kept (PERMISSIVE) and flagged through the corrupt-record
    # column, so its participant is rejected by eid: FAILFAST would abort the run and print the whole
    # line, every value of the participant, in Spark's error.
    return "csv", {"header": "true", "sep": sep, "inferSchema": "false", "quote": '"', "escape": '"',
                   "mode": "PERMISSIVE", "columnNameOfCorruptRecord": _CORRUPT}


def _read_tables(spark: SparkSession, paths: Sequence[str]) -> tuple[DataFrame, list[str]]:
    """One DataFrame of all export files: files with the same columns are stacked, others joined on eid."""
    groups: dict[tuple[str, ...], list[str]] = {}
    readers: dict[tuple[str, ...], tuple[str, dict[str, str]]] = {}
    for path in paths:
        kind, options = _reader_options(path)
        try:
            columns = tuple(spark.read.format(kind).options(**options).load(path).columns)
        except Exception as exc:
            raise InputError(f"{path}: not a readable {kind.upper()} export ({str(exc).splitlines()[0]})") from None
        groups.setdefault(columns, []).append(path)
        readers[columns] = (kind, options)
    tables: list[DataFrame] = []
    seen: dict[str, str] = {}
    for columns, files in groups.items():
        if "eid" not in columns:
            raise InputError(f"{files[0]}: the export has no 'eid' column (columns start {list(columns)[:5]})")
        for column in columns:
            if column != "eid" and column in seen:
                raise InputError(f"column {column} is in both {seen[column]} and {files[0]}; "
                                 "exports split across files must not repeat columns")
            seen[column] = files[0]
        kind, options = readers[columns]
        reader = spark.read.format(kind).options(**options)
        if kind == "csv":  # every column as text, plus the corrupt-record column that flags a malformed line
            reader = reader.schema(T.StructType([T.StructField(c, T.StringType()) for c in columns]
                                                + [T.StructField(_CORRUPT, T.StringType())]))
        table = reader.load(files)
        malformed = F.col(_CORRUPT).isNotNull() if kind == "csv" else F.lit(False)
        # input_file_name() cannot see through a join: each part names its own file
        table = table.select(*[F.col(f"`{c}`").cast("string").alias(c) for c in columns],
                             F.input_file_name().alias(f"_path{len(tables)}"),
                             malformed.alias(f"_malformed{len(tables)}"))
        tables.append(table)
    joined = tables[0]
    for table in tables[1:]:
        joined = joined.join(table, on="eid", how="full_outer")
    parts = [f"_path{i}" for i in range(len(tables))]
    flags = [F.coalesce(F.col(f"_malformed{i}"), F.lit(False)) for i in range(len(tables))]
    joined = (joined.withColumn("_path", F.concat_ws(" + ", *parts))
                    .withColumn(MALFORMED_COLUMN, F.greatest(*flags) if len(flags) > 1 else flags[0])
                    .drop(*parts, *[f"_malformed{i}" for i in range(len(tables))]))
    return joined, [c for c in joined.columns if c not in ("_path", MALFORMED_COLUMN)]


def _check_number_columns(sample: pd.DataFrame, columns: Mapping[str, str]) -> None:
    """A column with values but not one number among the export's first rows is a wrong export: fail now.

    Single bad values are left to :func:`decode_export`, which rejects their participants. The
    message does not quote a value (participant data; see the module doc).
    """
    for column, name in columns.items():
        text = _text(sample[column]).dropna()
        if len(text) and _parse_numbers(text)[0].notna().sum() == 0:
            raise InputError(f"column {column} ({name}) holds text, not numbers: none of its {len(text)} non-empty "
                             f"values in the export's first {len(sample)} rows is a number; is the export's "
                             "column naming or coding right?")


@contextmanager
def _whole_csv_lines(spark: SparkSession) -> Iterator[None]:
    """Tokenise every field of a CSV line while the export is decoded.

    With column pruning (Spark's default) the parser reads only the selected fields and never sees
    that a line has more or fewer fields than the header, so the corrupt-record flag stays empty.
    """
    with restored_conf(spark, "spark.sql.csv.parser.columnPruning.enabled", "false"):
        yield


SAMPLE_ROWS = 1000
"""Export rows the driver looks at before decoding, to fail fast on a wrong export."""


def read_export(spark: SparkSession, paths: Sequence[str], field_map: FieldMap) -> tuple[DataFrame, DataFrame]:
    """Read export files into (visit table, rejected participants).

    Checks the columns (and that number columns hold numbers) first, raising
    :class:`InputError`; then decodes the rows with :func:`decode_export` on the
    executors and splits off the rejected participants.
    """
    table, columns = _read_tables(spark, paths)
    layout = check_export(columns, field_map)
    numbers = _number_columns(field_map, layout)
    _check_number_columns(table.select(*[F.col(f"`{c}`") for c in numbers]).limit(SAMPLE_ROWS).toPandas(), numbers)
    wanted = ["eid", *sorted({c for by_instance in layout.columns.values() for cols in by_instance.values()
                              for c in cols})]
    # mapInPandas cannot take column names with dots (21003-0.0): they travel as 21003-0_0.
    safe = {c: c.replace(".", "_") for c in wanted}
    original = {v: k for k, v in safe.items()}
    table = table.select(*[F.col(f"`{c}`").alias(safe[c]) for c in wanted], "_path", MALFORMED_COLUMN)
    # A showcase CSV is one file Spark reads as one partition: spread its rows over the cores.
    table = table.repartition(max(spark.sparkContext.defaultParallelism, table.rdd.getNumPartitions()))
    schema = with_rejected_field(visit_schema(field_map))

    def decode(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            out = decode_export(batch.rename(columns=original), field_map, layout, malformed=batch[MALFORMED_COLUMN])
            if REJECTED_COLUMN in out and len(batch):
                path = str(batch["_path"].iloc[0])
                for record in out[REJECTED_COLUMN].dropna():
                    record["path"] = path
            yield out

    with arrow_batch_bytes(spark, _ROW_BYTES, _BATCH_BUDGET, raise_limit=True), _whole_csv_lines(spark):
        decoded = table.mapInPandas(decode, schema)
        visits, rejected = split_rejected(decoded, on={"eid": "record"})
        # Materialise while the batch size applies: the split persists the decoded rows.
        visits.count()
    return visits, rejected


def read_export_pandas(paths: Sequence[str | Path], field_map: FieldMap) -> pd.DataFrame:
    """Single-process reference: decode CSV/TSV/Parquet exports with pandas (tests, benchmarks)."""
    frames = []
    for path in map(str, paths):
        kind, options = _reader_options(path)
        if kind == "parquet":
            frames.append(pd.read_parquet(path).astype(str).replace({"None": None, "nan": None, "<NA>": None}))
        else:
            frames.append(pd.read_csv(path, sep=options["sep"], dtype=str, keep_default_na=False))
    export = pd.concat(frames, ignore_index=True)
    layout = check_export(list(export.columns), field_map)
    _check_number_columns(export.head(SAMPLE_ROWS), _number_columns(field_map, layout))
    out = decode_export(export, field_map, layout)
    return out[out[REJECTED_COLUMN].isna()].drop(columns=REJECTED_COLUMN).reset_index(drop=True)


def describe_fields(field_map: FieldMap) -> list[dict[str, Any]]:
    """One row per field id (feature, eye, id, kind, title, verified): the table in the report and README."""
    rows = []
    for name, spec in field_map.fields.items():
        for suffix, fid in spec.field_ids().items():
            rows.append({"feature": name + suffix, "field": fid, "kind": spec.kind, "title": spec.title,
                         "verified": spec.verified})
    return rows
