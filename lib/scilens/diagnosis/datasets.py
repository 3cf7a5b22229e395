"""Image classification datasets as Parquet image tables, the input of ``sample``, ``activations`` and ``train-model``.

An image table has one row per image: ``id`` (bigint, unique), ``label``
(int, ``0 .. classes-1``) and ``image``, a scilens tensor column (stored as
it comes, e.g. uint8 of shape (28, 28, 1)) or, with ``layout="array"``, a
flattened ``array<float>`` whose shape a job is told separately.

Sources, none downloaded at run time:

* Fashion-MNIST, real (Zalando; 60,000 train + 10,000 test, 28x28 grey):
  Debian's ``dataset-fashion-mnist`` installs it in
  ``/usr/share/datasets/fashion-mnist`` (``$SCILENS_FASHION_MNIST`` overrides);
* scikit-learn's digits, real (1,797 8x8 images, shipped with scikit-learn);
* galaxy cutouts, generated with known truth (:mod:`scilens.synth.galaxies`).
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from scilens.core.inputs import InputError
from scilens.core.tensor import ARROW_TENSOR_TYPE, encode_column

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_PACKAGE",
    "ImageSet",
    "digits",
    "fashion_mnist",
    "fashion_mnist_dir",
    "galaxies",
    "read_idx",
    "write_image_table",
]

FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
_FASHION_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                  "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
_ID_OFFSET = {"train": 0, "test": 1_000_000}
"""Test ids start at a million so train and test ids never collide."""


@dataclass
class ImageSet:
    """Images with ids and labels, in memory.

    Attributes
    ----------
    ids : ndarray of int64, shape (n,)
    labels : ndarray of int64, shape (n,)
    images : ndarray, shape (n, height, width, channels)
    class_names : tuple of str
    """

    ids: np.ndarray
    labels: np.ndarray
    images: np.ndarray
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: np.ndarray | slice) -> ImageSet:
        """The images at ``index`` (positions, a mask or a slice)."""
        return ImageSet(self.ids[index], self.labels[index], self.images[index], self.class_names)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format), gzipped or not, as a uint8/int array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if raw[2] not in dtypes:
        raise ValueError(f"{path}: unknown IDX element type 0x{raw[2]:02x}")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim))
    dtype = np.dtype(dtypes[raw[2]])
    data = np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but holds {data.size} values (truncated?)")
    return data.reshape(shape).astype(dtype.newbyteorder("="))


def fashion_mnist_dir() -> Path:
    """Where Fashion-MNIST is; InputError saying how to install it when it is not there."""
    folder = Path(os.environ.get("SCILENS_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
    missing = [name for pair in _FASHION_FILES.values() for name in pair if not (folder / name).is_file()]
    if missing:
        raise InputError(f"Fashion-MNIST not found in {folder} (missing {', '.join(missing)}); install Debian's "
                         f"{FASHION_MNIST_PACKAGE} (sudo apt-get install {FASHION_MNIST_PACKAGE}, or run "
                         f"deploy/install.sh as root) or point $SCILENS_FASHION_MNIST at a folder holding the "
                         f"four .gz files")
    return folder


def fashion_mnist(split: str = "train") -> ImageSet:
    """Fashion-MNIST's ``"train"`` (60,000) or ``"test"`` (10,000) images, uint8 (n, 28, 28, 1)."""
    if split not in _FASHION_FILES:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    folder = fashion_mnist_dir()
    images_file, labels_file = _FASHION_FILES[split]
    images = read_idx(folder / images_file)[..., None]
    labels = read_idx(folder / labels_file).astype(np.int64)
    ids = _ID_OFFSET[split] + np.arange(len(labels), dtype=np.int64)
    return ImageSet(ids, labels, images, FASHION_MNIST_CLASSES)


def digits(split: str = "all", test_fraction: float = 0.3, seed: int = 0) -> ImageSet:
    """scikit-learn's handwritten digits as uint8 (n, 8, 8, 1) images (0-16 scaled to 0-255).

    ``split`` is ``"all"``, or ``"train"``/``"test"`` of a split stratified by
    class (``test_fraction``, ``seed``). Ids are the rows of ``load_digits``.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255 / 16)).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int64)
    ids = np.arange(len(labels), dtype=np.int64)
    full = ImageSet(ids, labels, images, tuple(str(d) for d in range(10)))
    if split == "all":
        return full
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'all', 'train' or 'test', not {split!r}")
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        test[rng.choice(members, round(test_fraction * len(members)), replace=False)] = True
    return full.subset(test if split == "test" else ~test)


def galaxies(n: int, seed: int = 0, first_id: int = 0) -> tuple[ImageSet, pd.DataFrame]:
    """``n`` generated galaxy cutouts (uint8 (n, 69, 69, 3); 0 face-on, 1 edge-on) and their truth."""
    from scilens.synth.galaxies import CLASS_NAMES, make_galaxies

    made = make_galaxies(n, seed=seed)
    ids = first_id + np.arange(n, dtype=np.int64)
    truth = made.truth.assign(id=ids)
    return ImageSet(ids, made.labels, made.images, CLASS_NAMES), truth


def write_image_table(path: str | Path, images: ImageSet, layout: str = "tensor", rows_per_file: int = 20_000,
                      column: str = "image") -> Path:
    """Write an image table (Parquet directory of ``part-*.parquet`` files) and return its path.

    Parameters
    ----------
    path : str or Path
        Directory to create (replaced if it exists).
    images : ImageSet
    layout : {"tensor", "array"}
        The image column as a scilens tensor (dtype kept) or a flattened
        ``array<float>``.
    rows_per_file : int
        Rows per Parquet file (Spark reads one file per task at least).
    column : str
        Name of the image column.
    """
    import shutil

    if layout not in ("tensor", "array"):
        raise ValueError(f"layout must be 'tensor' or 'array', not {layout!r}")
    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    for part, start in enumerate(range(0, max(len(images), 1), rows_per_file)):
        chunk = images.subset(slice(start, start + rows_per_file))
        if layout == "tensor":
            pixels = pa.array(encode_column(chunk.images), type=ARROW_TENSOR_TYPE)
        else:
            flat = chunk.images.reshape(len(chunk), -1).astype(np.float32)
            pixels = pa.array(list(flat), type=pa.list_(pa.float32()))
        table = pa.table({"id": pa.array(chunk.ids, pa.int64()), "label": pa.array(chunk.labels, pa.int32()),
                          column: pixels})
        pq.write_table(table, path / f"part-{part:05d}.parquet")
    return path
