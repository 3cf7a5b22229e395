"""Demos of the diagnosis jobs (``train-model``, ``sample``, ``activations``) on scikit-learn's real digits."""

from __future__ import annotations

import json
from pathlib import Path

from scilens.demos.index import Shown


def train_digits_model(root: Path) -> tuple[Path, Path]:
    """Digits as image tables and a LeNet-5 trained on their train split by ``train-model``: (model, all digits)."""
    from scilens.cli import main
    from scilens.diagnosis import datasets

    train = datasets.write_image_table(root / "inputs" / "digits_train", datasets.digits("train"))
    everything = datasets.write_image_table(root / "inputs" / "digits", datasets.digits("all"))
    if main(["train-model", "--input", str(train), "--output", str(root / "model"),
             "--set", "training.epochs=5", "--set", "training.batch_size=32"]) != 0:
        raise RuntimeError("training the digits model failed")
    return root / "model" / "model.keras", everything


def train_model(root: Path) -> list[Shown]:
    """Train LeNet-5 on scikit-learn's real digits (a few seconds)."""
    from scilens.cli import main
    from scilens.diagnosis import datasets

    train = datasets.write_image_table(root / "inputs" / "digits_train", datasets.digits("train"))
    test = datasets.write_image_table(root / "inputs" / "digits_test", datasets.digits("test"))
    out = root / "output"
    if main(["train-model", "--input", str(train), "--output", str(out), "--set", "training.epochs=5",
             "--set", "training.batch_size=32", "--set", f"test={test}"]) != 0:
        raise RuntimeError("train-model demo failed")
    accuracy = json.loads((out / "history.json").read_text()).get("test_accuracy", float("nan"))
    return [(out / "model.keras", f"LeNet-5 (batch norm) trained on 1,258 digits; test accuracy {accuracy:.3f}"),
            (out / "training.png", "loss and accuracy per epoch")]


def sample(root: Path) -> list[Shown]:
    """Sample a LeNet-5's latent space on scikit-learn's real digits with MaxMargin and two baselines."""
    from scilens.cli import main

    model, digits = train_digits_model(root)
    out = root / "output"
    if main(["sample", "--input", str(digits), "--output", str(out), "--set", f"model={model}",
             "--set", "techniques=[maxmargin,stratified_cm,uniform]", "--set", "fractions=[0.05,0.2]"]) != 0:
        raise RuntimeError("sample demo failed")
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
    from scilens.cli import main
    from scilens.diagnosis.activations import ActivationStore

    previous = root.parent / "sample"
    chosen = previous / "output" / "samples" / "technique=maxmargin" / "fraction=0.2"
    if (previous / "model" / "model.keras").exists() and chosen.is_dir():
        model, digits = previous / "model" / "model.keras", previous / "inputs" / "digits"
    else:
        model, digits = train_digits_model(root)
        if main(["sample", "--input", str(digits), "--output", str(root / "sample"), "--set", f"model={model}",
                 "--set", "fractions=[0.2]"]) != 0:
            raise RuntimeError("activations demo: sampling failed")
        chosen = root / "sample" / "samples" / "technique=maxmargin" / "fraction=0.2"
    sample_out, full_out = root / "output_sample", root / "output_full"
    for out, extra in ((sample_out, ["--set", f"ids_from={chosen}"]), (full_out, [])):
        if main(["activations", "--input", str(digits), "--output", str(out), "--set", f"model={model}",
                 *extra]) != 0:
            raise RuntimeError("activations demo failed")
    small, full = ActivationStore.open(sample_out), ActivationStore.open(full_out)
    return [(sample_out, f"{len(small.layers)} layers of {small.rows} sampled digits: {small.bytes / 2**20:.1f} MiB"),
            (full_out, f"the same for all {full.rows} digits: {full.bytes / 2**20:.1f} MiB "
             f"({full.bytes / small.bytes:.1f}x)")]


def saliency(root: Path) -> list[Shown]:
    """Saliency masks (integrated gradients, SmoothGrad) of the digits LeNet-5 for its MaxMargin 5 % sample.

    Reuses the model and sample of the ``sample`` demo when ``make demo`` ran it just before.
    """
    from scilens.cli import main

    previous = root.parent / "sample"
    chosen = previous / "output" / "samples" / "technique=maxmargin" / "fraction=0.05"
    if (previous / "model" / "model.keras").exists() and chosen.is_dir():
        model, digits = previous / "model" / "model.keras", previous / "inputs" / "digits"
        extra = [f"ids_from={chosen}"]
    else:
        model, digits = train_digits_model(root)
        extra = [f"ids=[{','.join(map(str, range(0, 200, 2)))}]"]
    out = root / "output"
    if main(["saliency", "--input", str(digits), "--output", str(out), "--set", f"model={model}",
             *[a for s in extra for a in ("--set", s)]]) != 0:
        raise RuntimeError("saliency demo failed")
    return [(out / "report.html", "masks per method, the first masks over their digits"),
            (out / "masks.png", "integrated gradients and SmoothGrad of the predicted class, over each digit"),
            (out / "masks.parquet", "one (8, 8) float32 mask per digit and method, sorted by id")]
