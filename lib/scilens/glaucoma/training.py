"""What ``glaucoma-train`` records of a distributed training run: the ranks' summary.

The training itself is generic (:mod:`scilens.vision.train_common` and its two backends); this
function turns the ranks' results (one dict per rank: ``rank``, ``history``, ``weights_sha256``,
``best_epoch``, ``best_val_auc``) into ``ranks.json``. The MLflow run is logged by
:func:`scilens.glaucoma.tracking.log_epochs`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["ranks_summary"]


def ranks_summary(results: Sequence[Mapping[str, Any]], backend: str) -> dict[str, Any]:
    """The content of ``ranks.json``: each rank's weight digest and losses, and whether the digests agree."""
    digests = {r["rank"]: r["weights_sha256"] for r in results}
    return {"backend": backend, "ranks": [{"rank": r["rank"], "weights_sha256": r["weights_sha256"],
                                           "loss": [h["loss"] for h in r["history"]]} for r in results],
            "identical_weights": len(set(digests.values())) == 1,
            "best_epoch": results[0]["best_epoch"], "best_val_auc": results[0]["best_val_auc"]}
