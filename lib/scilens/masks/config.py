"""The configs of the mask jobs: ``mask-index`` and ``mask-query``."""

from __future__ import annotations

from dataclasses import dataclass

from scilens.core.config import field
from scilens.core.job import JobConfig
from scilens.masks.chi import Normalisation
from scilens.masks.query import BY, OPS

__all__ = ["FORMS", "MaskIndexConfig", "MaskQueryConfig"]

FORMS = ("filter", "topk", "aggregate", "cp")


def _normalise_ok(spec: str) -> bool:
    try:
        Normalisation.parse(spec)
    except ValueError:
        return False
    return True


@dataclass
class MaskIndexConfig(JobConfig):
    """Config of ``scilens mask-index``."""

    mask_column: str = field("mask", "Tensor column holding one 2-D mask per row (a scilens tensor).")
    key_columns: list[str] = field(["id"], "Key columns copied into the index. The first is the mask id: an "
                                   "integer that is unique per mask (masks are fetched by it); the others "
                                   "(e.g. the image id and the saliency method) are what queries group by.",
                                   check=lambda keys: len(keys) >= 1 and len(set(keys)) == len(keys),
                                   check_doc="at least one column, no repeats")
    where: str | None = field(None, "Spark SQL condition choosing the rows to index (e.g. modality = 'oct'); "
                              "null: every row. All masks of one index have one shape.")
    bins: int = field(16, "Levels of the quantiser: thresholds l / bins are answered from the index alone.",
                      min=1, max=255)
    cell: int = field(16, "Spacing of the cumulative histogram's grid, pixels along each axis: boxes on these "
                      "lines are answered from the index alone.", min=1)
    normalise: str = field("per-mask-max", "How values map to [0, 1]: per-mask-max (v / max v), "
                           "abs-per-mask-max (|v| / max |v|) or fixed:<lo>,<hi>.",
                           check=_normalise_ok, check_doc="per-mask-max, abs-per-mask-max or fixed:<lo>,<hi>")


@dataclass
class MaskQueryConfig(JobConfig):
    """Config of ``scilens mask-query``."""

    form: str = field("filter", "Query: filter (masks whose measure meets op value), topk (the k best masks), "
                      "aggregate (groups of masks by their mean CP) or cp (the CP of every mask).", choices=FORMS)
    roi: list[str] = field([], "Box (y0, y1, x0, x1), half-open, in pixels; each entry a number or the name of "
                           "an indexed key column (a box per mask, e.g. [band_top, band_bottom, 0, 224]); "
                           "empty: the whole mask.",
                           check=lambda r: len(r) in (0, 4), check_doc="empty or four entries")
    threshold: float = field(0.5, "Pixels whose normalised value is above this count (in [0, 1]; the index "
                             "alone decides thresholds on its bin edges).", min=0.0, max=1.0)
    by: str = field("count", "Measure: count (CP), fraction (CP / box area) or share (CP / CP of the whole "
                    "mask: the share of the mask's salient pixels inside the box).", choices=BY)
    op: str = field(">", "filter, aggregate with value: comparison.", choices=OPS)
    value: float | None = field(None, "filter, aggregate: the value compared with.")
    k: int | None = field(None, "topk, aggregate: how many masks or groups.", min=1)
    order: str = field("desc", "topk, aggregate with k: highest (desc) or lowest (asc) first.",
                       choices=("desc", "asc"))
    group_by: str | None = field(None, "aggregate: the indexed key column grouping masks (e.g. the image id "
                                 "over its saliency methods).")
    table: str | None = field(None, "The mask table; null: the one the index was built from (index.json).")
    image_column: str | None = field("image", "Column of the mask table with each mask's image, shown under "
                                     "the returned masks (when the table has it); null: masks alone.")
    shown: int = field(25, "Returned masks shown in matches.png.", min=0)
