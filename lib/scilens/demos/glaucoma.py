"""Demos of the glaucoma jobs.

Cohort, clinical models and statistics, then the imaging chain (images -> OCT and fundus
models -> inference -> final model).

Each imaging job's demo runs its link of the chain on the outputs of the link
before, found beside it under ``make demo``'s output directory, and runs that link first
when it is missing (``python -m scilens.demos --only glaucoma-final`` runs the whole chain).
The cohort and BM1-BM3 come from the ``glaucoma-clinical`` demo. Sizes are small so every
link takes well under two minutes: a few hundred eyes, 16 B-scans of 64 x 80 pixels per
eye, 96-pixel photos, tiny models for one epoch.
"""

from __future__ import annotations

from pathlib import Path

from scilens.demos.index import Shown
from scilens.demos.run import run_job

N_SCANS = 16
SIZE = 32
TRAIN_EYES = 240
VALIDATION_EYES = 80

TINY_OCT = ["oct.model.preset=tiny", "oct.model.batchnorm_momentum=0.9", "oct.training.epochs=1",
            "oct.training.batch_size=16", "oct.training.learning_rate=0.005", "oct.training.early_stopping_patience=1"]
"""The tiny DenseNet for one epoch: 5x the paper's learning rate so one epoch makes progress, and BatchNorm
statistics that follow the weights that fast."""
TINY_CFP = ["modality=cfp", "cfp.model.base=MobileNetV2", "cfp.model.width_multiplier=0.35", "cfp.training.epochs=1",
            "cfp.training.batch_size=16", "cfp.training.early_stopping_patience=1"]
"""MobileNetV2 (alpha 0.35, random init, 2/3 frozen) for one epoch at the paper's learning rate (1e-5)."""


LOCAL = "spark.master=local[2]"


def clinical(root: Path) -> tuple[Path, Path]:
    """(cohort, clinical) outputs of the glaucoma-clinical demo beside ``root``."""
    base = root.parent / "glaucoma-clinical"
    if not (base / "clinical" / "report.json").exists():
        clinical_demo(base)
    return base / "cohort", base / "clinical"


def images(root: Path) -> Path:
    """Images of a sample of the cohort's eyes (every test and PTG eye), preprocessed by glaucoma-images."""
    import pandas as pd

    from scilens.synth import retina

    out = root / "output"
    if (out / "oct_scans.parquet").exists():
        return out
    cohort, _ = clinical(root)
    eyes = pd.read_parquet(cohort / "eyes.parquet")
    keep = [eyes[eyes["split"].isin(["test", "ptg"])]]
    for split, n in (("train", TRAIN_EYES), ("validation", VALIDATION_EYES)):
        subjects = eyes.loc[eyes["split"] == split, "eid"].drop_duplicates().sample(frac=1.0, random_state=7)
        counts = eyes[eyes["split"] == split].groupby("eid").size()
        chosen = subjects[counts.loc[subjects].cumsum().to_numpy() <= n]
        keep.append(eyes[eyes["eid"].isin(chosen)])
    sample = pd.concat(keep, ignore_index=True)
    synth = retina.RetinaSynthConfig(n_scans=N_SCANS, oct_height=64, oct_width=80, fundus_size=96)
    retina.write_cohort_images(sample, root / "inputs", synth, seed=7).to_parquet(root / "truth.parquet")
    run_job("glaucoma-images", root / "inputs", out, [LOCAL, f"cohort={cohort}", f"n_scans={N_SCANS}", "scan_height=64",
                                                      "scan_width=80", f"oct.image_size={SIZE}",
                                                      f"cfp.image_size={SIZE}", "files_per_task=32"])
    return out


def train(root: Path) -> tuple[Path, Path]:
    """The tiny OCT and fundus models, trained by glaucoma-train on the images demo's output."""
    outputs = root / "oct", root / "cfp"
    if all((o / "model.keras").exists() for o in outputs):
        return outputs
    source = images(root.parent / "glaucoma-images")
    run_job("glaucoma-train", source, outputs[0], [LOCAL, *TINY_OCT])
    run_job("glaucoma-train", source, outputs[1], [LOCAL, *TINY_CFP])
    return outputs


def infer(root: Path) -> Path:
    """Both models over every eye, the OCT ensemble and saliency, by glaucoma-infer."""
    out = root / "output"
    if (out / "retina_vectors.parquet").exists():
        return out
    source = images(root.parent / "glaucoma-images")
    oct_model, cfp_model = train(root.parent / "glaucoma-train")
    run_job("glaucoma-infer", source, out, [LOCAL, f"oct_model={oct_model}", f"cfp_model={cfp_model}",
                                            "ensemble.n_estimators=1000", "saliency.eyes=4", "saliency.scan_stride=4",
                                            "saliency.methods.ig_steps=32"])
    return out


def final(root: Path) -> Path:
    """The final model next to BM1-BM3 in the clinical report, by glaucoma-final."""
    cohort, clinical_out = clinical(root)
    source = infer(root.parent / "glaucoma-infer")
    out = root / "output"
    run_job("glaucoma-final", source, out, [LOCAL, f"cohort={cohort}", f"clinical={clinical_out}",
                                            "xgb.n_estimators=1000"])
    return out


def clinical_demo(root: Path) -> list[Shown]:
    """Cohort, clinical models and statistics on a small synthetic UK Biobank cohort."""
    import dataclasses

    from scilens.synth import ukb as synth

    # 8,000 participants with glaucoma e^1.8 = 6x as common as in UK Biobank: ~250 glaucoma subjects
    # in a minute or two; the full-size cohort (96,020 participants) is in bench/clinical.py.
    model = synth.GlaucomaModel()
    model = dataclasses.replace(model, alpha=model.alpha + 1.8, incidence=model.incidence * 10)
    export = synth.write_cohort(root / "ukb", n_participants=8_000, seed=7, model=model)
    cohort, clinical, stats = root / "cohort", root / "clinical", root / "stats"
    run_job("glaucoma-cohort", export, cohort, [LOCAL, "splits.test_eyes_per_class=50", "healthy_per_glaucoma=1.0"])
    run_job("glaucoma-clinical", cohort, clinical, [LOCAL, "xgb.n_estimators=600"])
    run_job("glaucoma-stats", cohort, stats, [LOCAL])
    return [(clinical / "report.html", "BM1-BM3: ROC, AUC and PTG accuracy with CIs, SHAP"),
            (clinical / "metrics.json", f"the numbers; MLflow runs in {root / 'mlflow.db'}"),
            (stats / "report.html", "ANCOVA and Dunn's tests (Tables 3.1-3.6)"),
            (cohort / "counts.md", "cohort classes, exclusions, splits; eyes.parquet"),
            (export, "synthetic UK Biobank export (truth.json beside it)")]


def images_demo(root: Path) -> list[Shown]:
    """Images for a sample of the glaucoma-clinical demo's cohort, preprocessed."""
    out = images(root)
    return [(out / "oct_scans.parquet", "preprocessed OCT B-scans, one row per scan, labelled and split"),
            (out / "fundus.parquet", "preprocessed fundus photos"),
            (out / "figures", "examples before/after preprocessing (Fig. 3.11), excluded OCT volumes (Fig. 3.8)"),
            (out / "_rejected", "excluded and unreadable images, with reasons")]


def train_demo(root: Path) -> list[Shown]:
    """Tiny OCT and fundus models, one epoch each on two ranks of the stack's default backend.

    They train on the images demo's output.
    """
    from scilens.vision.train_common import default_backend

    oct_out, cfp_out = train(root)
    return [(oct_out / "learning_curves.png",
             f"OCT DenseNet (tiny preset), 2 {default_backend()} ranks: loss, validation AUC"),
            (oct_out / "ranks.json", "per-rank weight digests (identical: the ranks stayed in sync)"),
            (cfp_out / "model.keras", "fundus transfer model (MobileNetV2, random init, 2/3 frozen)"),
            (root / "mlflow.db", "MLflow runs with per-epoch metrics")]


def infer_demo(root: Path) -> list[Shown]:
    """Both demo models over the demo cohort's images; the OCT ensemble; saliency of four eyes."""
    out = infer(root)
    return [(out / "scan_auc.png", "AUC per scan position (Fig. 3.4A)"),
            (out / "retina_vectors.parquet", "per eye: the scan probabilities and the photo's"),
            (out / "oct_ensemble" / "shap_by_scan.png", "SHAP per scan of the per-retina ensemble (Fig. 3.4B-C)"),
            (out / "saliency", "integrated gradients and SmoothGrad overlays (masks in saliency.parquet)")]


def final_demo(root: Path) -> list[Shown]:
    """The final model on the demo chain's image probabilities and the cohort's BM3 features."""
    out = final(root)
    return [(out / "report.html", "the clinical report with the imaging and final-model sections"),
            (out / "metrics.json", "final model and BM3 on the same eyes: AUC, CIs, PTG accuracy, SHAP top 10")]
