"""Labelled image datasets as plain Parquet, materialised from Spark and read per rank with pyarrow (no Petastorm).

:func:`materialize_images` writes the rows of a Spark DataFrame (``eid``,
``eye``, ``visit``, ``scan``, ``target`` and a uint8 image in scilens' tensor
column layout, :mod:`scilens.core.tensor`) as Parquet with at least
``min_row_groups`` row groups. Each training rank then reads its own shard
(:func:`shard_row_groups`: every ``size``-th row group from ``rank``, so the
shards of all ranks are disjoint and cover the dataset) with pyarrow, one row
group at a time, into ``tf.data`` (:func:`tf_dataset`).

This module also holds what both dataset formats share (the Petastorm one is
:mod:`scilens.vision.petastorm_data`): the reuse rule of a dataset directory
(:func:`reuse_existing`: a ``_scilens_dataset.json`` beside the Parquet files
records source and schema; another schema raises :class:`DatasetConflict`),
:class:`DatasetInfo`, and the batching tail of the input pipeline
(:func:`batched`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

__all__ = [
    "DatasetConflict",
    "DatasetInfo",
    "batched",
    "dataset_url",
    "iter_shard",
    "materialize_images",
    "read_shard",
    "reuse_existing",
    "shard_row_groups",
    "tf_dataset",
]

SIDECAR = "_scilens_dataset.json"  # leading "_": Parquet readers skip it
KEY_FIELDS = ("eid", "eye", "visit", "scan", "target")


class DatasetConflict(RuntimeError):
    """A dataset path already holds something else.

    ``kind`` is ``"foreign"`` (not a scilens dataset), ``"schema"`` (another
    schema) or ``"source"`` (same schema, other source rows).
    """

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class DatasetInfo:
    """A materialised dataset: where, what shape, how many rows and row groups."""

    url: str
    image_shape: tuple[int, ...]
    rows: int
    row_groups: int
    reused: bool = False


def dataset_url(path: str | Path) -> str:
    """``file://`` URL of a local dataset directory (what petastorm readers and :func:`tf_dataset` take)."""
    return Path(path).absolute().as_uri()


def _local_path(url: str) -> Path:
    from urllib.parse import unquote, urlparse

    parsed = urlparse(url)
    return Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(url)


def reuse_existing(path: Path, schema: dict[str, Any], source: str, kind: str, overwrite: bool) -> DatasetInfo | None:
    """The reusable dataset at ``path``.

    None if there is none, or if ``overwrite`` removed one of another source;
    :class:`DatasetConflict` if it holds something else. ``schema`` is the
    JSON summary of what the caller would write; ``kind`` names the format in
    messages ("Petastorm", "Parquet").
    """
    if not path.exists():
        return None
    sidecar = path / SIDECAR
    if not sidecar.is_file():
        raise DatasetConflict(f"{path} exists but is not a scilens {kind} dataset (no {SIDECAR}); "
                              f"remove it or choose another dataset_dir", "foreign")
    meta = json.loads(sidecar.read_text())
    stored = meta.get("schema", {})
    if stored != schema:
        diffs = sorted(k for k in set(schema) | set(stored) if schema.get(k) != stored.get(k))
        detail = "; ".join(f"{k}: stored {stored.get(k)} vs wanted {schema.get(k)}" for k in diffs)
        raise DatasetConflict(f"{path} holds a {kind} dataset with a different schema ({detail}); "
                              f"remove it or choose another dataset_dir", "schema")
    if meta.get("source") != source:
        if overwrite:
            shutil.rmtree(path)
            return None
        raise DatasetConflict(f"{path} holds a {kind} dataset written from {meta.get('source')!r}, not "
                              f"{source!r}; remove it or set overwrite to replace it", "source")
    return DatasetInfo(dataset_url(path), tuple(meta["image_shape"]), int(meta["rows"]), int(meta["row_groups"]),
                       reused=True)


def write_sidecar(path: Path, schema: dict[str, Any], source: str, image_shape: Sequence[int], rows: int,
                  min_row_groups: int) -> DatasetInfo:
    """Check the written dataset has ``min_row_groups`` row groups and record it for reuse.

    A rank without a row group would read an empty shard.
    """
    row_groups = count_row_groups(path)
    if row_groups < min_row_groups:
        raise ValueError(f"{path}: {rows} rows made {row_groups} row groups, fewer than {min_row_groups} "
                         f"(one per rank); lower row_group_size_mb or add rows")
    shape = [int(n) for n in image_shape]
    (path / SIDECAR).write_text(json.dumps({"schema": schema, "source": source, "image_shape": shape,
                                            "rows": rows, "row_groups": row_groups}, indent=1))
    return DatasetInfo(dataset_url(path), tuple(shape), rows, row_groups)


def count_row_groups(path: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(p).num_row_groups for p in sorted(path.glob("*.parquet")))


def _schema(image_shape: Sequence[int]) -> dict[str, Any]:
    return {"format": "parquet", "key_fields": list(KEY_FIELDS),
            "image": {"layout": "scilens tensor", "dtype": "|u1", "shape": [int(n) for n in image_shape]}}


def materialize_images(spark: SparkSession, images: DataFrame, path: str | Path, image_shape: Sequence[int],
                       source: str, min_row_groups: int = 2, row_group_size_mb: int = 32,
                       overwrite: bool = False) -> DatasetInfo:
    """Write ``images`` as plain Parquet at ``path`` (or reuse an identical dataset there).

    Parameters are those of :func:`scilens.vision.petastorm_data.materialize_images`: ``images`` has columns
    ``eid``, ``eye``, ``visit``, ``scan``, ``target`` (0/1) and ``image``, a uint8 tensor column of
    ``prod(image_shape)`` values; at least ``min_row_groups`` Parquet files (one row group each at least) are
    written, since ranks shard by row group.
    """
    path = Path(path).absolute()
    schema = _schema(image_shape)
    found = reuse_existing(path, schema, source, "Parquet", overwrite)
    if found is not None:
        return found
    rows = images.count()
    if rows < min_row_groups:
        raise ValueError(f"{path}: {rows} rows cannot fill {min_row_groups} row groups (one per rank at least)")
    (images.select(F.col("eid").cast("long"), F.col("eye").cast("string"), F.col("visit").cast("int"),
                   F.col("scan").cast("int"), F.col("target").cast("int"), "image")
     .repartition(min_row_groups).write.mode("overwrite")
     .option("parquet.block.size", row_group_size_mb * 2**20).parquet(str(path)))
    return write_sidecar(path, schema, source, image_shape, rows, min_row_groups)


def shard_row_groups(url: str, rank: int, size: int) -> list[tuple[str, int]]:
    """The (file, row group) pieces of rank ``rank`` of ``size``.

    Every ``size``-th of the dataset's row groups in file order, starting at
    ``rank``.
    """
    import pyarrow.parquet as pq

    path = _local_path(url)
    files = sorted(str(p) for p in path.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"{path}: no Parquet files (not a materialised dataset?)")
    pieces = [(f, i) for f in files for i in range(pq.ParquetFile(f).num_row_groups)]
    if size > len(pieces):
        raise ValueError(f"{path}: {len(pieces)} row groups cannot give each of {size} ranks a shard")
    return pieces[rank::size]


def _decode_images(table: Any, image_shape: Sequence[int], where: str) -> np.ndarray:
    """The image column of a pyarrow table (scilens tensor layout) as a uint8 array ``(rows, *image_shape)``."""
    column = table.column("image").combine_chunks()
    dtypes = set(column.field("dtype").to_pylist())
    if dtypes - {"|u1"}:
        raise ValueError(f"{where}: images of dtype {sorted(dtypes)}, expected uint8 ('|u1')")
    data = column.field("data").to_pylist()
    n = int(np.prod(image_shape))
    out = np.empty((len(data), *image_shape), np.uint8)
    for i, blob in enumerate(data):
        if len(blob) != n:
            raise ValueError(f"{where}: image {i} has {len(blob)} values, expected {n} for shape {tuple(image_shape)}")
        out[i] = np.frombuffer(blob, np.uint8).reshape(image_shape)
    return out


def iter_shard(url: str, rank: int, size: int, image_shape: Sequence[int], columns: Sequence[str] = ("target",),
               shuffle_seed: int | None = None, repeat: bool = False) -> Iterator[dict[str, np.ndarray]]:
    """One row group of rank ``rank``'s shard at a time: ``columns`` and ``image`` as arrays.

    With ``shuffle_seed`` the row groups come in a new random order on every
    pass; ``repeat`` passes forever.
    """
    import pyarrow.parquet as pq

    pieces = shard_row_groups(url, rank, size)
    rng = np.random.default_rng(shuffle_seed) if shuffle_seed is not None else None
    while True:
        order = rng.permutation(len(pieces)) if rng is not None else range(len(pieces))
        for k in order:
            file, group = pieces[k]
            table = pq.ParquetFile(file).read_row_group(group, columns=[*columns, "image"])
            batch = {c: table.column(c).to_numpy() for c in columns}
            batch["image"] = _decode_images(table, image_shape, f"{file} row group {group}")
            yield batch
        if not repeat:
            return


def read_shard(url: str, rank: int, size: int, image_shape: Sequence[int]) -> dict[str, np.ndarray]:
    """All rows of one shard in memory: each field as an array (images stacked), in reading order."""
    parts = list(iter_shard(url, rank, size, image_shape, columns=KEY_FIELDS))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}


def batched(ds: Any, batch_size: int, transform: Callable[[np.ndarray], np.ndarray] | None = None,
            shuffle_buffer: int = 0, seed: int = 0, drop_remainder: bool = False) -> Any:
    """The tail of both formats' input pipelines.

    From a ``tf.data`` of (float32 image, float32 target): the numpy
    ``transform`` of each image (training augmentation), a shuffle buffer,
    batches, prefetch.
    """
    import tensorflow as tf

    if transform is not None:
        def apply(image: Any, target: Any) -> Any:
            out = tf.numpy_function(transform, [image], tf.float32)
            out.set_shape(image.shape)
            return out, target
        ds = ds.map(apply)
    if shuffle_buffer > 1:
        ds = ds.shuffle(shuffle_buffer, seed=seed)
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(2)


def tf_dataset(url: str, rank: int, size: int, image_shape: Sequence[int], batch_size: int,
               transform: Callable[[np.ndarray], np.ndarray] | None = None, shuffle_buffer: int = 0, seed: int = 0,
               repeat: bool = False, drop_remainder: bool = False) -> Any:
    """``tf.data`` of (image float32 in stored units, target float32) batches of rank ``rank``'s shard.

    With ``repeat`` the shard is read forever, its row groups in a new order (from ``seed``) on every pass,
    as training reads it; without, once in file order, as validation reads it.
    """
    import tensorflow as tf

    shape = tuple(int(n) for n in image_shape)

    def rows() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for part in iter_shard(url, rank, size, shape, shuffle_seed=seed if repeat else None, repeat=repeat):
            yield from zip(part["image"], part["target"])

    ds = tf.data.Dataset.from_generator(rows, output_signature=(tf.TensorSpec(shape, tf.uint8),
                                                                tf.TensorSpec((), tf.int32)))
    ds = ds.map(lambda image, target: (tf.cast(image, tf.float32), tf.cast(target, tf.float32)))
    return batched(ds, batch_size, transform, shuffle_buffer, seed, drop_remainder)
