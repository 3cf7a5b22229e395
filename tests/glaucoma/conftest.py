"""Fixtures of the glaucoma tests, each job run once per session.

The clinical chain: a hand-built export (one participant per cohort rule) and a synthetic cohort run
through glaucoma-cohort, glaucoma-clinical and glaucoma-stats once.

The imaging chain on a small synthetic cohort, each job run once per session.

glaucoma-cohort (the clinical code, on its synthetic UK Biobank export) -> retinal images of the
cohort's eyes (plus a few bad files) -> glaucoma-images -> glaucoma-train (OCT, CFP) ->
glaucoma-infer -> glaucoma-final. The glaucoma signal in the OCT scans is made easy (strong
thinning) so a tiny model trained for a few epochs must find it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scilens import cli
from scilens.io import retina as retina_io
from scilens.synth import retina
from scilens.synth import ukb as synth

# Visit-level defaults of a participant who is measured and healthy; rows override them.
_VISIT = {"21003": "60", "21001": "27.5", "3062": ["3.1", "3.4", ""], "3064": ["400", "420", "410"],
          "102": ["70", "72"], "4079": ["80", "84"], "4080": ["120", "130"], "2443": "0", "3089": "1", "3159": "0",
          "5255": "15.5", "5263": "16.5", "5256": "10.1", "5264": "10.3", "5257": "10.0", "5265": "10.4",
          "5201": "0.0", "5208": "0.1", "6148": ["-7"], "6119": ""}

# eid -> (what the rules must conclude, participant fields, {visit: overrides})
PARTICIPANTS: dict[int, tuple[str, dict, dict[int, dict]]] = {
    1001: ("glaucoma right+left", {}, {0: {"6148": ["2"], "6119": "3"}, 1: {"6148": ["2"], "6119": "3"}}),
    1002: ("glaucoma left", {}, {0: {"6148": ["2"], "6119": "2"}}),
    1003: ("healthy right+left", {}, {0: {}, 1: {"21003": "64", "5255": "", "5263": ""}}),
    1004: ("poor_visual_acuity", {}, {0: {"5201": "0.3"}}),
    1005: ("hospital_diagnosis", {"41270": ["I10", "K573"]}, {0: {}}),
    1006: ("ptg right", {}, {0: {}, 1: {"6148": ["2"], "6119": "1", "3062": ["2.9", "", ""]}}),
    1007: ("other_condition", {}, {0: {"6148": ["2", "4"], "6119": "3"}}),
    1008: ("no_answer_code", {}, {0: {"6148": ["-1"]}}),
    1009: ("inconsistent", {}, {0: {"6148": ["2"], "6119": "3"}, 1: {"6148": ["-7"]}}),
    1010: ("which_eye_unknown", {}, {0: {"6148": ["2"], "6119": "-3"}}),
    1011: ("no_eye_measures", {"21000": "-3"}, {0: {"5255": "", "5263": "", "2443": "-3"}}),
    1012: ("no_eye_answer", {}, {0: {"6148": [""]}}),
}


def hand_built_export(participants: dict = PARTICIPANTS) -> pd.DataFrame:
    """The export of :data:`PARTICIPANTS`: text columns named ``<field>-<instance>.<array>``."""
    rows = []
    for eid, (_, person, visits) in participants.items():
        row = {"eid": str(eid), "31-0.0": "1" if eid % 2 else "0", "21000-0.0": person.get("21000", "1001")}
        for k, code in enumerate(person.get("41270", [])):
            row[f"41270-0.{k}"] = code
        for visit, overrides in visits.items():
            for fid, value in {**_VISIT, **overrides}.items():
                for k, v in enumerate(value if isinstance(value, list) else [value]):
                    row[f"{fid}-{visit}.{k}"] = v
        rows.append(row)
    frame = pd.DataFrame(rows).fillna("")
    for fid in ("41270-0.0", "41270-0.1"):
        if fid not in frame:
            frame[fid] = ""
    return frame


@pytest.fixture
def hand_export(tmp_path) -> Path:
    path = tmp_path / "ukb_hand.csv"
    hand_built_export().to_csv(path, index=False)
    return path


# A cohort small enough for the tests: glaucoma e^3.2 ~ 25x as common, PTG incidence x30, so
# 8,000 participants give ~370 glaucoma and ~370 healthy subjects and ~40 PTG subjects.
TEST_MODEL = dataclasses.replace(synth.GlaucomaModel(), alpha=synth.GlaucomaModel().alpha + 3.2,
                                 incidence=synth.GlaucomaModel().incidence * 30)
TEST_PARTICIPANTS = 8000
TEST_SEED = 11


@pytest.fixture(scope="session")
def synthetic_export(tmp_path_factory) -> Path:
    return synth.write_cohort(tmp_path_factory.mktemp("ukb"), TEST_PARTICIPANTS, TEST_SEED, TEST_MODEL)


@pytest.fixture(scope="session")
def glaucoma_run(spark, synthetic_export, tmp_path_factory) -> dict[str, Path]:
    """glaucoma-cohort, glaucoma-clinical and glaucoma-stats on the synthetic export, once per session."""
    root = tmp_path_factory.mktemp("glaucoma")
    out = {"export": synthetic_export, "cohort": root / "cohort", "clinical": root / "clinical",
           "stats": root / "stats", "root": root}
    assert cli.main(["glaucoma-cohort", "--input", str(synthetic_export), "--output", str(out["cohort"]),
                     "--set", "healthy_per_glaucoma=1.0", "--set", "splits.test_eyes_per_class=100"]) == 0
    # 600 rounds at the paper's learning rate (early stopping needs ~3000): the ranking of the models
    # is settled, at a fifth of the time; SHAP interactions (~16x SHAP's cost) for 40 eyes.
    assert cli.main(["glaucoma-clinical", "--input", str(out["cohort"]), "--output", str(out["clinical"]),
                     "--set", "xgb.n_estimators=600", "--set", "shap_splits=[validation,test]",
                     "--set", "interaction_eyes=40"]) == 0
    assert cli.main(["glaucoma-stats", "--input", str(out["cohort"]), "--output", str(out["stats"])]) == 0
    return out


# The imaging chain.

N_SCANS = 8
IMAGE_SIZE = 32
SYNTH = retina.RetinaSynthConfig(n_scans=N_SCANS, oct_height=64, oct_width=80, fundus_size=96,
                                 thinning_glaucoma=0.8, misaligned_fraction=0.0)
IMAGES_SETTINGS = [f"n_scans={N_SCANS}", "scan_height=64", "scan_width=80", f"oct.image_size={IMAGE_SIZE}",
                   f"cfp.image_size={IMAGE_SIZE}", "figure_eyes=2", "files_per_task=32"]
# The clinical tests' cohort model (glaucoma ~25x as common, PTG incidence x30) at 1,500 participants:
# ~120 glaucoma and ~140 healthy subjects, ~350 eyes, test 15 + 15 eyes, validation 40, a few PTG.
COHORT_MODEL = TEST_MODEL
COHORT_SETTINGS = ["healthy_per_glaucoma=1.0", "splits.test_eyes_per_class=15", "splits.validation_eyes=40"]


def _sets(settings: list[str]) -> list[str]:
    return [a for s in settings for a in ("--set", s)]


@pytest.fixture(scope="session")
def retina_cohort(spark, tmp_path_factory) -> dict:
    """A synthetic UK Biobank cohort through glaucoma-cohort, the images of its eyes, and planted bad files
    (file name -> what is wrong) in place of seven train eyes' images."""
    from scilens import cli

    root = tmp_path_factory.mktemp("retina_cohort")
    export = synth.write_cohort(root / "ukb", 1500, 11, COHORT_MODEL)
    assert cli.main(["glaucoma-cohort", "--input", str(export), "--output", str(root / "cohort"),
                     *_sets(COHORT_SETTINGS)]) == 0
    eyes = pd.read_parquet(root / "cohort" / "eyes.parquet")
    spare = eyes[eyes["split"] == "train"].sort_values(["eid", "eye"]).head(7).reset_index(drop=True)
    good = eyes.drop(eyes.index[eyes.set_index(["eid", "eye"]).index.isin(spare.set_index(["eid", "eye"]).index)])
    images = root / "images"
    truth = retina.write_cohort_images(good, images, SYNTH, seed=1)
    bad: dict[str, str] = {}

    def oct_path(k: int, eid: int | None = None) -> Path:
        row = spare.iloc[k]
        return images / "oct" / retina_io.image_name(eid or row.eid, row.eye, row.visit, "oct")

    rng = np.random.default_rng(9)
    corrupt = oct_path(0)
    corrupt.write_bytes(b"II*\x00" + rng.bytes(300))
    bad[corrupt.name] = "not a readable TIFF"
    import tifffile

    wrong = oct_path(1)
    volume = retina.oct_volume(spare.eye[1], 0.0, rng, N_SCANS, 64, 80)
    with tifffile.TiffWriter(wrong) as tif:
        for j, scan in enumerate(volume):
            tif.write(scan[:60] if j == 5 else scan, contiguous=False)
    bad[wrong.name] = "B-scan 5 is 60x80, expected 64x80"
    short = retina_io.write_oct(oct_path(2), volume[:N_SCANS - 2])
    bad[short.name] = f"has {N_SCANS - 2} B-scans, fewer than the {N_SCANS} configured"
    jumped = retina_io.write_oct(oct_path(3), retina.oct_volume(spare.eye[3], 0.0, rng, N_SCANS, 64, 80, "jump"))
    bad[jumped.name] = "cannot be aligned by translation: B-scans"
    blinked = retina_io.write_oct(oct_path(4), retina.oct_volume(spare.eye[4], 0.0, rng, N_SCANS, 64, 80, "blink"))
    bad[blinked.name] = "cannot be aligned by translation: B-scans"
    stranger = retina_io.write_oct(oct_path(5, eid=999_999), volume)
    bad[stranger.name] = f"eid 999999 {spare.eye[5]} eye is not in the cohort"
    misnamed = images / "fundus" / f"{spare.eid[6]}_21017_{spare.visit[6]}_0.png"
    retina_io.write_fundus(misnamed, np.zeros((8, 8, 3), np.uint8))
    bad[misnamed.name] = "field 21017 (OCT) needs a .tif file"
    return {"root": root, "cohort": root / "cohort", "eyes": eyes, "images": images, "truth": truth, "bad": bad}


@pytest.fixture(scope="session")
def retina_images(retina_cohort, spark, tmp_path_factory) -> Path:
    """Output of scilens glaucoma-images on the cohort's images."""
    from scilens import cli

    out = tmp_path_factory.mktemp("glaucoma_images") / "out"
    code = cli.main(["glaucoma-images", "--input", str(retina_cohort["images"]), "--output", str(out),
                     "--set", f"cohort={retina_cohort['cohort']}", *_sets(IMAGES_SETTINGS)])
    assert code == 0
    return out


OCT_TRAINING = ["modality=oct", "oct.model.preset=tiny", "oct.model.batchnorm_momentum=0.9",
                "oct.training.epochs=6", "oct.training.batch_size=16",
                "oct.training.steps_per_epoch=40", "oct.training.learning_rate=0.005",
                "oct.training.early_stopping_patience=6", "oct.training.shuffle_buffer=256",
                "petastorm.row_groups_per_rank=2"]
"""Tiny DenseNet, 2 ranks x 16 images per step, six epochs of 40 steps: enough for the easy set's signal.
The learning rate is 5x the paper's because the paper trained 60 epochs on ~300k scans; in so short a run
BatchNorm's moving statistics must follow the weights faster than Keras' momentum 0.99 lets them."""


@pytest.fixture(scope="session")
def oct_training_by_backend(retina_images, spark, tmp_path_factory):
    """``train(backend)``: output of scilens glaucoma-train (OCT, 2 ranks) with that backend on the images, with
    the same settings and seed for either; each backend trains once per session."""
    from scilens import cli

    runs: dict[str, Path] = {}

    def train(backend: str) -> Path:
        if backend not in runs:
            out = tmp_path_factory.mktemp(f"glaucoma_train_{backend}") / "oct"
            code = cli.main(["glaucoma-train", "--input", str(retina_images), "--output", str(out),
                             *_sets([*OCT_TRAINING, f"backend={backend}"])])
            assert code == 0
            runs[backend] = out
        return runs[backend]

    return train


@pytest.fixture(scope="session")
def oct_training(oct_training_by_backend) -> Path:
    """The OCT model trained with the stack's default backend (Horovod on the horovod stack, tf-distribute on
    current): what glaucoma-infer and glaucoma-final get."""
    from scilens.vision.train_common import default_backend

    return oct_training_by_backend(default_backend())


TRAINING_BACKENDS = [pytest.param("horovod", marks=pytest.mark.stack("horovod")), "tf-distribute"]
"""Every training backend; Horovod's tests are skipped on the current stack, which has no Horovod."""


CFP_TRAINING = ["modality=cfp", "cfp.model.base=MobileNetV2", "cfp.model.width_multiplier=0.35",
                "cfp.training.epochs=1", "cfp.training.batch_size=16", "cfp.training.steps_per_epoch=4",
                "petastorm.row_groups_per_rank=2", "mlflow.enabled=false"]
"""The fundus model as the paper trains it (transfer learning, 2/3 frozen, lr 1e-5) for a few steps: random
weights, so it carries little signal; it is there to give the final model its fundus probability."""


@pytest.fixture(scope="session")
def cfp_training(retina_images, spark, tmp_path_factory) -> Path:
    from scilens import cli

    out = tmp_path_factory.mktemp("glaucoma_train") / "cfp"
    assert cli.main(["glaucoma-train", "--input", str(retina_images), "--output", str(out), *_sets(CFP_TRAINING)]) == 0
    return out


INFER_SETTINGS = ["bootstrap.resamples=200", "ensemble.n_estimators=600", "saliency.eyes=2", "saliency.scan_stride=4",
                  "saliency.methods.ig_steps=32", "saliency.methods.smoothgrad_samples=8"]


@pytest.fixture(scope="session")
def glaucoma_inference(retina_images, oct_training, cfp_training, spark, tmp_path_factory) -> Path:
    """Output of scilens glaucoma-infer with both trained models."""
    from scilens import cli

    out = tmp_path_factory.mktemp("glaucoma_infer") / "out"
    assert cli.main(["glaucoma-infer", "--input", str(retina_images), "--output", str(out),
                     "--set", f"oct_model={oct_training}", "--set", f"cfp_model={cfp_training / 'model.keras'}",
                     *_sets(INFER_SETTINGS)]) == 0
    return out


@pytest.fixture(scope="session")
def glaucoma_final(retina_cohort, glaucoma_inference, spark, tmp_path_factory) -> Path:
    """Output of scilens glaucoma-final, its sections added to a clinical report."""
    from scilens import cli
    from scilens.glaucoma.report import Report

    root = tmp_path_factory.mktemp("glaucoma_final")
    # The clinical report as glaucoma-clinical leaves it, reduced to its section titles (running BM1-BM3
    # here would double the clinical tests' work); the final job must put its sections after "Baseline models".
    clinical = Report("Glaucoma screening: clinical models")
    for title in ("Cohort", "Baseline models", "SHAP"):
        clinical.add(title, text=f"{title} of glaucoma-clinical")
    clinical.save(root / "clinical")
    out = root / "out"
    assert cli.main(["glaucoma-final", "--input", str(glaucoma_inference), "--output", str(out),
                     "--set", f"cohort={retina_cohort['cohort']}", "--set", f"clinical={root / 'clinical'}",
                     "--set", "xgb.n_estimators=600", "--set", "bootstrap.resamples=200"]) == 0
    return out
