"""``scilens glaucoma-train``: train the OCT or the fundus CNN on Spark, with Horovod or tf.distribute.

Input: the output directory of ``scilens glaucoma-images``. ``modality``
picks the model: ``oct`` (DenseNet on single B-scans, the ``oct`` section) or
``cfp`` (transfer learning on fundus photos, the ``cfp`` section). The
training and validation eyes (glaucoma = 1, healthy = 0; PTG eyes are kept
for evaluation) are materialised from Spark as datasets, then
``training.num_proc`` ranks train on their shards. ``backend`` picks how:

* ``horovod`` -- Horovod ranks through ``horovod.spark.run`` reading Petastorm
  datasets (:mod:`scilens.vision.horovod_train`; the horovod stack);
* ``tf-distribute`` -- ``tf.distribute.MultiWorkerMirroredStrategy`` workers in
  Spark barrier tasks reading plain Parquet with pyarrow
  (:mod:`scilens.vision.tf_distribute_train`; any stack).

The default is whichever the installed stack supports. Both keep the same
guarantees (identical weights on every rank, BatchNorm moving statistics
averaged over the ranks, one validation AUC over the whole set, rank-0
checkpoints, the best epoch's weights kept).

Outputs:

* ``model.keras`` -- the model at its best validation AUC (takes raw pixel values);
* ``checkpoints/`` -- ``best.keras`` and ``last.keras``, written by rank 0 every epoch;
* ``history.csv`` and ``learning_curves.png`` -- per-epoch loss, validation loss and AUC, images/s;
* ``ranks.json`` -- the backend and every rank's final weight digest (identical when the ranks stayed in sync);
* ``mlflow_run.txt`` -- the MLflow run (parameters, per-epoch metrics, the model), by default in
  ``<output parent>/mlflow.db`` (:mod:`scilens.glaucoma.tracking`);
* ``petastorm/`` (backend horovod) or ``parquet/`` (tf-distribute) -- the datasets (unless
  ``petastorm.dataset_dir`` puts them elsewhere for reuse).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from scilens.core.config import Config, field
from scilens.core.inputs import InputError
from scilens.core.job import Job, JobConfig, JobContext, JobFailed
from scilens.glaucoma.tracking import MlflowConfig
from scilens.vision.densenet import DenseNetConfig
from scilens.vision.train_common import BACKENDS, DistributedTrainingConfig, default_backend
from scilens.vision.transfer import TransferConfig

TABLES = {"oct": "oct_scans.parquet", "cfp": "fundus.parquet"}


@dataclass
class OctSection(Config):
    """The OCT model and its training (defaults: the paper's)."""

    model: DenseNetConfig = field(DenseNetConfig(), "DenseNet architecture.")
    training: DistributedTrainingConfig = field(DistributedTrainingConfig(), "Training protocol.")


@dataclass
class CfpSection(Config):
    """The fundus model and its training (defaults: the paper's)."""

    model: TransferConfig = field(TransferConfig(), "Transfer-learning model.")
    training: DistributedTrainingConfig = field(
        DistributedTrainingConfig(epochs=20, batch_size=400, learning_rate=1e-5, adam_epsilon=1e-7,
                                  label_smoothing=0.0),
        "Training protocol (paper: Adam lr 1e-5, 20 epochs, batch 400).")


@dataclass
class PetastormSection(Config):
    """Where and how the training datasets are materialised (Petastorm for backend horovod, plain Parquet for
    tf-distribute)."""

    dataset_dir: str | None = field(None, "Directory for the datasets (<dir>/<modality>/<split> for horovod, "
                                    "<dir>/parquet/<modality>/<split> for tf-distribute), on a filesystem all "
                                    "executors share; reused when written from the same input. null: inside "
                                    "the output.")
    overwrite: bool = field(False, "Replace datasets in dataset_dir written from another input (a dataset of "
                            "another schema is never replaced).")
    row_groups_per_rank: int = field(4, "Parquet files per rank at least (both backends shard by row group; "
                                     "more groups shuffle more finely).", min=1)
    row_group_size_mb: int = field(32, "Parquet row-group size, MB.", min=1)


@dataclass
class GlaucomaTrainConfig(JobConfig):
    """Config of ``scilens glaucoma-train``."""

    modality: str = field("oct", "Which model: oct (B-scans) or cfp (fundus photos).", choices=("oct", "cfp"))
    backend: str = field(default_backend(), "Distributed training: horovod (Horovod ranks, Petastorm datasets) or "
                         "tf-distribute (tf.distribute.MultiWorkerMirroredStrategy in Spark barrier tasks, Parquet "
                         "read with pyarrow). Default: horovod where Horovod and Petastorm are installed, else "
                         "tf-distribute.", choices=BACKENDS)
    oct: OctSection = field(OctSection(), "OCT model and training.")
    cfp: CfpSection = field(CfpSection(), "Fundus model and training.")
    petastorm: PetastormSection = field(PetastormSection(), "Petastorm datasets.")
    mlflow: MlflowConfig = field(MlflowConfig(), "Experiment tracking: parameters, per-epoch metrics, the model.")


def training_table(ctx: JobContext, modality: str) -> DataFrame:
    """Training and validation rows of the images table: ``target`` 1 for glaucoma, 0 for healthy."""
    if len(ctx.inputs) != 1 or not Path(ctx.inputs[0]).is_dir():
        raise InputError(f"input {', '.join(ctx.inputs)}: give the output directory of scilens glaucoma-images")
    path = Path(ctx.inputs[0]) / TABLES[modality]
    if not path.exists():
        raise InputError(f"input {ctx.inputs[0]}: no {TABLES[modality]}; did glaucoma-images process {modality}?")
    rows = ctx.spark.read.parquet(str(path))
    if "scan" not in rows.columns:
        rows = rows.withColumn("scan", F.lit(0))
    return (rows.where(F.col("label").isin("glaucoma", "healthy") & F.col("split").isin("train", "validation"))
            .withColumn("target", (F.col("label") == "glaucoma").cast("int")))


def _image_shape(rows: DataFrame, source: str) -> tuple[int, ...]:
    shapes = [tuple(r.shape) for r in rows.select(F.col("image.shape").alias("shape")).distinct().collect()]
    if len(shapes) != 1:
        raise JobFailed(f"{source}: images of {len(shapes)} shapes {shapes[:4]}; rerun glaucoma-images with one size")
    shape = shapes[0]
    return (*shape, 1) if len(shape) == 2 else shape


class GlaucomaTrainJob(Job[GlaucomaTrainConfig]):
    name = "glaucoma-train"
    summary = "Train the OCT (DenseNet) or fundus (transfer) CNN on Spark with Horovod or tf.distribute."
    config_class = GlaucomaTrainConfig

    def run(self, ctx: JobContext[GlaucomaTrainConfig]) -> int:
        from scilens.glaucoma import figures as retina_figures
        from scilens.vision.train_common import TrainSpec

        config = ctx.config
        section = config.oct if config.modality == "oct" else config.cfp
        training = section.training
        horovod = config.backend == "horovod"
        if horovod:
            from scilens.vision import petastorm_data as datasets
            from scilens.vision.horovod_train import train_distributed
        else:
            from scilens.vision import parquet_data as datasets
            from scilens.vision.tf_distribute_train import train_distributed
        slots = ctx.spark.sparkContext.defaultParallelism
        if training.num_proc > slots:  # horovod.spark.run or a barrier stage would wait for free slots forever
            raise JobFailed(f"training.num_proc={training.num_proc} {config.backend} ranks need as many Spark task "
                            f"slots; this Spark has {slots}")
        with ctx.step("select eyes") as step:
            rows = training_table(ctx, config.modality).persist()
            counts = {(r.split, r.target): r["count"] for r in rows.groupBy("split", "target").count().collect()}
            for split in ("train", "validation"):
                for target, name in ((1, "glaucoma"), (0, "healthy")):
                    n = counts.get((split, target), 0)
                    step.counts[f"{split}_{name}"] = n
                    if n == 0:
                        raise JobFailed(f"no {name} images in the {split} split of {ctx.inputs[0]}; "
                                        f"both classes are needed to train and validate")
            source_table = str(Path(ctx.inputs[0]).absolute() / TABLES[config.modality])
            image_shape = _image_shape(rows, source_table)
        with ctx.step("petastorm datasets" if horovod else "parquet datasets") as step:
            if horovod:
                base = Path(config.petastorm.dataset_dir) if config.petastorm.dataset_dir else ctx.output / "petastorm"
            else:
                base = Path(config.petastorm.dataset_dir or ctx.output) / "parquet"
            infos = {}
            for split in ("train", "validation"):
                subset = rows.where(F.col("split") == split)
                n = counts[(split, 0)] + counts[(split, 1)]
                infos[split] = datasets.materialize_images(
                    ctx.spark, subset, base / config.modality / split, image_shape,
                    source=f"{source_table} split={split} rows={n}",
                    min_row_groups=training.num_proc * config.petastorm.row_groups_per_rank,
                    row_group_size_mb=config.petastorm.row_group_size_mb, overwrite=config.petastorm.overwrite)
                step.counts[f"{split}_rows"] = infos[split].rows
                step.counts[f"{split}_row_groups"] = infos[split].row_groups
                step.counts[f"{split}_reused"] = int(infos[split].reused)
        rows.unpersist()
        spec = TrainSpec(
            architecture="densenet" if config.modality == "oct" else "transfer",
            model_config=section.model, training=training, image_shape=image_shape,
            train_url=infos["train"].url, validation_url=infos["validation"].url, train_rows=infos["train"].rows,
            output_dir=str(ctx.output))
        with ctx.step(f"{config.backend} training") as step:
            try:
                results = train_distributed(ctx.spark, spec)
            except ValueError as exc:
                raise JobFailed(str(exc)) from None
            history = results[0]["history"]
            step.counts.update({"ranks": len(results), "epochs": len(history), "best_epoch": results[0]["best_epoch"]})
        with ctx.step("history") as step:
            import pandas as pd

            pd.DataFrame(history).to_csv(ctx.output / "history.csv", index=False)
            digests = {r["rank"]: r["weights_sha256"] for r in results}
            (ctx.output / "ranks.json").write_text(json.dumps(
                {"backend": config.backend, "ranks": [{"rank": r["rank"], "weights_sha256": r["weights_sha256"],
                            "loss": [h["loss"] for h in r["history"]]} for r in results],
                 "identical_weights": len(set(digests.values())) == 1,
                 "best_epoch": results[0]["best_epoch"], "best_val_auc": results[0]["best_val_auc"]}, indent=1))
            if len(set(digests.values())) != 1:
                raise JobFailed(f"the ranks finished with different weights ({digests}); {config.backend} lost sync")
            retina_figures.learning_curves(history, ctx.output / "learning_curves.png",
                                           f"{config.modality.upper()} model, {len(results)} {config.backend} rank(s)")
            step.counts["best_val_auc_x1000"] = round(1000 * results[0]["best_val_auc"])
        if config.mlflow.enabled:
            with ctx.step("mlflow") as step:
                params = {"modality": config.modality, "backend": config.backend, "image_shape": image_shape,
                          "input": ctx.inputs[0],
                          **_flat("model", section.model.to_dict()), **_flat("training", training.to_dict())}
                run_id = log_epochs(ctx, config.mlflow, f"{ctx.job}-{config.modality}", params, history,
                                    [ctx.output / "model.keras", ctx.output / "learning_curves.png"])
                (ctx.output / "mlflow_run.txt").write_text(run_id + "\n")
                step.counts["epochs_logged"] = len(history)
        return infos["train"].rows


def log_epochs(ctx: JobContext, config: MlflowConfig, run_name: str, params: dict, history: list[dict],
               artifacts: list[Path]) -> str:
    """One MLflow run (scilens.glaucoma.tracking): parameters, the best epoch's metrics, artifacts, and every
    epoch's metrics as the history of each metric."""
    import time

    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from scilens.glaucoma.tracking import log_run, tracking_uri

    best = max(history, key=lambda h: h["val_auc"] if h["val_auc"] == h["val_auc"] else -1.0)
    summary = {f"best_{k}": v for k, v in best.items()}
    run_id = log_run(config, ctx.output.parent, run_name, params, summary, artifacts,
                     {"scilens.job": ctx.job, "scilens.output": ctx.manifest.output})
    now = int(time.time() * 1000)
    metrics = [Metric(key, float(value), now, int(h["epoch"])) for h in history for key, value in h.items()
               if key != "epoch" and value == value]
    MlflowClient(tracking_uri(config, ctx.output.parent)).log_batch(run_id, metrics=metrics)
    return run_id


def _flat(prefix: str, values: dict) -> dict:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flat(f"{prefix}.{key}", value))
        else:
            out[f"{prefix}.{key}"] = value
    return out


JOB = GlaucomaTrainJob
