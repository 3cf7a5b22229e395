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

import os
import time
import warnings
from typing import Any

import numpy as np

from scilens.vision.train_common import (
    DistributedTrainingConfig,
    EpochTracker,
    ModelExporter,
    TrainSpec,
    augment_transform,
    build_model,
    is_moving_statistic,
    log,
    rank_environment,
    scaled_learning_rate,
    weights_digest,
)

# The protocol, spec and digest are shared with the tf.distribute backend (scilens.vision.train_common);
# re-exported here, where callers have always found them.
__all__ = ["DistributedTrainingConfig", "TrainSpec", "train_distributed", "train_on_rank", "weights_digest"]


def train_on_rank(spec: TrainSpec) -> dict[str, Any]:
    """Train on this Horovod rank (see the module doc); returns history and weight digest."""
    import horovod.tensorflow.keras as hvd
    import tensorflow as tf

    from scilens.vision import petastorm_data

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
        tf.keras.optimizers.legacy.Adam(learning_rate=scaled_learning_rate(cfg, size), epsilon=cfg.adam_epsilon))
    model.compile(optimizer=optimizer,
                  loss=tf.keras.losses.BinaryCrossentropy(label_smoothing=cfg.label_smoothing))
    steps = spec.steps_per_epoch(size)
    exporter = ModelExporter(spec)
    tracker = EpochTracker(spec, rank, size, steps, exporter)

    class SyncMovingStatistics(tf.keras.callbacks.Callback):
        """Average BatchNorm moving means/variances over ranks at each epoch's end.

        They follow each rank's own batches, unlike the trainable weights,
        which the averaged gradients keep identical.
        """

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            for i, var in enumerate(v for v in self.model.non_trainable_variables if is_moving_statistic(v)):
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
            # MetricAverageCallback (before this one) has averaged the loss over the ranks.
            stop = tracker.end_epoch(epoch, float(logs.get("loss", np.nan)), all_t, all_p, train_seconds,
                                     self.started, self.model.get_weights)
            logs.update({k: v for k, v in tracker.history[-1].items() if k != "epoch"})
            if stop:
                self.model.stop_training = True

    callbacks = [hvd.callbacks.BroadcastGlobalVariablesCallback(0), hvd.callbacks.MetricAverageCallback(),
                 SyncMovingStatistics(), Validate()]
    if rank == 0:
        log(f"{size} rank(s), {steps} steps of {cfg.batch_size} images per rank per epoch, "
            f"lr {scaled_learning_rate(cfg, size):g}, {model.count_params()} parameters")
    with petastorm_data.open_reader(spec.train_url, rank, size, num_epochs=None, shuffle=True,
                                    seed=cfg.seed + rank, workers=cfg.reader_workers) as reader:
        train = petastorm_data.tf_dataset(reader, cfg.batch_size, transform=augment_transform(cfg, rank),
                                          shuffle_buffer=cfg.shuffle_buffer, seed=cfg.seed + rank,
                                          drop_remainder=True)
        model.fit(train, steps_per_epoch=steps, epochs=cfg.epochs, callbacks=callbacks, verbose=0)
    if tracker.best_weights is not None:
        model.set_weights(tracker.best_weights)
    if rank == 0:
        exporter.save(model.get_weights(), os.path.join(spec.output_dir, "model.keras"))
    return tracker.result(model.get_weights())


def train_distributed(spark: Any, spec: TrainSpec) -> list[dict[str, Any]]:
    """Run :func:`train_on_rank` on ``spec.training.num_proc`` Horovod ranks; results ordered by rank.

    Raises
    ------
    ValueError
        Spark has fewer task slots than ranks (``horovod.spark.run`` would wait for them forever).
    """
    import horovod.spark

    num_proc = spec.training.num_proc
    env = {**os.environ, **rank_environment(spark, spec.training, "Horovod")}
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
