"""`scilens glaucoma-train`: Horovod on Spark from Petastorm datasets, two ranks in lock step, a model that works."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from scilens import cli
from scilens.core import tensor
from scilens.vision import petastorm_data
from tests.imaging.conftest import OCT_TRAINING


@pytest.mark.stack("horovod")
def test_two_ranks_finish_with_identical_weights_and_the_loss_falls(oct_training):
    ranks = json.loads((oct_training / "ranks.json").read_text())
    assert [r["rank"] for r in ranks["ranks"]] == [0, 1] and ranks["identical_weights"]
    digests = {r["weights_sha256"] for r in ranks["ranks"]}
    assert len(digests) == 1
    loss = [r["loss"] for r in ranks["ranks"]]
    assert loss[0] == loss[1]  # Horovod averages the epoch loss over the ranks
    # A model at chance has cross-entropy ln 2 = 0.693 (label smoothing does not change that); one that
    # separates the classes must end clearly below it, and below where it started.
    assert loss[0][-1] < loss[0][0] and loss[0][-1] < 0.6


@pytest.mark.stack("horovod")
def test_tiny_oct_model_finds_the_glaucoma_signal(spark, oct_training, retina_images):
    from sklearn.metrics import roc_auc_score

    from scilens.vision import inference

    history = pd.read_csv(oct_training / "history.csv")
    ranks = json.loads((oct_training / "ranks.json").read_text())
    assert len(history) == 6 and history["val_auc"].max() == pytest.approx(ranks["best_val_auc"], abs=1e-12)
    assert ranks["best_val_auc"] > 0.9
    # The saved model is the best epoch's: the same AUC recomputed here from its predictions on every
    # validation scan of the images table.
    validation = (spark.read.parquet(str(retina_images / "oct_scans.parquet"))
                  .where("split = 'validation' and label in ('glaucoma', 'healthy')").toPandas())
    assert history["val_images"].iloc[0] == len(validation)
    images = np.stack(tensor.decode_column(validation["image"]))[..., None]
    info = inference.describe_model(oct_training / "model.keras")
    prob = inference.predict_numpy(info, ["probabilities"], images)["probabilities"][:, 0]
    auc = roc_auc_score(validation["label"] == "glaucoma", prob)
    assert abs(auc - ranks["best_val_auc"]) < 1e-3
    assert (oct_training / "checkpoints" / "best.keras").exists()
    assert (oct_training / "learning_curves.png").stat().st_size > 10_000


@pytest.mark.stack("horovod")
def test_metrics_of_every_epoch_are_in_mlflow(oct_training):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{oct_training.parent / 'mlflow.db'}")
    run = client.get_run((oct_training / "mlflow_run.txt").read_text().strip())
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_auc")]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert run.data.params["model.preset"] == "tiny" and run.data.params["training.num_proc"] == "2"


@pytest.mark.stack("horovod")
def test_each_rank_reads_its_own_part_of_the_split(spark, oct_training, retina_images):
    validation = (spark.read.parquet(str(retina_images / "oct_scans.parquet"))
                  .where("split = 'validation'").toPandas())
    written = {(r.eid, r.eye, r.scan): tensor.decode(r.image) for r in validation.itertuples()}
    url = petastorm_data.dataset_url(oct_training / "petastorm" / "oct" / "validation")
    seen = set()
    for rank in range(2):
        shard = petastorm_data.read_shard(url, rank, 2)
        keys = set(zip(shard["eid"].tolist(), shard["eye"].tolist(), shard["scan"].tolist()))
        assert keys and not keys & seen
        seen |= keys
        for key, image in zip(zip(shard["eid"], shard["eye"], shard["scan"]), shard["image"]):
            assert np.array_equal(image[..., 0], written[key])
    assert seen == set(written)


def test_configuration_errors_fail_before_training(retina_images, tmp_path, capsys):
    out = tmp_path / "out"
    too_many = cli.main(["glaucoma-train", "--input", str(retina_images), "--output", str(out),
                         *(a for s in [*OCT_TRAINING, "oct.training.num_proc=3"] for a in ("--set", s))])
    assert too_many == 1 and not out.exists()
    assert cli.main(["glaucoma-train", "--input", str(tmp_path), "--output", str(out)]) == 1
    assert cli.main(["glaucoma-train", "--input", str(retina_images), "--output", str(out),
                     "--set", "modality=fundus"]) == 2
    assert "modality: 'fundus' is not allowed" in capsys.readouterr().err
