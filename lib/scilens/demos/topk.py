"""Demo of ``scilens activation-index`` and ``scilens topk`` on the digits LeNet-5's activation store."""

from __future__ import annotations

from pathlib import Path

from scilens.demos.index import Shown
from scilens.demos.run import run_job

LAYERS = ["fc2", "logits"]


def _store(root: Path) -> tuple[Path, Path]:
    """(store, image table) of every digit: the ``activations`` demo's when it ran just before, else built here."""
    from scilens.demos.diagnosis import train_digits_model

    previous = root.parent / "activations"
    store = previous / "output_full"
    for digits in (root.parent / "sample" / "inputs" / "digits", previous / "inputs" / "digits"):
        if (store / "layers.json").is_file() and digits.is_dir():
            return store, digits
    model, digits = train_digits_model(root)
    store = root / "store"
    run_job("activations", digits, store, [f"model={model}", f"layers=[{','.join(LAYERS)}]"], "topk (activations)")
    return store, digits


def demo(root: Path) -> list[Shown]:
    """Index the digits store's dense layers, then ask for the digits that excite logit 3 most and the nearest to one.

    Parameters
    ----------
    root : pathlib.Path
        The demo's directory.

    Returns
    -------
    list of Shown
        The index report and each query's contact sheet and report.
    """
    import pandas as pd


    store, digits = _store(root)
    index = root / "index"
    run_job("activation-index", store, index, [f"layers=[{','.join(LAYERS)}]"], "topk (activation-index)")
    item = int(pd.read_parquet(index / "ids.parquet")["id"].min())
    queries = {"highest": ["query=highest", "layer=logits", "neurons=[3]", "k=10"],
               "nearest": ["query=nearest", "layer=fc2", "neurons=[0,1,2,3,4,5,6,7]", f"item={item}", "k=10"]}
    shown: list[Shown] = [(index / "report.html", "the index: bytes per layer against the materialised activations")]
    for name, settings in queries.items():
        out = root / name
        run_job("topk", index, out, [*settings, f"images={digits}"], f"topk ({name} query)")
        what = ("the 10 digits with the highest logit 3" if name == "highest"
                else f"the 10 digits nearest to digit id {item} in fc2 neurons 0-7 (itself first)")
        shown += [(out / "contact_sheet.png", what), (out / "report.html", f"{name} query: result and cost")]
    return shown
