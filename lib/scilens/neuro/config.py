"""The config of ``scilens neuro``: one section per step, each the typed config of its kernel."""

from __future__ import annotations

from dataclasses import dataclass

from scilens.core.config import field
from scilens.core.job import JobConfig
from scilens.neuro.denoise import DenoiseConfig
from scilens.neuro.dti import TensorFitConfig
from scilens.neuro.segment import SegmentConfig

__all__ = ["NeuroConfig"]


@dataclass
class NeuroConfig(JobConfig):
    """Config of ``scilens neuro``."""

    # Every number is bounded: a value past these is a typo, and must fail here, not in a task minutes later.
    b0_threshold: float = field(10.0, "b-value (s/mm²) at or below which a volume is a b0 volume "
                                "(reference: 10).", min=0, max=1000)
    segment: SegmentConfig = field(SegmentConfig(), "Brain mask by median_otsu on the mean b0 image.")
    denoise: DenoiseConfig = field(DenoiseConfig(), "Non-local means denoising of each volume.")
    fit: TensorFitConfig = field(TensorFitConfig(), "Diffusion tensor model.")
    block_shape: list[int] = field([32, 32, 32], "Voxel block (i, j, k) the tensor fit runs on; each block "
                                   "carries every volume, so a fit task holds block voxels x volumes values "
                                   "(plus dipy's float64 work arrays): smaller blocks for tight memory, larger "
                                   "for fewer tasks.", min=1, max=1024, check=lambda v: len(v) == 3,
                                   check_doc="three sizes, one per voxel axis")
    volumes_per_task: int | None = field(None, "Volumes denoised per Spark task, one after another (null: one "
                                         "when a volume has 2M voxels or more, else enough small volumes to "
                                         "make that much work, keeping at least four tasks per core).", min=1,
                                         max=100_000)
    fit_partitions: int | None = field(None, "Partitions of the tensor-fit stage (null: four per core, at "
                                       "most one per block).", min=1, max=100_000)
    granularity: str = field("auto", "How subjects are cut into Spark tasks. subject: each subject's whole chain "
                             "(read, mask, denoise, fit, write) in one task, no shuffle, with idle cores as threads "
                             "when subjects are fewer than cores; volume: volumes denoised and voxel blocks fitted "
                             "as tasks of their own; auto: subject when the subjects can fill the cores (at most "
                             "an executor's cores per subject) and each fits subject_task_mb, else volume (the "
                             "choice and its reason are logged).", choices=("auto", "subject", "volume"))
    subject_task_mb: int = field(2048, "Largest subject (its 4-D image as stored, MiB) auto runs whole in one "
                                 "task; a task holds about three times this (raw, denoised, fit work arrays).",
                                 min=1, max=1_000_000)
    write_denoised: bool = field(False, "Also write subjects/<subject>/denoised.nii.gz (as large as the input).")
    report: bool = field(True, "Write report.html and subjects/<subject>/report.png.")
    arrow_batch_mb: int = field(64, "Upper bound on one Arrow batch of voxel-block rows, MiB (volume rows "
                                "always travel one per batch).", min=1, max=1024)

