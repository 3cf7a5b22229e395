"""Petastorm datasets of labelled images, materialised from Spark and read per Horovod rank.

:func:`materialize_images` writes the rows of a Spark DataFrame (``eid``,
``eye``, ``visit``, ``scan``, ``target`` and a uint8 image tensor) as a
Petastorm dataset: Parquet with a :class:`petastorm.unischema.Unischema`
stored in its metadata, images as ``NdarrayCodec`` cells (``np.save``
bytes; no pickling). The encoding runs in ``mapInPandas`` and the files are
written by Spark inside petastorm's ``materialize_dataset``, so the driver
never holds the images.

Each training rank then reads its own shard with :func:`open_reader`
(``cur_shard=rank, shard_count=size``). Petastorm shards by Parquet row
group, so a dataset is written with at least ``min_row_groups`` files (one
row group each at least) and the shards of all ranks are disjoint and cover
the dataset.

A dataset directory that already exists is reused only if it was written
from the same source with the same schema (a ``_scilens_dataset.json`` beside
the Parquet files records both); a different schema raises
:class:`DatasetConflict` instead of silently mixing the two.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession

from scilens.core import tensor

# One reuse rule and one pipeline tail for both dataset formats (the plain-Parquet one is tf.distribute's).
from scilens.vision.parquet_data import (
    KEY_FIELDS,
    DatasetConflict,
    DatasetInfo,
    batched,
    dataset_url,
    reuse_existing,
    write_sidecar,
)

__all__ = [
    "DatasetConflict",
    "DatasetInfo",
    "dataset_url",
    "image_unischema",
    "materialize_images",
    "open_reader",
    "read_shard",
    "tf_dataset",
]

def image_unischema(image_shape: Sequence[int]) -> Any:
    """The Unischema of a labelled image dataset with images of ``image_shape`` (uint8)."""
    from petastorm.codecs import NdarrayCodec, ScalarCodec
    from petastorm.unischema import Unischema, UnischemaField
    from pyspark.sql import types as T

    return Unischema("LabelledImages", [
        UnischemaField("eid", np.int64, (), ScalarCodec(T.LongType()), False),
        UnischemaField("eye", np.str_, (), ScalarCodec(T.StringType()), False),
        UnischemaField("visit", np.int32, (), ScalarCodec(T.IntegerType()), False),
        UnischemaField("scan", np.int32, (), ScalarCodec(T.IntegerType()), False),
        UnischemaField("target", np.int32, (), ScalarCodec(T.IntegerType()), False),
        UnischemaField("image", np.uint8, tuple(int(n) for n in image_shape), NdarrayCodec(), False),
    ])


def _schema_summary(schema: Any) -> dict[str, Any]:
    return {name: {"dtype": np.dtype(f.numpy_dtype).str, "shape": list(f.shape), "codec": type(f.codec).__name__}
            for name, f in schema.fields.items()}


def materialize_images(spark: SparkSession, images: DataFrame, path: str | Path, image_shape: Sequence[int],
                       source: str, min_row_groups: int = 2, row_group_size_mb: int = 32,
                       overwrite: bool = False) -> DatasetInfo:
    """Write ``images`` as a Petastorm dataset at ``path`` (or reuse an identical one there).

    Parameters
    ----------
    spark : SparkSession
    images : DataFrame
        Columns ``eid``, ``eye``, ``visit``, ``scan``, ``target`` (0/1) and
        ``image``, a uint8 tensor whose values fit ``image_shape`` (a trailing
        channel axis of 1 may be missing).
    path : path
        Dataset directory on a filesystem every executor and rank can read.
    image_shape : sequence of int
        Shape of each stored image, e.g. ``(224, 224, 1)``.
    source : str
        What the rows were made from (input table, split, preprocessing);
        an existing dataset is reused only if written from the same source.
    min_row_groups : int
        At least this many Parquet files (so row groups), e.g. the number of
        ranks times a few: petastorm shards by row group.
    row_group_size_mb : int
        Parquet row-group size; smaller groups shuffle more finely.
    overwrite : bool
        Replace an existing dataset of another source (never one of another schema).
    """
    from petastorm.codecs import NdarrayCodec
    from petastorm.etl.dataset_metadata import materialize_dataset

    path = Path(path).absolute()
    schema = image_unischema(image_shape)
    found = reuse_existing(path, _schema_summary(schema), source, "Petastorm", overwrite)
    if found is not None:
        return found
    shape = tuple(int(n) for n in image_shape)
    image_field = schema.fields["image"]
    spark_schema = schema.as_spark_schema()

    def encode(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        codec = NdarrayCodec()
        for batch in batches:
            images_np = tensor.decode_column(batch["image"])
            yield pd.DataFrame({
                "eid": batch["eid"].astype("int64"), "eye": batch["eye"].astype(str),
                "visit": batch["visit"].astype("int32"), "scan": batch["scan"].astype("int32"),
                "target": batch["target"].astype("int32"),
                "image": [bytes(codec.encode(image_field, np.asarray(a, dtype=np.uint8).reshape(shape)))
                          for a in images_np],
            })

    rows = images.count()
    if rows < min_row_groups:
        raise ValueError(f"{path}: {rows} rows cannot fill {min_row_groups} row groups (one per rank at least)")
    url = dataset_url(path)
    with warnings.catch_warnings(), materialize_dataset(spark, url, schema, row_group_size_mb=row_group_size_mb):
        warnings.simplefilter("ignore", FutureWarning)
        (images.select(*KEY_FIELDS, "image").repartition(min_row_groups).mapInPandas(encode, spark_schema)
         .write.mode("overwrite").parquet(url))
    return write_sidecar(path, _schema_summary(schema), source, shape, rows, min_row_groups)


@contextmanager
def open_reader(url: str, cur_shard: int | None = None, shard_count: int | None = None,
                num_epochs: int | None = 1, shuffle: bool = False, seed: int = 0, workers: int = 2) -> Iterator[Any]:
    """A petastorm ``make_reader`` over one shard (or all) of a dataset; yields named tuples of numpy values."""
    from petastorm import make_reader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # petastorm 0.13 on pyarrow 14, once per row group
        with make_reader(url, cur_shard=cur_shard, shard_count=shard_count, num_epochs=num_epochs,
                         shuffle_row_groups=shuffle, seed=seed, workers_count=workers,
                         reader_pool_type="thread") as reader:
            yield reader


def read_shard(url: str, cur_shard: int | None = None, shard_count: int | None = None) -> dict[str, np.ndarray]:
    """All rows of one shard in memory: each field as an array (images stacked), in reading order."""
    with open_reader(url, cur_shard, shard_count, num_epochs=1, workers=1) as reader:
        rows = list(reader)
    if not rows:
        return {}
    return {name: np.stack([getattr(r, name) for r in rows]) for name in rows[0]._fields}


def tf_dataset(reader: Any, batch_size: int, transform: Any = None, shuffle_buffer: int = 0,
               seed: int = 0, drop_remainder: bool = False) -> Any:
    """``tf.data`` of (image float32 in stored units, target float32) batches from an open reader.

    ``transform``, if given, is a numpy function ``float32 image -> float32 image`` applied to each
    image before batching (training augmentation).
    """
    import tensorflow as tf
    from petastorm.tf_utils import make_petastorm_dataset

    ds = make_petastorm_dataset(reader).map(lambda row: (tf.cast(row.image, tf.float32),
                                                         tf.cast(row.target, tf.float32)))
    return batched(ds, batch_size, transform, shuffle_buffer, seed, drop_remainder)
