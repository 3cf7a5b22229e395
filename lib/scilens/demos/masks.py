"""Demo of ``scilens mask-index`` and ``scilens mask-query`` on the glaucoma demo's OCT saliency masks."""

from __future__ import annotations

import json
from pathlib import Path

from scilens.demos.index import Shown
from scilens.demos.run import run_job

WHERE = "modality = 'oct' AND method = 'integrated_gradients'"
KEYS = "[mask_id, eid, eye, scan, band_top, band_bottom]"


def demo(root: Path) -> list[Shown]:
    """Index the integrated-gradients masks of the OCT scans, then ask which put their salient pixels off the retina.

    "More than 40% of the salient pixels outside the retinal band" is a share of the mask's pixels above
    the threshold inside the band (a box per scan, from the band columns glaucoma-infer stores) below 0.6.

    Parameters
    ----------
    root : pathlib.Path
        The demo's directory.

    Returns
    -------
    list of Shown
        The index report and each query's figure and report.
    """
    from scilens.demos.glaucoma import infer

    table = infer(root.parent / "glaucoma-infer") / "saliency.parquet"
    index = root / "index"
    # The demo's B-scans are 32 x 32: a grid line every 4 pixels (the default 16 suits 224-pixel masks).
    run_job("mask-index", table, index, [f"where={WHERE}", f"key_columns={KEYS}", "cell=4"], "masks (mask-index)")
    width = json.loads((index / "index.json").read_text())["shape"][1]
    band = f"roi=[band_top, band_bottom, 0, {width}]"
    queries = {
        "outside_band": ["form=filter", band, "by=share", "threshold=0.25", "op=<", "value=0.6"],
        # whatever the filter returns, the five scans whose saliency lies least on the retina
        "least_in_band": ["form=topk", band, "by=share", "threshold=0.25", "order=asc", "k=5"],
    }
    shown: list[Shown] = [(index / "report.html", "the mask index: bytes against the mask table's")]
    for name, settings in queries.items():
        out = root / name
        run_job("mask-query", index, out, settings, f"masks ({name} query)")
        shown.append((out / "report.html", f"{name}: {', '.join(settings)} (the returned scans in matches.png)"))
    return shown
