"""Data-parallel Keras training with Horovod on Spark, each rank reading its shard of a Petastorm dataset.

:func:`train_distributed` runs :func:`train_on_rank` in ``num_proc`` ranks
through ``horovod.spark.run`` (Gloo controller; Spark must have that many
task slots). Every rank

* builds the model from the spec with the same seed, wraps Adam in
  ``hvd.DistributedOptimizer`` (gradients averaged across ranks by
  allreduce) with the learning rate multiplied by the number of ranks, and
  broadcasts rank 0's initial weights and optimizer state;
* reads its own shard of the training dataset (``cur_shard=rank``,
  ``shard_count=size``), repeated and shuffled, augmented (training only),
  for the same number of steps per epoch on every rank;
* at the end of each epoch averages the BatchNorm moving statistics over
  the ranks (the only state that follows each rank's own batches), then
  predicts its shard of the validation set; the
  predictions of all ranks are allgathered, so every rank computes the same
  validation loss and AUC over the whole set and early stopping and the
  choice of the best epoch are the same on every rank without further
  messages. Rank 0 writes the checkpoints, logs one line per epoch and saves
  the final model (the best epoch's weights).

Each rank returns its history and a SHA-256 digest of its final weights:
identical digests show the ranks stayed in sync.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from scilens.core.config import Config, field
from scilens.vision.retina_preprocess import AugmentConfig

__all__ = ["DistributedTrainingConfig", "TrainSpec", "train_distributed", "train_on_rank", "weights_digest"]


@dataclass
class DistributedTrainingConfig(Config):
    """How one image model is trained with Horovod (defaults: the paper's OCT protocol)."""

    epochs: int = field(60, "Passes over the training set (the paper: 60 for OCT, 20 for CFP).", min=1)
    batch_size: int = field(80, "Images per step on each rank (Horovod convention; the global batch is "
                            "batch_size x num_proc).", min=1)
    learning_rate: float = field(1e-3, "Adam learning rate for one rank; multiplied by num_proc (paper: 1e-3 "
                                 "OCT, 1e-5 CFP).", check=lambda v: v > 0, check_doc="must be > 0")
    adam_epsilon: float = field(0.1, "Adam epsilon (paper: 0.1 for OCT).", check=lambda v: v > 0,
                                check_doc="must be > 0")
    label_smoothing: float = field(0.1, "Label smoothing of the binary cross-entropy.", min=0.0, max=0.5)
    early_stopping_patience: int = field(10, "Epochs without a better validation AUC before stopping.", min=1)
    num_proc: int = field(2, "Horovod ranks (Spark task slots needed).", min=1)
    threads_per_rank: int = field(1, "TensorFlow intra-op threads per rank.", min=1)
    shuffle_buffer: int = field(512, "Images in each rank's shuffle buffer.", min=0)
    reader_workers: int = field(2, "Petastorm reader threads per rank.", min=1)
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
        if self.training.steps_per_epoch:
            return self.training.steps_per_epoch
        return max(1, self.train_rows // (self.training.batch_size * size))


def build_model(spec: TrainSpec) -> Any:
    """The Keras model a spec names."""
    if spec.architecture == "densenet":
        from scilens.vision.densenet import build_densenet

        return build_densenet(spec.image_shape, spec.model_config)  # type: ignore[arg-type]
    if spec.architecture == "transfer":
        from scilens.vision.transfer import build_transfer_model

        return build_transfer_model(spec.image_shape, spec.model_config)  # type: ignore[arg-type]
    raise ValueError(f"unknown architecture {spec.architecture!r}")


def weights_digest(weights: list[np.ndarray]) -> str:
    """SHA-256 of the weights' bytes, in order (equal digests: bit-identical weights)."""
    digest = hashlib.sha256()
    for w in weights:
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()


def _binary_metrics(target: np.ndarray, prob: np.ndarray) -> tuple[float, float]:
    """(cross-entropy, ROC AUC) of probabilities ``prob`` for 0/1 ``target``."""
    from sklearn.metrics import roc_auc_score

    p = np.clip(prob.astype(np.float64), 1e-7, 1 - 1e-7)
    loss = float(-np.mean(target * np.log(p) + (1 - target) * np.log(1 - p))) if len(p) else float("nan")
    auc = float(roc_auc_score(target, prob)) if len(np.unique(target)) == 2 else float("nan")
    return loss, auc


def _log(message: str) -> None:
    print(f"[scilens train] {message}", file=sys.stderr, flush=True)


def train_on_rank(spec: TrainSpec) -> dict[str, Any]:
    """Train on this Horovod rank (see the module doc); returns history and weight digest."""
    import horovod.tensorflow.keras as hvd
    import tensorflow as tf

    from scilens.vision import petastorm_data
    from scilens.vision.retina_preprocess import augment

    warnings.filterwarnings("ignore", category=FutureWarning)  # petastorm on pyarrow 14, once per batch
    warnings.filterwarnings("ignore", category=UserWarning, module="petastorm")
    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    cfg = spec.training
    tf.config.threading.set_intra_op_parallelism_threads(cfg.threads_per_rank)
    tf.config.threading.set_inter_op_parallelism_threads(cfg.threads_per_rank)
    tf.keras.utils.set_random_seed(cfg.seed)  # same initial weights everywhere; rank 0's are broadcast anyway
    model = build_model(spec)
    optimizer = hvd.DistributedOptimizer(
        tf.keras.optimizers.legacy.Adam(learning_rate=cfg.learning_rate * size, epsilon=cfg.adam_epsilon))
    model.compile(optimizer=optimizer,
                  loss=tf.keras.losses.BinaryCrossentropy(label_smoothing=cfg.label_smoothing))
    steps = spec.steps_per_epoch(size)
    rng = np.random.default_rng([cfg.seed, rank])

    def transform(image: np.ndarray) -> np.ndarray:
        return (augment(image / 255.0, rng, cfg.augment) * 255.0).astype(np.float32)

    export: list[Any] = []

    def save(trained: Any, path: str) -> None:
        # Saved from an uncompiled twin: a file without Horovod's optimizer loads anywhere.
        if not export:
            export.append(build_model(spec))
        export[0].set_weights(trained.get_weights())
        export[0].save(path)

    state: dict[str, Any] = {"best_auc": -np.inf, "best_epoch": -1, "best_weights": None, "wait": 0}
    history: list[dict[str, float]] = []

    class SyncMovingStatistics(tf.keras.callbacks.Callback):
        """Average BatchNorm moving means/variances over ranks: they follow each rank's own batches,
        unlike the trainable weights, which the averaged gradients keep identical."""

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            for i, var in enumerate(v for v in self.model.non_trainable_variables if "moving_" in v.name):
                var.assign(hvd.allreduce(var, op=hvd.Average, name=f"moving_statistics_{i}"))

    class Validate(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            logs = logs if logs is not None else {}
            train_seconds = time.perf_counter() - self.started
            targets, probs = [], []
            with petastorm_data.open_reader(spec.validation_url, rank, size, num_epochs=1,
                                            workers=cfg.reader_workers) as reader:
                for images, target in petastorm_data.tf_dataset(reader, cfg.batch_size):
                    probs.append(np.asarray(self.model(images, training=False)).reshape(-1))
                    targets.append(target.numpy())
            local_t = np.concatenate(targets) if targets else np.zeros(0, np.float32)
            local_p = np.concatenate(probs) if probs else np.zeros(0, np.float32)
            all_t = hvd.allgather(tf.constant(local_t, tf.float32), name="val_target").numpy()
            all_p = hvd.allgather(tf.constant(local_p, tf.float32), name="val_prob").numpy()
            val_loss, val_auc = _binary_metrics(all_t, all_p)
            record = {"epoch": epoch + 1, "loss": float(logs.get("loss", np.nan)), "val_loss": val_loss,
                      "val_auc": val_auc, "val_images": len(all_t),
                      "images_per_second": steps * cfg.batch_size * size / train_seconds,
                      "train_seconds": train_seconds, "epoch_seconds": time.perf_counter() - self.started}
            logs.update({k: v for k, v in record.items() if k != "epoch"})
            history.append(record)
            improved = np.isfinite(val_auc) and val_auc > state["best_auc"]
            if improved:
                state.update(best_auc=val_auc, best_epoch=epoch + 1, wait=0,
                             best_weights=[w.copy() for w in self.model.get_weights()])
            else:
                state["wait"] += 1
            if rank == 0:
                _log(f"epoch {epoch + 1}/{cfg.epochs}: loss {record['loss']:.4f}, val_loss {val_loss:.4f}, "
                     f"val_auc {val_auc:.4f} ({len(all_t)} images), {record['images_per_second']:.1f} images/s, "
                     f"{record['epoch_seconds']:.1f} s{'  *best' if improved else ''}")
                checkpoints = os.path.join(spec.output_dir, "checkpoints")
                os.makedirs(checkpoints, exist_ok=True)
                save(self.model, os.path.join(checkpoints, "last.keras"))
                if improved:
                    save(self.model, os.path.join(checkpoints, "best.keras"))
            if state["wait"] >= cfg.early_stopping_patience:
                self.model.stop_training = True

    callbacks = [hvd.callbacks.BroadcastGlobalVariablesCallback(0), hvd.callbacks.MetricAverageCallback(),
                 SyncMovingStatistics(), Validate()]
    if rank == 0:
        _log(f"{size} rank(s), {steps} steps of {cfg.batch_size} images per rank per epoch, "
             f"lr {cfg.learning_rate * size:g}, {model.count_params()} parameters")
    with petastorm_data.open_reader(spec.train_url, rank, size, num_epochs=None, shuffle=True,
                                    seed=cfg.seed + rank, workers=cfg.reader_workers) as reader:
        train = petastorm_data.tf_dataset(reader, cfg.batch_size,
                                          transform=transform if cfg.augment.enabled else None,
                                          shuffle_buffer=cfg.shuffle_buffer, seed=cfg.seed + rank,
                                          drop_remainder=True)
        model.fit(train, steps_per_epoch=steps, epochs=cfg.epochs, callbacks=callbacks, verbose=0)
    if state["best_weights"] is not None:
        model.set_weights(state["best_weights"])
    if rank == 0:
        save(model, os.path.join(spec.output_dir, "model.keras"))
    return {"rank": rank, "size": size, "history": history, "best_epoch": state["best_epoch"],
            "best_val_auc": state["best_auc"], "weights_sha256": weights_digest(model.get_weights())}


def train_distributed(spark: Any, spec: TrainSpec) -> list[dict[str, Any]]:
    """Run :func:`train_on_rank` on ``spec.training.num_proc`` Horovod ranks; results ordered by rank.

    Raises
    ------
    ValueError
        Spark has fewer task slots than ranks (``horovod.spark.run`` would wait for them forever).
    """
    import horovod.spark

    num_proc = spec.training.num_proc
    slots = spark.sparkContext.defaultParallelism
    if num_proc > slots:
        raise ValueError(f"num_proc={num_proc} Horovod ranks need as many Spark task slots, this session has "
                         f"{slots}; lower training.num_proc or run on more cores")
    threads = str(spec.training.threads_per_rank)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
           "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"), "PYTHONUNBUFFERED": "1"}
    _probe_horovod_build()
    results = horovod.spark.run(train_on_rank, args=(spec,), num_proc=num_proc, env=env, verbose=0)
    return sorted(results, key=lambda r: r["rank"])


def _probe_horovod_build(attempts: int = 3) -> None:
    """Ask Horovod which controllers it was built with before ``horovod.spark.run`` does, retrying.

    Horovod answers by forking a process that imports its TensorFlow extension
    and reports through a queue. Forked from a driver with many threads (the
    JVM gateway, TensorFlow), that child died once in a full test run and the
    launch failed with ``queue.Empty``. Horovod caches an answer once it gets
    one, so a probe that succeeds here is the one ``horovod.spark.run`` uses.
    """
    import queue

    from horovod.common.util import gloo_built, mpi_built

    for attempt in range(attempts):
        try:
            mpi_built(verbose=False)  # the keyword as horovod.spark.run passes it: the cache key
            gloo_built(verbose=False)
            return
        except (queue.Empty, ValueError):
            if attempt == attempts - 1:
                raise
