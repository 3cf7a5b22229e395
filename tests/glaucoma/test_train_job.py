"""`scilens glaucoma-train` with either backend: Horovod ranks reading Petastorm datasets (horovod stack) or
MultiWorkerMirroredStrategy in Spark barrier tasks reading plain Parquet (both stacks). Each keeps the same
guarantees: ranks in lock step, one validation AUC for all, a model that works, every epoch in MLflow."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from scilens import cli
from scilens.core import tensor
from scilens.vision import parquet_data, petastorm_data
from tests.glaucoma.conftest import IMAGE_SIZE, OCT_TRAINING, TRAINING_BACKENDS


@pytest.fixture(params=TRAINING_BACKENDS)
def trained(request, oct_training_by_backend) -> tuple[str, object]:
    """(backend, output of glaucoma-train with it)."""
    return request.param, oct_training_by_backend(request.param)


def test_two_ranks_finish_with_identical_weights_and_the_loss_falls(trained):
    backend, out = trained
    ranks = json.loads((out / "ranks.json").read_text())
    assert ranks["backend"] == backend
    assert [r["rank"] for r in ranks["ranks"]] == [0, 1] and ranks["identical_weights"]
    assert len({r["weights_sha256"] for r in ranks["ranks"]}) == 1
    loss = [r["loss"] for r in ranks["ranks"]]
    assert loss[0] == loss[1]  # the epoch loss is averaged over the ranks
    # A model at chance has cross-entropy ln 2 = 0.693 (label smoothing does not change that); one that
    # separates the classes must end clearly below it, and below where it started.
    assert loss[0][-1] < loss[0][0] and loss[0][-1] < 0.6


def test_tiny_oct_model_finds_the_glaucoma_signal(spark, trained, retina_images):
    from sklearn.metrics import roc_auc_score

    from scilens.vision import inference

    backend, out = trained
    history = pd.read_csv(out / "history.csv")
    ranks = json.loads((out / "ranks.json").read_text())
    assert len(history) == 6 and history["val_auc"].max() == pytest.approx(ranks["best_val_auc"], abs=1e-12)
    assert ranks["best_val_auc"] > 0.9
    # One AUC over the whole validation set (every rank's shard gathered), and the saved model is the best
    # epoch's: the same AUC recomputed here from its predictions on every validation scan.
    validation = (spark.read.parquet(str(retina_images / "oct_scans.parquet"))
                  .where("split = 'validation' and label in ('glaucoma', 'healthy')").toPandas())
    assert (history["val_images"] == len(validation)).all()
    images = np.stack(tensor.decode_column(validation["image"]))[..., None]
    info = inference.describe_model(out / "model.keras")
    prob = inference.predict_numpy(info, ["probabilities"], images)["probabilities"][:, 0]
    auc = roc_auc_score(validation["label"] == "glaucoma", prob)
    assert abs(auc - ranks["best_val_auc"]) < 1e-3
    assert (out / "checkpoints" / "best.keras").exists() and (out / "checkpoints" / "last.keras").exists()
    assert (out / "learning_curves.png").stat().st_size > 10_000
    # Each backend's own dataset format and no other.
    assert (out / "petastorm").exists() == (backend == "horovod") and (out / "parquet").exists() == (
        backend == "tf-distribute")


def test_metrics_of_every_epoch_are_in_mlflow(trained):
    from mlflow.tracking import MlflowClient

    backend, out = trained
    client = MlflowClient(tracking_uri=f"sqlite:///{out.parent / 'mlflow.db'}")
    run = client.get_run((out / "mlflow_run.txt").read_text().strip())
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_auc")]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert run.data.params["backend"] == backend and run.data.params["model.preset"] == "tiny"
    assert run.data.params["training.num_proc"] == "2"


def _read_shard(backend: str, out, rank: int) -> dict:
    if backend == "horovod":
        return petastorm_data.read_shard(petastorm_data.dataset_url(out / "petastorm" / "oct" / "validation"), rank, 2)
    return parquet_data.read_shard(parquet_data.dataset_url(out / "parquet" / "oct" / "validation"), rank, 2,
                                   (IMAGE_SIZE, IMAGE_SIZE, 1))


def test_each_rank_reads_its_own_part_of_the_split(spark, trained, retina_images):
    backend, out = trained
    validation = (spark.read.parquet(str(retina_images / "oct_scans.parquet"))
                  .where("split = 'validation'").toPandas())
    written = {(r.eid, r.eye, r.scan): tensor.decode(r.image) for r in validation.itertuples()}
    seen: set = set()
    for rank in range(2):
        shard = _read_shard(backend, out, rank)
        keys = set(zip(shard["eid"].tolist(), shard["eye"].tolist(), shard["scan"].tolist()))
        assert keys and not keys & seen
        seen |= keys
        for key, image in zip(zip(shard["eid"], shard["eye"], shard["scan"]), shard["image"]):
            assert np.array_equal(image[..., 0], written[key])
    assert seen == set(written)


@pytest.mark.stack("horovod")
def test_horovod_and_tf_distribute_reach_the_same_validation_auc(oct_training_by_backend):
    """Same images, settings and seed; different collectives, readers and shuffles, so not the same numbers,
    but the same model quality."""
    horovod = json.loads((oct_training_by_backend("horovod") / "ranks.json").read_text())
    tf_distribute = json.loads((oct_training_by_backend("tf-distribute") / "ranks.json").read_text())
    assert horovod["backend"] == "horovod" and tf_distribute["backend"] == "tf-distribute"
    assert abs(horovod["best_val_auc"] - tf_distribute["best_val_auc"]) < 0.05


def test_configuration_errors_fail_before_training(retina_images, tmp_path, capsys):
    out = tmp_path / "out"
    too_many = cli.main(["glaucoma-train", "--input", str(retina_images), "--output", str(out),
                         *(a for s in [*OCT_TRAINING, "oct.training.num_proc=3"] for a in ("--set", s))])
    assert too_many == 1 and not out.exists()
    assert cli.main(["glaucoma-train", "--input", str(tmp_path), "--output", str(out)]) == 1
    assert cli.main(["glaucoma-train", "--input", str(retina_images), "--output", str(out),
                     "--set", "modality=fundus"]) == 2
    assert "modality: 'fundus' is not allowed" in capsys.readouterr().err
    assert cli.main(["glaucoma-train", "--input", str(retina_images), "--output", str(out),
                     "--set", "backend=pytorch"]) == 2
    assert "backend: 'pytorch' is not allowed" in capsys.readouterr().err


def test_a_wrong_dataset_or_too_many_tf_distribute_ranks_fail_with_a_clear_error(spark, oct_training_by_backend,
                                                                                  tmp_path):
    from scilens.vision.densenet import DenseNetConfig
    from scilens.vision.tf_distribute_train import train_distributed
    from scilens.vision.train_common import DistributedTrainingConfig, TrainSpec

    url = parquet_data.dataset_url(oct_training_by_backend("tf-distribute") / "parquet" / "oct" / "validation")
    with pytest.raises(ValueError, match=r"image 0 has 1024 values, expected 900 for shape \(30, 30, 1\)"):
        parquet_data.read_shard(url, 0, 2, (30, 30, 1))
    with pytest.raises(ValueError, match="row groups cannot give each of 99 ranks a shard"):
        parquet_data.shard_row_groups(url, 0, 99)
    spec = TrainSpec("densenet", DenseNetConfig(preset="tiny"), DistributedTrainingConfig(num_proc=3),
                     (IMAGE_SIZE, IMAGE_SIZE, 1), url, url, 100, str(tmp_path))
    with pytest.raises(ValueError, match=r"num_proc=3 tf\.distribute ranks need as many Spark task slots, this "
                                          "session has 2"):
        train_distributed(spark, spec)  # a barrier stage would wait for a third slot for minutes


def test_the_default_backend_is_the_one_the_installed_stack_supports():
    from scilens.jobs.glaucoma_train import GlaucomaTrainConfig
    from scilens.vision.train_common import default_backend

    try:
        import horovod.tensorflow  # noqa: F401
        import petastorm  # noqa: F401

        expected = "horovod"
    except ImportError:
        expected = "tf-distribute"
    assert default_backend() == expected and GlaucomaTrainConfig().backend == expected
