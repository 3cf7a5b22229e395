"""Batch inference of a saved Keras model over a Spark image table, with named outputs.

The model runs inside ``pyspark.ml.functions.predict_batch_udf``: each Python
worker loads it once (Spark's model cache keeps it between tasks) and feeds
it Arrow batches of images as numpy arrays. Any single-input Keras model
saved with ``model.save("path.keras")`` works; the model file must be
readable from every executor (a shared filesystem, like job outputs).

Outputs are named:

* a layer name -- that layer's activations, flattened to ``array<float>``
  (their per-item shape is :attr:`ModelInfo.layers`);
* ``"logits"`` -- the layer of that name if the model has one, otherwise the
  pre-activation of its final dense layer (``x @ W + b``);
* ``"probabilities"`` -- the model's output;
* ``"prediction"`` -- the most probable class (``int``; for a single sigmoid
  unit, ``p > 0.5``).

Images come in either of two layouts (:class:`ImageLayout`): the project's
tensor column (``struct<shape, dtype, data>``, :mod:`scilens.core.tensor`;
any numeric dtype, cast to float32 for the model) or a flattened numeric
``array`` column plus the image shape. A stored shape matches the model's
input when they agree after dropping axes of length one, e.g. (28, 28) for
(28, 28, 1). :func:`describe_model`, :func:`image_layout` and
:func:`check_model_input` find a missing layer or a shape mismatch on the
driver before any inference runs; :func:`invalid_image_reason` names the
rows a job should quarantine.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from scilens.core import tensor
from scilens.core.config import Config, field
from scilens.core.inputs import InputError
from scilens.core.tensor import TENSOR_TYPE

__all__ = [
    "LOGITS",
    "PREDICTION",
    "PROBABILITIES",
    "ImageLayout",
    "ImageTableConfig",
    "ModelInfo",
    "check_model_input",
    "decode_images",
    "describe_model",
    "image_layout",
    "invalid_image_reason",
    "load_keras_model",
    "model_outputs",
    "output_schema",
    "predict_numpy",
    "with_model",
]

LOGITS = "logits"
PROBABILITIES = "probabilities"
PREDICTION = "prediction"
_SAFE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PASS_THROUGH = ("InputLayer", "Flatten", "Reshape", "Dropout", "Rescaling", "SpatialDropout2D", "GaussianNoise")
"""Layers whose output only repeats, reshapes or (at inference) passes on their input."""


def load_keras_model(path: str | Path) -> Any:
    """Load a saved Keras model for inference (no optimizer state)."""
    from tensorflow import keras

    return keras.models.load_model(str(path), compile=False)


def with_model(path: str | Path, batches: Iterable[pd.DataFrame]) -> Iterator[tuple[Any, pd.DataFrame]]:
    """Pair each non-empty batch of a ``mapInPandas`` task with the model, loaded once per task.

    Parameters
    ----------
    path : path-like
        The saved Keras model (readable from the executor).
    batches : iterable of pandas.DataFrame
        The task's batches.

    Returns
    -------
    Iterator of (keras.Model, pandas.DataFrame)
        The model is loaded at the first non-empty batch, so a task without rows never loads it.
    """
    model = None
    for batch in batches:
        if batch.empty:
            continue
        if model is None:
            model = load_keras_model(path)
        yield model, batch


@dataclass(frozen=True)
class ModelInfo:
    """What a saved model takes and can output, read on the driver.

    Attributes
    ----------
    path : str
    input_shape : tuple of int
        Shape of one input item.
    layers : dict
        Layer name -> shape of its output for one item, in model order
        (the input layer excluded).
    n_classes : int
    latent_layer : str
        The last hidden layer: the one feeding the final dense layer.
    logits_layer : str or None
        The layer named ``logits``, if any; otherwise logits are computed
        from the final dense layer's input.
    final_dense : str
        Name of the final dense layer.
    """

    path: str
    input_shape: tuple[int, ...]
    layers: dict[str, tuple[int, ...]]
    n_classes: int
    latent_layer: str
    logits_layer: str | None
    final_dense: str
    layer_kinds: dict[str, str]

    def output_shape(self, name: str) -> tuple[int, ...]:
        """Per-item shape of a named output (``()`` for ``prediction``)."""
        if name == PREDICTION:
            return ()
        if name in (LOGITS, PROBABILITIES):
            return (self.layers[self.final_dense][-1],)
        return self.layers[name]

    def hidden_layers(self) -> list[str]:
        """Layers that compute something new (input copies, reshapes and dropout excluded)."""
        return [name for name, kind in self.layer_kinds.items() if kind not in _PASS_THROUGH]


def _producer(model: Any, tensor: Any) -> Any:
    for layer in model.layers:
        if layer.output is tensor:
            return layer
    history = getattr(tensor, "_keras_history", None)
    if history is not None:
        return history.layer
    raise InputError(f"cannot tell which layer feeds {tensor}")


def describe_model(path: str | Path) -> ModelInfo:
    """Load ``path`` on the driver and describe its input, layers and outputs.

    Raises
    ------
    InputError
        The file is missing or not a single-input Keras classifier ending in
        a dense layer.
    """
    from tensorflow import keras

    path = Path(path)
    if not path.is_file():
        raise InputError(f"model {path}: no such file")
    try:
        model = load_keras_model(path)
    except Exception as exc:  # Keras raises many types for a bad file
        raise InputError(f"model {path}: not a loadable Keras model ({type(exc).__name__}: {exc})") from None
    if len(model.inputs) != 1:
        raise InputError(f"model {path}: has {len(model.inputs)} inputs; batch inference needs exactly one")
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    if not dense:
        raise InputError(f"model {path}: has no dense layer, so no logits or last hidden layer")
    final = dense[-1]
    layers: dict[str, tuple[int, ...]] = {}
    kinds: dict[str, str] = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if not _SAFE_NAME.match(layer.name):
            raise InputError(f"model {path}: layer name {layer.name!r} is not usable as a column name")
        layers[layer.name] = tuple(int(n) for n in layer.output.shape[1:])
        kinds[layer.name] = type(layer).__name__
    n_out = layers[final.name][-1]
    return ModelInfo(
        path=str(path.absolute()),
        input_shape=tuple(int(n) for n in model.inputs[0].shape[1:]),
        layers=layers,
        n_classes=2 if n_out == 1 else n_out,
        latent_layer=_producer(model, final.input).name,
        logits_layer=LOGITS if LOGITS in layers else None,
        final_dense=final.name,
        layer_kinds=kinds,
    )


def resolve_outputs(info: ModelInfo, outputs: Sequence[str]) -> list[str]:
    """Check requested output names against the model; unknown names raise InputError listing the known ones."""
    special = (LOGITS, PROBABILITIES, PREDICTION)
    unknown = [name for name in outputs if name not in special and name not in info.layers]
    if unknown:
        raise InputError(f"model {info.path} has no layer {', '.join(map(repr, unknown))}; "
                         f"its layers are {', '.join(info.layers)}")
    if len(set(outputs)) != len(outputs):
        raise InputError(f"outputs {list(outputs)} name a layer twice")
    return list(outputs)


def output_schema(outputs: Sequence[str]) -> T.StructType:
    """Spark type of :func:`model_outputs`: ``prediction`` an int, everything else ``array<float>``."""
    return T.StructType([
        T.StructField(name, T.IntegerType() if name == PREDICTION else T.ArrayType(T.FloatType()))
        for name in outputs
    ])


# --- image layouts ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageLayout:
    """How images are stored in a DataFrame column.

    Attributes
    ----------
    column : str
    kind : {"tensor", "array"}
        A tensor column (:data:`scilens.core.tensor.TENSOR_TYPE`) or a
        flattened numeric array.
    shapes : tuple of tuple of int
        Per-image shapes found (tensor) or declared (array).
    dtypes : tuple of str
        NumPy dtypes found in a tensor column (``"<f4"`` for arrays).
    """

    column: str
    kind: str
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]


@dataclass
class ImageTableConfig(Config):
    """Which columns of an image table hold what (the jobs' ``data`` section)."""

    id_column: str = field("id", "Unique item id (integer).")
    label_column: str = field("label", "True class, 0 .. classes-1.")
    image_column: str = field("image", "Images: a scilens tensor column, or a flattened array of numbers.")
    image_shape: list[int] | None = field(None, "Shape of one image when the image column is a flattened array, "
                                          "e.g. [28, 28, 1]; ignored for tensor columns.",
                                          check=lambda s: all(n > 0 for n in s), check_doc="positive lengths")


def _squeezed(shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(n) for n in shape if n != 1)


def image_layout(df: DataFrame, column: str, shape: Sequence[int] | None = None) -> ImageLayout:
    """Inspect the image column: its kind and, for tensors, the shapes and dtypes present.

    Reading a tensor column's shapes reads only its small ``shape`` and
    ``dtype`` fields (Parquet column pruning), not the pixels.

    Raises
    ------
    InputError
        No such column, a column of another type, or an array column without ``shape``.
    """
    if column not in df.columns:
        raise InputError(f"no image column {column!r}; columns are {', '.join(df.columns)}")
    dtype = df.schema[column].dataType
    if isinstance(dtype, T.StructType) and {f.name for f in dtype.fields} == {f.name for f in TENSOR_TYPE.fields}:
        found = (df.where(F.col(column).isNotNull())
                 .select(F.col(f"{column}.shape").alias("shape"), F.col(f"{column}.dtype").alias("dtype"))
                 .distinct().collect())
        if not found:
            raise InputError(f"image column {column!r} holds no images")
        return ImageLayout(column, "tensor", tuple(sorted({tuple(r.shape) for r in found})),
                           tuple(sorted({r.dtype for r in found})))
    if isinstance(dtype, T.ArrayType) and isinstance(dtype.elementType, T.NumericType):
        if not shape:
            raise InputError(f"image column {column!r} is a flattened array; give the image shape "
                             f"(e.g. --set image_shape=[28,28,1])")
        return ImageLayout(column, "array", (tuple(int(n) for n in shape),), ("<f4",))
    raise InputError(f"image column {column!r} has type {dtype.simpleString()}; expected a scilens tensor "
                     f"struct<shape,dtype,data> or a flattened array of numbers")


def decode_images(column: pd.Series, layout: ImageLayout, shape: Sequence[int], ids: Sequence[int] | None = None,
                  dtype: Any = np.float32) -> list[np.ndarray]:
    """The images of a pandas column stored as ``layout`` says, each of shape ``shape``.

    Parameters
    ----------
    column : pandas.Series
        The image column of a batch (tensor structs, or flattened arrays).
    layout : ImageLayout
        How the column stores images (:func:`image_layout`).
    shape : sequence of int
        Each image's shape.
    ids : sequence of int, optional
        The rows' item ids, named when an image is missing.
    dtype : numpy dtype or None
        Cast to it; None keeps a tensor's stored dtype (flattened arrays are float32 either way).

    Returns
    -------
    list of numpy.ndarray

    Raises
    ------
    ValueError
        A null image (:func:`invalid_image_reason` filters them out of a table; a frame built
        by hand may hold one), naming its id or row.
    """
    shape = tuple(int(n) for n in shape)
    if layout.kind == "array":
        return [np.asarray(v, dtype=np.float32).reshape(shape) for v in column]
    images = []
    for n, array in enumerate(tensor.decode_column(column)):
        if array is None:
            raise ValueError(f"{f'item id {ids[n]}' if ids is not None else f'row {n}'}: no image")
        images.append((array if dtype is None else np.asarray(array, dtype=dtype)).reshape(shape))
    return images


def check_model_input(info: ModelInfo, layout: ImageLayout, source: str = "") -> tuple[int, ...]:
    """The stored image shape that matches the model input; InputError if none does."""
    matching = [s for s in layout.shapes if _squeezed(s) == _squeezed(info.input_shape)]
    where = f"{source}: " if source else ""
    if not matching:
        found = ", ".join("x".join(map(str, s)) for s in layout.shapes)
        raise InputError(f"{where}images in column {layout.column!r} have shape {found}, but model "
                         f"{info.path} expects {'x'.join(map(str, info.input_shape))}")
    return matching[0]


def invalid_image_reason(layout: ImageLayout, shape: Sequence[int]) -> Column:
    """Per row: null if the image can be fed to the model, else why not (a string).

    Catches a null image, a shape other than ``shape`` and, for tensors, a
    byte count that does not fit shape and dtype (a corrupted record).
    """
    col = F.col(layout.column)
    size = int(np.prod(shape))
    expected = "x".join(map(str, shape))
    if layout.kind == "array":
        return (F.when(col.isNull(), F.lit("image is null"))
                 .when(F.size(col) != size,
                       F.concat(F.lit("image has "), F.size(col).cast("string"),
                                F.lit(f" values, the model expects {size} ({expected})"))))
    shape_ok = col.shape == F.array(*[F.lit(int(n)).cast("long") for n in shape])
    nbytes = None
    for dtype in layout.dtypes:
        want = F.lit(size * np.dtype(dtype).itemsize)
        nbytes = F.when(col.dtype == dtype, want) if nbytes is None else nbytes.when(col.dtype == dtype, want)
    return (F.when(col.isNull(), F.lit("image is null"))
             .when(~shape_ok, F.concat(F.lit("image has shape "), F.array_join(col.shape, "x"),
                                       F.lit(f", the model expects {expected}")))
             .when(F.length(col.data) != nbytes,
                   F.concat(F.lit("image tensor holds "), F.length(col.data).cast("string"),
                            F.lit(" bytes, not what its shape and dtype need"))))


# --- the predict function -----------------------------------------------------------------------------


def _sub_model(model: Any, info: ModelInfo, outputs: Sequence[str]) -> tuple[Any, Callable[[list], dict]]:
    """A Keras model computing what ``outputs`` need, and a function from its results to the outputs."""
    from tensorflow import keras

    tensors: list[Any] = []
    where: dict[str, int] = {}

    def need(key: str, tensor: Any) -> int:
        if key not in where:
            where[key] = len(tensors)
            tensors.append(tensor)
        return where[key]

    final = model.get_layer(info.final_dense)
    for name in outputs:
        if name in (PROBABILITIES, PREDICTION):
            need(PROBABILITIES, model.outputs[0])
        elif name == LOGITS and info.logits_layer is None:
            need("_final_input", final.input)
        else:
            need(name, model.get_layer(name).output)
    sub = keras.Model(model.inputs, tensors)
    kernel: np.ndarray | None
    bias: np.ndarray | None
    if info.logits_layer is None and "_final_input" in where:
        kernel, bias = (np.asarray(w, dtype=np.float64) for w in final.get_weights()[:2])
    else:
        kernel = bias = None

    def finish(results: list) -> dict[str, np.ndarray]:
        n = len(results[0])
        out: dict[str, np.ndarray] = {}
        for name in outputs:
            if name == PREDICTION:
                p = results[where[PROBABILITIES]].reshape(n, -1)
                out[name] = (p.argmax(axis=1) if p.shape[1] > 1 else (p[:, 0] > 0.5)).astype(np.int32)
            elif name == LOGITS and kernel is not None:
                x = results[where["_final_input"]].reshape(n, -1).astype(np.float64)
                out[name] = (x @ kernel + bias).astype(np.float32)
            else:
                key = PROBABILITIES if name == PROBABILITIES else name
                out[name] = results[where[key]].reshape(n, -1).astype(np.float32, copy=False)
        return out

    return sub, finish


def _decode_batch(data: np.ndarray, dtypes: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Tensor bytes of a batch (object arrays of bytes and dtype strings) -> float32 (n, *shape)."""
    first = dtypes[0]
    if all(d == first for d in dtypes):
        flat = np.frombuffer(b"".join(data), dtype=np.dtype(first))
        return flat.astype(np.float32).reshape((len(data), *shape))
    return np.stack([np.frombuffer(b, dtype=np.dtype(d)).astype(np.float32).reshape(shape)
                     for b, d in zip(data, dtypes)])


def _pin_tensorflow_threads() -> None:
    """One TensorFlow thread per Spark task when the session pinned native threads (OMP_NUM_THREADS)."""
    import tensorflow as tf

    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads > 0:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # TensorFlow already initialised in this worker
            pass


def predict_numpy(info: ModelInfo, outputs: Sequence[str], images: np.ndarray, batch_size: int = 256,
                  model: Any = None) -> dict[str, np.ndarray]:
    """The named outputs for in-memory ``images`` (n, *shape): what the Spark path computes, in one process."""
    model = load_keras_model(info.path) if model is None else model
    sub, finish = _sub_model(model, info, resolve_outputs(info, outputs))
    x = np.asarray(images, dtype=np.float32).reshape((len(images), *info.input_shape))
    parts = [finish(_as_list(sub.predict_on_batch(x[i:i + batch_size])))
             for i in range(0, len(x), batch_size)]
    return {name: np.concatenate([p[name] for p in parts]) for name in outputs}


def _as_list(results: Any) -> list:
    return [np.asarray(r) for r in results] if isinstance(results, (list, tuple)) else [np.asarray(results)]


def model_outputs(info: ModelInfo, outputs: Sequence[str], layout: ImageLayout, batch_size: int = 256) -> Column:
    """A struct column of the named ``outputs`` for each row's image (see the module doc).

    Use on rows whose :func:`invalid_image_reason` is null::

        df.withColumn("out", model_outputs(info, ["fc2", "logits", "prediction"], layout)).select("id", "out.*")
    """
    from pyspark.ml.functions import predict_batch_udf

    outputs = resolve_outputs(info, outputs)
    path, input_shape, kind = info.path, info.input_shape, layout.kind

    def make_predict_fn() -> Callable:
        _pin_tensorflow_threads()
        sub, finish = _sub_model(load_keras_model(path), info, outputs)

        def run(x: np.ndarray) -> dict[str, np.ndarray]:
            return finish(_as_list(sub.predict_on_batch(x)))

        if kind == "array":
            def predict_array(images: np.ndarray) -> dict[str, np.ndarray]:
                return run(images.astype(np.float32).reshape((len(images), *input_shape)))

            return predict_array

        def predict_tensor(data: np.ndarray, dtypes: np.ndarray) -> dict[str, np.ndarray]:
            return run(_decode_batch(data, dtypes, input_shape))

        return predict_tensor

    udf = predict_batch_udf(make_predict_fn, return_type=output_schema(outputs), batch_size=batch_size,
                            input_tensor_shapes=[[int(np.prod(input_shape))]] if kind == "array" else None)
    col = layout.column
    if kind == "array":
        return udf(F.col(col).cast(T.ArrayType(T.FloatType())))
    return udf(F.col(f"{col}.data"), F.col(f"{col}.dtype"))
