"""Every job's demo and the demo runner (``python -m scilens.demos``, what ``make demo`` runs).

A demo ``fn(root: pathlib.Path) -> list[Shown]`` prepares small inputs under ``root``, runs its
job through :func:`scilens.cli.main` and returns what the user should look at, as (path, what it
is) pairs (:data:`scilens.demos.index.Shown`), its report and key figure first. Demos sit
above the jobs (they call the CLI), so no job module imports this package. :data:`DEMOS` lists
them in the order ``make demo`` runs them: the glaucoma and diagnosis chains reuse the outputs
of the demo before them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from scilens.demos import assertions, astro, diagnosis, glaucoma, guarantees, ingest, masks, neuro, topk
from scilens.demos.index import Shown

Demo = Callable[[Path], list[Shown]]

DEMOS: dict[str, Demo] = {
    "ingest": ingest.demo,
    "neuro": neuro.demo,
    "astro": astro.demo,
    "train-model": diagnosis.train_model,
    "sample": diagnosis.sample,
    "activations": diagnosis.activations,
    "saliency": diagnosis.saliency,
    "topk": topk.demo,
    "glaucoma-clinical": glaucoma.clinical_demo,
    "glaucoma-images": glaucoma.images_demo,
    "glaucoma-train": glaucoma.train_demo,
    "glaucoma-infer": glaucoma.infer_demo,
    "glaucoma-final": glaucoma.final_demo,
    "masks": masks.demo,
    "guarantees": guarantees.demo,
    "assert": assertions.demo,
}
"""Job name -> its demo, in run order (was each job module's ``DEMO_RANK``: 0, 10, 20, 50-52, 60-64)."""
