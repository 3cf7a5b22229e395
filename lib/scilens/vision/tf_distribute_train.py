"""Data-parallel Keras training with ``tf.distribute.MultiWorkerMirroredStrategy`` in Spark barrier tasks.

The Horovod backend's twin (:mod:`scilens.vision.horovod_train`) for stacks
without Horovod and Petastorm (TensorFlow 2.16+, Keras 3, pyarrow 15+).
:func:`train_distributed` runs ``num_proc`` ranks as the tasks of one Spark
barrier stage (``rdd.barrier().mapPartitions``; all tasks start together or
none does). Each task

* picks a free TCP port on its host and shares it with the other tasks
  (``BarrierTaskContext.allGather``); with the hosts of
  ``BarrierTaskContext.getTaskInfos()`` that makes the cluster of
  ``TF_CONFIG`` (worker ``i`` is task ``i``);
* starts the rank as a fresh Python process (:func:`train_on_rank`):
  MultiWorkerMirroredStrategy must be created before TensorFlow does anything
  else in its process, and Spark reuses its Python workers, which may have
  run TensorFlow already (inference, an earlier training).

Every rank, like a Horovod rank,

* builds the model under the strategy's scope from the spec with the same
  seed (the strategy also broadcasts worker 0's initial values), Adam with
  the learning rate multiplied by the number of ranks, and trains it in its
  own loop (``strategy.run`` per step; Keras' ``fit`` fails under a
  multi-worker strategy on Keras 3.5): each rank's loss is its share of the
  global batch's mean, the optimizer sums the gradients over the ranks by
  collective all-reduce (ring), so every rank applies the same update;
* reads its own shard of the training Parquet (every ``size``-th row group)
  with pyarrow into ``tf.data`` (:mod:`scilens.vision.parquet_data`),
  repeated, shuffled and augmented, for the same number of steps per epoch;
* at the end of each epoch averages the BatchNorm moving statistics over the
  ranks by all-reduce and writes the mean back into every rank's model --
  the Horovod backend's rule, not SyncBatchNormalization, so both backends
  train the same model the same way (per-rank batch statistics while
  training, identical moving statistics for inference);
* predicts its shard of the validation Parquet with an undistributed twin of
  the model holding the same weights; targets and probabilities of all ranks
  are all-gathered, so every rank computes the validation loss and AUC over
  the whole set and stops at the same epoch
  (:class:`scilens.vision.train_common.EpochTracker`). Rank 0 writes the
  checkpoints and the final model (the best epoch's weights).

Each rank returns its history and the SHA-256 digest of the weights it holds
at the end, read from its own copy of every variable (not through the
strategy, which would average them): identical digests show the ranks stayed
in sync.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from typing import Any

import numpy as np

from scilens.core import compat
from scilens.vision import parquet_data
from scilens.vision.train_common import (
    EpochTracker,
    ModelExporter,
    TrainSpec,
    augment_transform,
    build_model,
    is_moving_statistic,
    log,
    rank_environment,
    scaled_learning_rate,
)

__all__ = ["train_distributed", "train_on_rank"]


def _local_values(strategy: Any, variables: list[Any]) -> list[np.ndarray]:
    """The rank's own copy of each variable.

    Reading a distributed variable through the strategy may all-reduce it
    (BatchNorm statistics are sync-on-read in Keras 2), which would hide a
    rank out of sync and be a collective only some ranks take part in.
    """
    return [strategy.experimental_local_results(compat.tf_variable(v))[0].numpy() for v in variables]


def _assign_local(strategy: Any, variables: list[Any], values: list[np.ndarray]) -> None:
    for variable, value in zip(variables, values):
        for local in strategy.experimental_local_results(compat.tf_variable(variable)):
            local.assign(value)


class _Collectives:
    """All-reduce and all-gather of numpy values among the ranks.

    Through the strategy's collectives (the same ring the gradients use).
    Every rank must make the same calls in the same order.
    """

    def __init__(self, strategy: Any):
        import tensorflow as tf

        self.tf, self.strategy = tf, strategy

        # tf.identity places the value on the replica's device: collectives need a device to reduce to.
        def mean(values: Any) -> Any:
            return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.MEAN,
                                                                  tf.nest.map_structure(tf.identity, values))

        def gather(value: Any) -> Any:
            return tf.distribute.get_replica_context().all_gather(tf.identity(value), axis=0)

        self._mean = tf.function(lambda v: strategy.run(mean, args=(v,)), reduce_retracing=True)
        self._gather = tf.function(lambda v: strategy.run(gather, args=(v,)), reduce_retracing=True)

    def _local(self, value: Any) -> Any:
        return self.tf.nest.map_structure(lambda t: self.strategy.experimental_local_results(t)[0].numpy(), value)

    def mean(self, values: list[np.ndarray]) -> list[np.ndarray]:
        if not values:
            return []
        return list(self._local(self._mean([self.tf.constant(v) for v in values])))

    def gather(self, value: np.ndarray) -> np.ndarray:
        """Concatenation of every rank's ``value`` in rank order; lengths may differ between ranks."""
        counts = self._local(self._gather(self.tf.constant([len(value)], self.tf.int64)))
        padded = np.zeros((int(counts.max()), *value.shape[1:]), value.dtype)
        padded[:len(value)] = value
        gathered = self._local(self._gather(self.tf.constant(padded)))
        width = len(padded)
        return np.concatenate([gathered[r * width:r * width + int(n)] for r, n in enumerate(counts)])


def train_on_rank(spec: TrainSpec) -> dict[str, Any]:
    """Train on this worker of ``TF_CONFIG``'s cluster (see the module doc); returns history and weight digest.

    Must run in a process where TensorFlow has done nothing yet.
    """
    import tensorflow as tf

    cfg = spec.training
    tf.config.threading.set_intra_op_parallelism_threads(cfg.threads_per_rank)
    tf.config.threading.set_inter_op_parallelism_threads(cfg.threads_per_rank)
    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING))
    rank, size = int(strategy.cluster_resolver.task_id), int(strategy.num_replicas_in_sync)
    collectives = _Collectives(strategy)
    # Built outside the strategy's scope: plain variables, so predicting and saving on one rank are local.
    twin = build_model(spec)
    tf.keras.utils.set_random_seed(cfg.seed)  # as the Horovod backend seeds, right before building
    with strategy.scope():
        model = build_model(spec)
        optimizer = tf.keras.optimizers.Adam(learning_rate=scaled_learning_rate(cfg, size), epsilon=cfg.adam_epsilon)
        optimizer.build(model.trainable_variables)  # its slots created here, not inside a replica's step
    loss_fn = tf.keras.losses.BinaryCrossentropy(label_smoothing=cfg.label_smoothing, reduction="none")
    global_batch = cfg.batch_size * size

    # A training loop of our own rather than Keras' fit: fit under a multi-worker strategy fails in Keras 3.5
    # (it all-reduces its first batch and its scalar logs along an axis they do not have). The step is what fit
    # does: per-rank forward pass, the loss as a share of the global batch's mean, gradients summed over the
    # ranks by the optimizer (collective all-reduce) and the same update applied on every rank.
    def step(images: Any, target: Any) -> Any:
        with tf.GradientTape() as tape:
            prob = model(images, training=True)
            loss = tf.nn.compute_average_loss(loss_fn(tf.reshape(target, (-1, 1)), prob),
                                              global_batch_size=global_batch)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    @tf.function
    def train_step(iterator: Any) -> Any:
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(step, args=next(iterator)), axis=None)

    def train_input(context: Any) -> Any:
        # One input pipeline per rank: its own shard, batches of the per-rank batch size, never sharded again.
        return parquet_data.tf_dataset(spec.train_url, context.input_pipeline_id, context.num_input_pipelines,
                                       spec.image_shape, cfg.batch_size, transform=augment_transform(cfg, rank),
                                       shuffle_buffer=cfg.shuffle_buffer, seed=cfg.seed + rank, repeat=True,
                                       drop_remainder=True)

    batches = iter(strategy.distribute_datasets_from_function(train_input))
    weights = list(model.weights)
    moving = [v for v in weights if is_moving_statistic(v)]
    steps = spec.steps_per_epoch(size)
    exporter = ModelExporter(spec, twin)
    tracker = EpochTracker(spec, rank, size, steps, exporter)
    predict = tf.function(lambda images: twin(images, training=False), reduce_retracing=True)
    if rank == 0:
        log(f"{size} tf.distribute worker(s), {steps} steps of {cfg.batch_size} images per rank per epoch, "
            f"lr {scaled_learning_rate(cfg, size):g}, {model.count_params()} parameters")
    for epoch in range(cfg.epochs):
        started = time.perf_counter()
        # Each step's loss is already the mean over the global batch, the same number on every rank.
        loss = float(np.mean([float(train_step(batches)) for _ in range(steps)]))
        train_seconds = time.perf_counter() - started
        _assign_local(strategy, moving, collectives.mean(_local_values(strategy, moving)))
        current = _local_values(strategy, weights)
        twin.set_weights(current)
        targets, probs = [], []
        for images, target in parquet_data.tf_dataset(spec.validation_url, rank, size, spec.image_shape,
                                                      cfg.batch_size):
            probs.append(np.asarray(predict(images)).reshape(-1))
            targets.append(target.numpy())
        all_t = collectives.gather(np.concatenate(targets) if targets else np.zeros(0, np.float32))
        all_p = collectives.gather(np.concatenate(probs).astype(np.float32) if probs else np.zeros(0, np.float32))
        # current.copy: this epoch's weights (a new list of the same arrays), bound now, read by end_epoch.
        if tracker.end_epoch(epoch, loss, all_t, all_p, train_seconds, started, current.copy):
            break
    if tracker.best_weights is not None:
        _assign_local(strategy, weights, tracker.best_weights)
    final = _local_values(strategy, weights)
    if rank == 0:
        exporter.save(final, os.path.join(spec.output_dir, "model.keras"))
    # Leave together: rank 0 hosts the strategy's coordination service, and the others' heartbeats to it fail
    # once it has exited.
    collectives.mean([np.zeros(1)])
    return tracker.result(final)


def _free_port() -> int:
    """A TCP port free on this host now (the rank's TensorFlow server binds it moments later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def _watch_parent(parent: int) -> None:
    """Exit when the Spark task that started this rank is gone (killed with its stage).

    An orphan rank would otherwise wait in a collective for peers that no
    longer exist.
    """
    while True:
        if os.getppid() != parent:
            os._exit(3)
        time.sleep(2.0)


def _rank_main(spec_path: str, result_path: str) -> int:
    """Entry point of a rank's process: train, write the result (or the error) as JSON."""
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    try:
        with open(spec_path, "rb") as f:
            spec = pickle.load(f)
        result = train_on_rank(spec)
        code = 0
    except BaseException:  # reported to the driver with its traceback
        result = {"error": traceback.format_exc()}
        code = 1
    with open(result_path, "w") as f:
        json.dump(result, f)
    return code


def _barrier_task(spec_bytes: bytes, env: dict[str, str]) -> Any:
    def run(_: Any) -> Any:
        from pyspark import BarrierTaskContext

        ctx = BarrierTaskContext.get()
        rank = ctx.partitionId()
        hosts = [info.address.rsplit(":", 1)[0] for info in ctx.getTaskInfos()]
        ports = [int(p) for p in ctx.allGather(str(_free_port()))]
        workers = [f"{h}:{p}" for h, p in zip(hosts, ports)]
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": rank}}
        with tempfile.TemporaryDirectory(prefix=f"scilens-rank{rank}-") as tmp:
            spec_path, result_path = os.path.join(tmp, "spec.pickle"), os.path.join(tmp, "result.json")
            with open(spec_path, "wb") as f:
                f.write(spec_bytes)
            # What this Python worker imports (an installed scilens, --py-files, a PYTHONPATH), the rank imports.
            child_env = {**os.environ, **env, "TF_CONFIG": json.dumps(tf_config),
                         "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
            proc = subprocess.run([sys.executable, "-m", "scilens.vision.tf_distribute_train", spec_path,
                                   result_path], env=child_env, check=False)
            result = {}
            if os.path.exists(result_path):
                with open(result_path) as f:
                    result = json.load(f)
        if proc.returncode != 0 or "error" in result:
            detail = result.get("error", f"exit code {proc.returncode}, no result written")
            raise RuntimeError(f"tf-distribute rank {rank} of {len(hosts)} ({workers[rank]}) "
                               f"failed:\n{detail}")
        yield json.dumps(result)

    return run


def train_distributed(spark: Any, spec: TrainSpec) -> list[dict[str, Any]]:
    """Run :func:`train_on_rank` on ``spec.training.num_proc`` ranks in a Spark barrier stage.

    The results are ordered by rank.

    Raises
    ------
    ValueError
        Spark has fewer task slots than ranks (a barrier stage needs all its tasks running at once).
    """
    num_proc = spec.training.num_proc
    env = rank_environment(spark, spec.training, "tf.distribute")
    rdd = spark.sparkContext.parallelize(range(num_proc), num_proc)
    results = [json.loads(r) for r in rdd.barrier().mapPartitions(_barrier_task(pickle.dumps(spec), env)).collect()]
    return sorted(results, key=lambda r: r["rank"])


if __name__ == "__main__":
    sys.exit(_rank_main(sys.argv[1], sys.argv[2]))
