"""Demos of the diagnosis jobs (``train-model``, ``sample``, ``activations``) on scikit-learn's real digits."""

from __future__ import annotations

import json
from pathlib import Path

from scilens.demos.index import Shown
from scilens.demos.run import run_job


def train_digits_model(root: Path) -> tuple[Path, Path]:
    """Digits as image tables and a LeNet-5 trained on their train split by ``train-model``: (model, all digits)."""
    from scilens.diagnosis import datasets

    train = datasets.write_image_table(root / "inputs" / "digits_train", datasets.digits("train"))
    everything = datasets.write_image_table(root / "inputs" / "digits", datasets.digits("all"))
    run_job("train-model", train, root / "model", ["training.epochs=5", "training.batch_size=32"],
            "the digits model (train-model)")
    return root / "model" / "model.keras", everything


def train_model(root: Path) -> list[Shown]:
    """Train LeNet-5 on scikit-learn's real digits (a few seconds)."""
    from scilens.diagnosis import datasets

    train = datasets.write_image_table(root / "inputs" / "digits_train", datasets.digits("train"))
    test = datasets.write_image_table(root / "inputs" / "digits_test", datasets.digits("test"))
    out = root / "output"
    run_job("train-model", train, out, ["training.epochs=5", "training.batch_size=32", f"test={test}"])
    accuracy = json.loads((out / "history.json").read_text()).get("test_accuracy", float("nan"))
    return [(out / "model.keras", f"LeNet-5 (batch norm) trained on 1,258 digits; test accuracy {accuracy:.3f}"),
            (out / "training.png", "loss and accuracy per epoch")]


def sample(root: Path) -> list[Shown]:
    """Sample a LeNet-5's latent space on scikit-learn's real digits with MaxMargin and two baselines."""
    model, digits = train_digits_model(root)
    out = root / "output"
    run_job("sample", digits, out, [f"model={model}", "techniques=[maxmargin,stratified_cm,uniform]",
                                    "fractions=[0.05,0.2]"])
    summary = json.loads((out / "summary.json").read_text())
    samples = [(out / "samples" / f"technique={s['technique']}" / f"fraction={s['fraction']}",
                f"{s['size']} items, {s['misclassified']} misclassified") for s in summary["samples"]]
    return [(out / "report.html", "latent space and sample composition"),
            (out / "embeddings.parquet", "fc2 embedding, logits, prediction of 1,797 digits "
             f"(model accuracy {summary['model_accuracy']:.3f})"), *samples]


def activations(root: Path) -> list[Shown]:
    """Activations of a digits LeNet-5 for its MaxMargin 20 % sample and for all digits: storage compared.

    Reuses the model and samples of the ``sample`` demo when ``make demo`` ran it just before.
    """
    from scilens.diagnosis.activations import ActivationStore

    previous = root.parent / "sample"
    chosen = previous / "output" / "samples" / "technique=maxmargin" / "fraction=0.2"
    if (previous / "model" / "model.keras").exists() and chosen.is_dir():
        model, digits = previous / "model" / "model.keras", previous / "inputs" / "digits"
    else:
        model, digits = train_digits_model(root)
        run_job("sample", digits, root / "sample", [f"model={model}", "fractions=[0.2]"], "activations (sampling)")
        chosen = root / "sample" / "samples" / "technique=maxmargin" / "fraction=0.2"
    sample_out, full_out = root / "output_sample", root / "output_full"
    for out, extra in ((sample_out, [f"ids_from={chosen}"]), (full_out, [])):
        run_job("activations", digits, out, [f"model={model}", *extra])
    small, full = ActivationStore.open(sample_out), ActivationStore.open(full_out)
    return [(sample_out, f"{len(small.layers)} layers of {small.rows} sampled digits: {small.bytes / 2**20:.1f} MiB"),
            (full_out, f"the same for all {full.rows} digits: {full.bytes / 2**20:.1f} MiB "
             f"({full.bytes / small.bytes:.1f}x)")]


def saliency(root: Path) -> list[Shown]:
    """Saliency masks (integrated gradients, SmoothGrad) of the digits LeNet-5 for its MaxMargin 5 % sample.

    Reuses the model and sample of the ``sample`` demo when ``make demo`` ran it just before.
    """
    previous = root.parent / "sample"
    chosen = previous / "output" / "samples" / "technique=maxmargin" / "fraction=0.05"
    if (previous / "model" / "model.keras").exists() and chosen.is_dir():
        model, digits = previous / "model" / "model.keras", previous / "inputs" / "digits"
        extra = [f"ids_from={chosen}"]
    else:
        model, digits = train_digits_model(root)
        extra = [f"ids=[{','.join(map(str, range(0, 200, 2)))}]"]
    out = root / "output"
    run_job("saliency", digits, out, [f"model={model}", *extra])
    return [(out / "report.html", "masks per method, the first masks over their digits"),
            (out / "masks.png", "integrated gradients and SmoothGrad of the predicted class, over each digit"),
            (out / "masks.parquet", "one (8, 8) float32 mask per digit and method, sorted by id")]
