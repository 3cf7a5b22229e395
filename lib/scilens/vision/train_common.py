"""What both distributed training backends share: one way to do each thing.

:mod:`scilens.vision.horovod_train` (Horovod ranks reading Petastorm) and
:mod:`scilens.vision.tf_distribute_train` (``tf.distribute`` workers in Spark
barrier tasks reading plain Parquet) differ only in how ranks talk to each
other and read data. Everything else lives here, so the two backends cannot
drift apart:

* the training protocol (:class:`DistributedTrainingConfig`) and what a rank
  needs (:class:`TrainSpec`), the model builder (:func:`build_model`) and the
  learning-rate rule (:func:`scaled_learning_rate`);
* the augmentation of training images (:func:`augment_transform`);
* which weights are BatchNorm moving statistics (:func:`is_moving_statistic`):
  the only state that follows each rank's own batches, averaged over the
  ranks at every epoch's end by both backends;
* the end of an epoch (:class:`EpochTracker`): validation loss and AUC over
  the whole validation set, the best epoch and its weights, early stopping,
  rank 0's checkpoints and log line;
* the weight digest (:func:`weights_digest`) that shows the ranks stayed in sync.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from scilens.core.config import Config, field
from scilens.vision.augment import AugmentConfig

__all__ = [
    "BACKENDS",
    "DistributedTrainingConfig",
    "EpochTracker",
    "ModelExporter",
    "TrainSpec",
    "augment_transform",
    "binary_metrics",
    "build_model",
    "default_backend",
    "is_moving_statistic",
    "log",
    "rank_environment",
    "scaled_learning_rate",
    "weights_digest",
]


BACKENDS = ("horovod", "tf-distribute")


def default_backend() -> str:
    """The default backend: ``horovod`` where Horovod and Petastorm are installed, else ``tf-distribute``.

    Horovod must come with its TensorFlow extension.

    Looked up without importing them: job configs are declared when the CLI lists its jobs, which must not
    pay for importing TensorFlow. A Horovod that is installed but does not import fails the run with the
    import's own error (:func:`scilens.vision.horovod_train.train_distributed`).
    """
    import importlib.util
    from pathlib import Path

    horovod, petastorm = importlib.util.find_spec("horovod"), importlib.util.find_spec("petastorm")
    if horovod is None or petastorm is None or not horovod.submodule_search_locations:
        return "tf-distribute"
    extension = [p for root in horovod.submodule_search_locations for p in Path(root, "tensorflow").glob("mpi_lib*")]
    return "horovod" if extension else "tf-distribute"


@dataclass
class DistributedTrainingConfig(Config):
    """How one image model is trained on several ranks (defaults: the paper's OCT protocol)."""

    epochs: int = field(60, "Passes over the training set (the paper: 60 for OCT, 20 for CFP).", min=1)
    batch_size: int = field(80, "Images per step on each rank (Horovod convention; the global batch is "
                            "batch_size x num_proc).", min=1)
    learning_rate: float = field(1e-3, "Adam learning rate for one rank; multiplied by num_proc (paper: 1e-3 "
                                 "OCT, 1e-5 CFP).", check=lambda v: v > 0, check_doc="must be > 0")
    adam_epsilon: float = field(0.1, "Adam epsilon (paper: 0.1 for OCT).", check=lambda v: v > 0,
                                check_doc="must be > 0")
    label_smoothing: float = field(0.1, "Label smoothing of the binary cross-entropy.", min=0.0, max=0.5)
    early_stopping_patience: int = field(10, "Epochs without a better validation AUC before stopping.", min=1)
    num_proc: int = field(2, "Training ranks (Horovod ranks or tf.distribute workers; Spark task slots needed).",
                          min=1)
    threads_per_rank: int = field(1, "TensorFlow intra-op threads per rank.", min=1)
    shuffle_buffer: int = field(512, "Images in each rank's shuffle buffer.", min=0)
    reader_workers: int = field(2, "Petastorm reader threads per rank (backend horovod).", min=1)
    steps_per_epoch: int | None = field(None, "Steps per epoch on each rank; null: training rows / global batch.",
                                        min=1)
    seed: int = field(0, "Seed of weight initialisation, shuffling and augmentation.")
    augment: AugmentConfig = field(AugmentConfig(), "Training-time augmentation.")


@dataclass
class TrainSpec:
    """Everything a rank needs, picklable: what to build, what to read, where to write."""

    architecture: str  # "densenet" or "transfer"
    model_config: Config
    training: DistributedTrainingConfig
    image_shape: tuple[int, ...]
    train_url: str
    validation_url: str
    train_rows: int
    output_dir: str

    def steps_per_epoch(self, size: int) -> int:
        """Training steps per epoch on ``size`` ranks (the configured number, else one pass over the rows)."""
        if self.training.steps_per_epoch:
            return self.training.steps_per_epoch
        return max(1, self.train_rows // (self.training.batch_size * size))


def build_model(spec: TrainSpec) -> Any:
    """The Keras model a spec names."""
    if spec.architecture == "densenet":
        from scilens.vision.densenet import DenseNetConfig, build_densenet

        if not isinstance(spec.model_config, DenseNetConfig):
            raise TypeError(f"a densenet needs a DenseNetConfig, got {type(spec.model_config).__name__}")
        return build_densenet(spec.image_shape, spec.model_config)
    if spec.architecture == "transfer":
        from scilens.vision.transfer import TransferConfig, build_transfer_model

        if not isinstance(spec.model_config, TransferConfig):
            raise TypeError(f"a transfer model needs a TransferConfig, got {type(spec.model_config).__name__}")
        return build_transfer_model(spec.image_shape, spec.model_config)
    raise ValueError(f"unknown architecture {spec.architecture!r}")


def scaled_learning_rate(training: DistributedTrainingConfig, size: int) -> float:
    """Adam's learning rate on ``size`` ranks: the per-rank rate times the ranks (the global batch grows with them)."""
    return training.learning_rate * size


def augment_transform(training: DistributedTrainingConfig, rank: int) -> Callable[[np.ndarray], np.ndarray] | None:
    """The numpy ``float32 image (0-255) -> float32 image`` augmentation of one rank, None when disabled."""
    if not training.augment.enabled:
        return None
    from scilens.vision.augment import augment

    rng = np.random.default_rng([training.seed, rank])

    def transform(image: np.ndarray) -> np.ndarray:
        return (augment(image / 255.0, rng, training.augment) * 255.0).astype(np.float32)

    return transform


def is_moving_statistic(variable: Any) -> bool:
    """A BatchNorm moving mean or variance (Keras 2 and 3 both name them ``moving_*``)."""
    return "moving_" in variable.name


def weights_digest(weights: list[np.ndarray]) -> str:
    """SHA-256 of the weights' bytes, in order (equal digests: bit-identical weights)."""
    digest = hashlib.sha256()
    for w in weights:
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()


def binary_metrics(target: np.ndarray, prob: np.ndarray) -> tuple[float, float]:
    """(cross-entropy, ROC AUC) of probabilities ``prob`` for 0/1 ``target``."""
    from sklearn.metrics import roc_auc_score

    p = np.clip(prob.astype(np.float64), 1e-7, 1 - 1e-7)
    loss = float(-np.mean(target * np.log(p) + (1 - target) * np.log(1 - p))) if len(p) else float("nan")
    auc = float(roc_auc_score(target, prob)) if len(np.unique(target)) == 2 else float("nan")
    return loss, auc



def rank_environment(spark: Any, training: DistributedTrainingConfig, what: str) -> dict[str, str]:
    """The environment of every rank's process, after checking Spark can run all ranks at once.

    Both backends need ``training.num_proc`` task slots together (a barrier stage, or ``horovod.spark.run``
    which would otherwise wait for them forever); each rank gets ``threads_per_rank`` native threads.

    Raises
    ------
    ValueError
        Spark has fewer task slots than ranks; ``what`` names the ranks in the message.
    """
    slots = spark.sparkContext.defaultParallelism
    if training.num_proc > slots:
        raise ValueError(f"num_proc={training.num_proc} {what} ranks need as many Spark task slots, this session "
                         f"has {slots}; lower training.num_proc or run on more cores")
    threads = str(training.threads_per_rank)
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
            "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"), "PYTHONUNBUFFERED": "1"}

def log(message: str) -> None:
    """Print a progress line of the training ranks to stderr."""
    print(f"[scilens train] {message}", file=sys.stderr, flush=True)


class ModelExporter:
    """Saves weights through an uncompiled, undistributed twin of the trained model.

    The file carries no Horovod optimizer or distributed variables and loads
    anywhere.
    """

    def __init__(self, spec: TrainSpec, twin: Any = None):
        self.spec = spec
        self.twin = twin

    def save(self, weights: list[np.ndarray], path: str) -> None:
        """Write ``weights`` to ``path`` through the twin model (built on first use)."""
        if self.twin is None:
            self.twin = build_model(self.spec)
        self.twin.set_weights(weights)
        self.twin.save(path)


class EpochTracker:
    """The end of every epoch, the same on every rank of either backend.

    Given the epoch's training loss (already averaged over the ranks) and the
    targets and probabilities of the *whole* validation set (gathered from all
    ranks), every rank computes the same validation loss and AUC, so the best
    epoch, its weights and the early stop agree without further messages.
    Rank 0 alone logs and writes ``checkpoints/last.keras`` and ``best.keras``.
    """

    def __init__(self, spec: TrainSpec, rank: int, size: int, steps: int, exporter: ModelExporter):
        self.spec, self.rank, self.size, self.steps, self.exporter = spec, rank, size, steps, exporter
        self.history: list[dict[str, float]] = []
        self.best_auc = -np.inf
        self.best_epoch = -1
        self.best_weights: list[np.ndarray] | None = None
        self.wait = 0

    def end_epoch(self, epoch: int, loss: float, targets: np.ndarray, probs: np.ndarray, train_seconds: float,
                  started: float, weights: Callable[[], list[np.ndarray]]) -> bool:
        """Record epoch ``epoch`` (0-based).

        ``weights()`` gives the rank's current weights (called at most once).

        Returns
        -------
        bool
            True when training must stop (no better AUC for
            ``early_stopping_patience`` epochs).
        """
        cfg = self.spec.training
        val_loss, val_auc = binary_metrics(targets, probs)
        record = {"epoch": epoch + 1, "loss": float(loss), "val_loss": val_loss, "val_auc": val_auc,
                  "val_images": len(targets),
                  "images_per_second": self.steps * cfg.batch_size * self.size / train_seconds,
                  "train_seconds": train_seconds, "epoch_seconds": time.perf_counter() - started}
        self.history.append(record)
        improved = bool(np.isfinite(val_auc) and val_auc > self.best_auc)
        # Read only where used: by an improvement, or by rank 0's checkpoint.
        current = weights() if improved or self.rank == 0 else []
        if improved:
            self.best_auc, self.best_epoch, self.wait = val_auc, epoch + 1, 0
            self.best_weights = [np.array(w, copy=True) for w in current]
        else:
            self.wait += 1
        if self.rank == 0:
            log(f"epoch {epoch + 1}/{cfg.epochs}: loss {record['loss']:.4f}, val_loss {val_loss:.4f}, "
                f"val_auc {val_auc:.4f} ({len(targets)} images), {record['images_per_second']:.1f} images/s, "
                f"{record['epoch_seconds']:.1f} s{'  *best' if improved else ''}")
            checkpoints = os.path.join(self.spec.output_dir, "checkpoints")
            os.makedirs(checkpoints, exist_ok=True)
            self.exporter.save(current, os.path.join(checkpoints, "last.keras"))
            if improved:
                self.exporter.save(current, os.path.join(checkpoints, "best.keras"))
        return self.wait >= cfg.early_stopping_patience

    def result(self, final_weights: list[np.ndarray]) -> dict[str, Any]:
        """What a rank returns: its history, the best epoch and the digest of the weights it ends with."""
        return {"rank": self.rank, "size": self.size, "history": self.history, "best_epoch": self.best_epoch,
                "best_val_auc": self.best_auc, "weights_sha256": weights_digest(final_weights)}
