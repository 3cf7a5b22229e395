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
from pathlib import Path

from scilens.core.job import Job, JobContext, JobFailed
from scilens.glaucoma.config import CfpSection, GlaucomaTrainConfig, OctSection, PetastormSection

__all__ = ["JOB", "CfpSection", "GlaucomaTrainConfig", "GlaucomaTrainJob", "OctSection", "PetastormSection"]


class GlaucomaTrainJob(Job[GlaucomaTrainConfig]):
    """Train one of the study's CNNs data-parallel on Spark (see the module doc)."""

    name = "glaucoma-train"
    summary = "Train the OCT (DenseNet) or fundus (transfer) CNN on Spark with Horovod or tf.distribute."
    config_class = GlaucomaTrainConfig

    def run(self, ctx: JobContext[GlaucomaTrainConfig]) -> int:
        """Select the eyes, write the datasets, train, record; the number of training images."""
        import pandas as pd

        from scilens.glaucoma import figures, stages, tracking, training
        from scilens.vision.train_common import TrainSpec

        config = ctx.config
        section = config.oct if config.modality == "oct" else config.cfp
        slots = ctx.spark.sparkContext.defaultParallelism
        if section.training.num_proc > slots:  # horovod.spark.run or a barrier stage would wait for slots forever
            raise JobFailed(f"training.num_proc={section.training.num_proc} {config.backend} ranks need as many "
                            f"Spark task slots; this Spark has {slots}")
        with ctx.step("select eyes") as step:
            rows = stages.training_table(ctx.spark, ctx.inputs, config.modality).persist()
            counts = {(r.split, r.target): r["count"] for r in rows.groupBy("split", "target").count().collect()}
            for split in ("train", "validation"):
                for target, name in ((1, "glaucoma"), (0, "healthy")):
                    n = step.counts[f"{split}_{name}"] = counts.get((split, target), 0)
                    if n == 0:
                        raise JobFailed(f"no {name} images in the {split} split of {ctx.inputs[0]}; "
                                        f"both classes are needed to train and validate")
            source_table = str(Path(ctx.inputs[0]).absolute() / stages.TABLES[config.modality])
            image_shape = stages.image_shape(rows, source_table)
        with ctx.step("petastorm datasets" if config.backend == "horovod" else "parquet datasets") as step:
            infos = stages.training_datasets(ctx.spark, rows, counts, config, ctx.output, image_shape, source_table)
            for split, info in infos.items():
                step.counts.update({f"{split}_rows": info.rows, f"{split}_row_groups": info.row_groups,
                                    f"{split}_reused": int(info.reused)})
        rows.unpersist()
        spec = TrainSpec(
            architecture="densenet" if config.modality == "oct" else "transfer",
            model_config=section.model, training=section.training, image_shape=image_shape,
            train_url=infos["train"].url, validation_url=infos["validation"].url, train_rows=infos["train"].rows,
            output_dir=str(ctx.output))
        with ctx.step(f"{config.backend} training") as step:
            results = stages.train(ctx.spark, spec, config.backend)
            history = results[0]["history"]
            step.counts.update({"ranks": len(results), "epochs": len(history), "best_epoch": results[0]["best_epoch"]})
        with ctx.step("history") as step:
            pd.DataFrame(history).to_csv(ctx.output / "history.csv", index=False)
            summary = training.ranks_summary(results, config.backend)
            (ctx.output / "ranks.json").write_text(json.dumps(summary, indent=1))
            if not summary["identical_weights"]:
                digests = {r["rank"]: r["weights_sha256"] for r in results}
                raise JobFailed(f"the ranks finished with different weights ({digests}); {config.backend} lost sync")
            figures.learning_curves(history, ctx.output / "learning_curves.png",
                                    f"{config.modality.upper()} model, {len(results)} {config.backend} rank(s)")
            step.counts["best_val_auc_x1000"] = round(1000 * results[0]["best_val_auc"])
        if config.mlflow.enabled:
            with ctx.step("mlflow") as step:
                params = {"modality": config.modality, "backend": config.backend, "image_shape": image_shape,
                          "input": ctx.inputs[0], **tracking.flat_params("model", section.model.to_dict()),
                          **tracking.flat_params("training", section.training.to_dict())}
                run_id = tracking.log_epochs(config.mlflow, ctx.output, f"{ctx.job}-{config.modality}", params,
                                             history, [ctx.output / "model.keras", ctx.output / "learning_curves.png"],
                                             {"scilens.job": ctx.job, "scilens.output": ctx.manifest.output})
                (ctx.output / "mlflow_run.txt").write_text(run_id + "\n")
                step.counts["epochs_logged"] = len(history)
        return infos["train"].rows


JOB = GlaucomaTrainJob
