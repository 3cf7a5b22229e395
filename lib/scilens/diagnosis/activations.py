"""The activation store: a network's activations for a set of items, one Parquet column per layer.

A store is a directory::

    <store>/activations.parquet   id, label, prediction, correct, <layer>, <layer>, ...
    <store>/layers.json           {"layers": {<layer>: {"shape": [...], "size": n}}, "rows": n, "bytes": n, ...}

Each layer column holds the layer's output for one item flattened (C order)
to ``array<float>``, what ``predict_batch_udf`` returns and Spark ML's
``array_to_vector`` aggregates natively; ``layers.json`` keeps the shapes.
All layers are computed in one inference pass
(:func:`scilens.diagnosis.stages.compute_activations`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pyspark.sql import DataFrame, SparkSession

from scilens.core.inputs import InputError
from scilens.vision.inference import ModelInfo

__all__ = ["LAYERS_FILE", "STORE_TABLE", "ActivationStore", "directory_bytes"]

STORE_TABLE = "activations.parquet"
LAYERS_FILE = "layers.json"
META_COLUMNS = ("id", "label", "prediction", "correct")


def directory_bytes(path: str | Path) -> int:
    """Bytes of the data files under ``path`` (Spark's ``.crc`` and ``_SUCCESS`` files excluded)."""
    path = Path(path)
    return sum(p.stat().st_size for p in path.rglob("*")
               if p.is_file() and not p.name.startswith((".", "_")))


@dataclass
class ActivationStore:
    """An activation store on disk (see the module doc)."""

    path: Path
    layers: dict[str, tuple[int, ...]]
    rows: int
    bytes: int
    model: str = ""

    @property
    def table(self) -> Path:
        """The Parquet table of the store."""
        return self.path / STORE_TABLE

    @classmethod
    def open(cls, path: str | Path) -> ActivationStore:
        """Open a store written by ``scilens activations``; InputError if ``path`` is not one."""
        path = Path(path)
        meta = path / LAYERS_FILE
        if not meta.is_file() or not (path / STORE_TABLE).exists():
            raise InputError(f"{path} is not an activation store (no {LAYERS_FILE} and {STORE_TABLE})")
        data = json.loads(meta.read_text())
        return cls(path, {k: tuple(v["shape"]) for k, v in data["layers"].items()}, int(data["rows"]),
                   int(data["bytes"]), data.get("model", ""))

    @classmethod
    def write(cls, rows: DataFrame, path: str | Path, info: ModelInfo, layers: Sequence[str]) -> ActivationStore:
        """Write ``rows`` (from :func:`scilens.diagnosis.stages.compute_activations`) as a store at ``path``."""
        from scilens.core.parquet import write_sorted

        path = Path(path)
        # sorted by id in small row groups: an index query fetches its few candidates by id
        write_sorted(rows, path / STORE_TABLE, ["id"])
        spark = rows.sparkSession
        count = spark.read.parquet(str(path / STORE_TABLE)).count()
        size = directory_bytes(path / STORE_TABLE)
        shapes = {name: tuple(info.output_shape(name)) for name in layers}
        meta = {"model": info.path, "rows": count, "bytes": size,
                "layers": {name: {"shape": list(s), "size": int(np.prod(s))} for name, s in shapes.items()}}
        (path / LAYERS_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        return cls(path, shapes, count, size, info.path)

    def frame(self, spark: SparkSession) -> DataFrame:
        """The store as a DataFrame (lazy; columns are read only when used)."""
        return spark.read.parquet(str(self.table))

    def layer_size(self, name: str) -> int:
        """Neurons in a layer (its flattened length)."""
        if name not in self.layers:
            raise InputError(f"store {self.path} has no layer {name!r}; it has {', '.join(self.layers)}")
        return int(np.prod(self.layers[name]))

    def to_numpy(self, columns: Sequence[str]) -> dict[str, np.ndarray]:
        """Columns read into memory with pyarrow (no Spark): meta columns 1-d, layers (n, neurons) float32."""
        import pyarrow.parquet as pq

        table = pq.read_table(self.table, columns=list(columns))
        out = {}
        for name in columns:
            column = table.column(name).combine_chunks()
            if name in self.layers:
                out[name] = column.flatten().to_numpy().reshape(len(column), self.layer_size(name))
            else:
                out[name] = column.to_numpy(zero_copy_only=False)
        return out
