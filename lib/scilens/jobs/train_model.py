"""``scilens train-model``: train a small image classifier (LeNet-5, galaxy CNN) on a Parquet image table.

Input: an image table (``id``, ``label``, image; :mod:`scilens.diagnosis.datasets`).
Spark reads and checks it (bad rows quarantined), the driver collects the
images and trains in one process (:mod:`scilens.vision.training`: these
models train in minutes on a CPU; the glaucoma models use Horovod).

Outputs:

* ``model.keras`` -- the trained model; it takes images as stored (its first
  layer rescales pixel values);
* ``checkpoints/epoch=<e>.keras`` -- with ``training.checkpoints``, the model after every epoch (query Q6);
* ``history.json``, ``training.png`` -- loss and accuracy per epoch; test accuracy with ``test``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from scilens.core.config import field
from scilens.core.job import Job, JobConfig, JobContext
from scilens.diagnosis.image_table import ImageTableConfig, collect_images, open_image_table
from scilens.vision.training import TrainingConfig


@dataclass
class TrainModelConfig(JobConfig):
    """Config of ``scilens train-model``."""

    data: ImageTableConfig = field(ImageTableConfig(), "Columns of the input image table.")
    training: TrainingConfig = field(TrainingConfig(), "Architecture and training protocol.")
    n_classes: int | None = field(None, "Number of classes; null: the largest label + 1.", min=2)
    test: str | None = field(None, "Image table to report the trained model's accuracy on (optional).")


def _plot_history(history: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    epochs = range(1, len(history["loss"]) + 1)
    for ax, key in zip(axes, ("loss", "accuracy")):
        ax.plot(epochs, history[key], "o-", label="train")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], "s--", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


class TrainModelJob(Job[TrainModelConfig]):
    name = "train-model"
    summary = "Train LeNet-5 or the galaxy CNN on a Parquet image table; save it in Keras format."
    config_class = TrainModelConfig

    def run(self, ctx: JobContext[TrainModelConfig]) -> int:
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
        report = {"history": fit.history, "best_epoch": fit.best_epoch, "n_train": len(ids), "n_classes": n_classes,
                  "parameters": int(fit.model.count_params())}
        if cfg.test:
            with ctx.step("evaluate on test") as step:
                test = open_image_table(ctx.spark, [cfg.test], cfg.data, n_classes=n_classes, step="read test")
                ctx.reject(test.rejected)
                _, test_labels, test_images = collect_images(test)
                report["test_accuracy"] = fit.accuracy(test_images, test_labels)
                step.counts["images"] = len(test_labels)
        (ctx.output / "history.json").write_text(json.dumps(report, indent=2) + "\n")
        _plot_history(fit.history, ctx.output / "training.png")
        return len(ids)


JOB = TrainModelJob
