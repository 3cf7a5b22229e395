"""``scilens train-model``: train a small image classifier (LeNet-5, galaxy CNN) on a Parquet image table.

Input: an image table (``id``, ``label``, image; :mod:`scilens.diagnosis.datasets`).
Spark reads and checks it (bad rows quarantined), the driver collects the
images and trains in one process (:mod:`scilens.vision.training`: these
models train in minutes on a CPU; the glaucoma models use Horovod).

The config is :class:`scilens.diagnosis.config.TrainModelConfig`.

Outputs:

* ``model.keras`` -- the trained model; it takes images as stored (its first
  layer rescales pixel values);
* ``checkpoints/epoch=<e>.keras`` -- with ``training.checkpoints``, the model after every epoch (query Q6);
* ``history.json``, ``training.png`` -- loss and accuracy per epoch; test accuracy with ``test``.
"""

from __future__ import annotations

import json
from typing import Any

from scilens.core.job import Job, JobContext
from scilens.diagnosis.config import TrainModelConfig
from scilens.diagnosis.image_table import collect_images, open_image_table
from scilens.diagnosis.report import plot_history

__all__ = ["JOB", "TrainModelConfig", "TrainModelJob"]


class TrainModelJob(Job[TrainModelConfig]):
    """Train LeNet-5 or the galaxy CNN on a Parquet image table; save it in Keras format."""

    name = "train-model"
    summary = "Train LeNet-5 or the galaxy CNN on a Parquet image table; save it in Keras format."
    config_class = TrainModelConfig

    def run(self, ctx: JobContext[TrainModelConfig]) -> int:
        """Read and check the images, train, save the model and its history, evaluate on ``test``.

        Parameters
        ----------
        ctx : JobContext

        Returns
        -------
        int
            Training images.
        """
        from scilens.vision.training import ClassifierModel

        cfg = ctx.config
        with ctx.step("read training images") as step:
            table = open_image_table(ctx.spark, ctx.inputs, cfg.data, n_classes=cfg.n_classes, step="read")
            ctx.reject(table.rejected)
            ids, labels, images = collect_images(table)
            n_classes = cfg.n_classes or max(table.class_counts) + 1
            step.counts.update(images=len(ids), classes=n_classes)
        if not len(ids):
            return 0
        with ctx.step(f"train {cfg.training.architecture}") as step:
            fit = ClassifierModel(cfg.training, n_classes).fit(images, labels, ctx.output / "checkpoints")
            fit.save(ctx.output / "model.keras")
            step.counts.update(epochs=len(fit.history["loss"]), checkpoints=len(fit.checkpoints))
        report: dict[str, Any] = {"history": fit.history, "best_epoch": fit.best_epoch, "n_train": len(ids),
                                  "n_classes": n_classes, "parameters": int(fit.model.count_params())}
        if cfg.test:
            with ctx.step("evaluate on test") as step:
                test = open_image_table(ctx.spark, [cfg.test], cfg.data, n_classes=n_classes, step="read test")
                ctx.reject(test.rejected)
                _, test_labels, test_images = collect_images(test)
                report["test_accuracy"] = fit.accuracy(test_images, test_labels)
                step.counts["images"] = len(test_labels)
        (ctx.output / "history.json").write_text(json.dumps(report, indent=2) + "\n")
        plot_history(fit.history, ctx.output / "training.png")
        return len(ids)


JOB = TrainModelJob
