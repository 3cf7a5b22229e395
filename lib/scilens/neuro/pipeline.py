"""The dMRI pipeline per subject: what the Spark job and the single-process reference both run.

Each function takes one subject (or a piece of one: a volume, a block of
voxels) as in-memory numpy data and returns numpy objects, so the Spark
stages (:mod:`scilens.neuro.stages`) and a plain loop
(``bench/reference/neuro_ref.py``, :func:`run_subject`) differ only in how
they cut and move the data, and their outputs agree.

The chain for one subject::

    read_subject -> segment_subject (b0 sums -> mean b0 -> mask) -> denoise_subject (volume by volume)
                 -> fit_subject (masked voxels) -> write_mask / write_maps / write_denoised

Outputs, shared by every implementation, under ``<output>/subjects/<subject>/``:
``mask.nii.gz`` (uint8), ``fa.nii.gz`` and ``md.nii.gz`` (float64, zero
outside the mask), and ``denoised.nii.gz`` (the input's dtype), all with the
input's affine.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from dipy.core.gradients import GradientTable

from scilens.core.chunking import Block, block_grid
from scilens.io import nifti
from scilens.neuro.config import NeuroConfig
from scilens.neuro.denoise import DenoiseConfig, DenoisedVolume, denoise_volume
from scilens.neuro.dti import TensorFitConfig, VoxelTensors, fit_tensors
from scilens.neuro.gradients import b0_volumes, make_gradient_table
from scilens.neuro.segment import B0Sum, SegmentConfig, brain_mask

__all__ = [
    "SUBJECTS_DIR",
    "VIEWS",
    "B0Partial",
    "Segmentation",
    "Subject",
    "SubjectResult",
    "TensorMaps",
    "assemble_maps",
    "denoise_subject",
    "fit_subject",
    "has_nonfinite",
    "mask_blocks",
    "mid_slices",
    "read_subject",
    "run_subject",
    "segment",
    "segment_subject",
    "subject_dir",
    "write_denoised",
    "write_maps",
    "write_mask",
]

VIEWS = ("sagittal", "coronal", "axial")

SUBJECTS_DIR = "subjects"
"""Per-subject outputs live in ``<output>/subjects/<subject>/``: a subject's name can then never be
the name of a run-level output (``voxels.parquet``, ``report.html``, ``manifest.json``, ``_rejected``)."""


# ----------------------------------------------------------------------------- subjects and their outputs

def subject_dir(output: str | Path, subject: str) -> Path:
    """``<output>/subjects/<subject>``, refusing a name that would lead anywhere else.

    The job refuses such names when it lists subjects; this is the last guard
    before anything is written (nothing may ever land outside the output).
    """
    parent = Path(output) / SUBJECTS_DIR
    if (not subject or subject in (".", "..") or "/" in subject or "\\" in subject or "\0" in subject
            or Path(subject).is_absolute()):
        raise ValueError(f"subject name {subject!r} cannot name an output directory")
    return parent / subject


def mid_slices(volume: np.ndarray) -> list[np.ndarray]:
    """The middle slice of a 3-D volume across each voxel axis (i, j, k): sagittal, coronal, axial."""
    return [np.take(volume, volume.shape[axis] // 2, axis=axis) for axis in range(3)]


# ----------------------------------------------------------------------------- read

@dataclass
class Subject:
    """One subject in memory: its 4-D image (volumes last) and gradient table as read from its files."""

    name: str
    path: str
    data: np.ndarray
    affine: np.ndarray
    bvals: np.ndarray
    bvecs: np.ndarray
    gradient_files: tuple[str | None, str | None] = (None, None)


def read_subject(path: str | Path, subject: str | None = None, bval_path: str | Path | None = None,
                 bvec_path: str | Path | None = None,
                 max_volume_mb: float | None = nifti.DEFAULT_MAX_VOLUME_MB) -> Subject:
    """Read a subject whole, with the checks and values of the job's volume reader.

    Parameters
    ----------
    path : str or Path
        The NIfTI image.
    subject : str, optional
        Its name (default: the file's name without ``.nii``/``.nii.gz``).
    bval_path, bvec_path : str or Path, optional
        FSL gradient files (default: those beside the image).
    max_volume_mb : float or None
        Largest volume accepted, MiB in memory (:func:`scilens.io.nifti.iter_volumes`).

    Returns
    -------
    Subject
        Values equal ``np.asanyarray(nibabel.load(path).dataobj)`` (a 3-D file
        becomes one volume), stored volume-contiguous like NIfTI itself.
    """
    path = str(path)
    files = (str(bval_path), str(bvec_path)) if bval_path is not None and bvec_path is not None else None
    # The executors' reader: a file is accepted, scaled and refused exactly as in the job. The image is
    # opened first, so a bad image is blamed, not its gradient files.
    img, volumes = nifti.iter_volumes(path, max_volume_mb)
    n_volumes = img.shape[3] if len(img.shape) == 4 else 1
    side = files or nifti.find_gradient_files(path)
    if side is None:
        raise ValueError(f"{path}: no FSL gradient files (.bval/.bvec) beside it")
    bvals, bvecs = nifti.read_gradients(*side)
    if len(bvals) != n_volumes or len(bvecs) != n_volumes:
        raise ValueError(f"{path}: image has {n_volumes} volumes but the gradient table has "
                         f"{len(bvals)} b-values and {len(bvecs)} b-vectors")
    data = None
    for v, volume in enumerate(volumes):
        if data is None:
            data = np.empty((*volume.shape, n_volumes), dtype=volume.dtype, order="F")
        data[..., v] = volume
    if data is None:  # iter_volumes refuses an image without volumes before it yields
        raise ValueError(f"{path}: no volume")
    return Subject(subject or nifti.subject_name(path), path, data, np.asarray(img.affine), bvals, bvecs,
                   (str(side[0]), str(side[1])))


# ----------------------------------------------------------------------------- segment

@dataclass
class B0Partial:
    """What one pass over some of a subject's volumes keeps for its segmentation (no image but the b0 sum)."""

    volumes: list[int] = field(default_factory=list)
    bvals: list[float] = field(default_factory=list)
    bvecs: list[np.ndarray] = field(default_factory=list)
    b0: B0Sum = field(default_factory=B0Sum)
    nonfinite: list[int] = field(default_factory=list)

    def add(self, index: int, volume: np.ndarray, bval: float, bvec: np.ndarray, is_b0: bool) -> None:
        """Take volume ``index``: its gradient, and the volume itself into the b0 sum if it is a finite b0."""
        self.volumes.append(int(index))
        self.bvals.append(bval)
        self.bvecs.append(np.asarray(bvec, dtype=np.float64).reshape(3))
        if has_nonfinite(volume):
            self.nonfinite.append(int(index))
        elif is_b0:
            self.b0.add(volume)


def has_nonfinite(volume: np.ndarray) -> bool:
    """Whether a volume holds NaN or infinite values (which fail its subject)."""
    return volume.dtype.kind == "f" and not np.isfinite(volume).all()


@dataclass
class Segmentation:
    """A segmented subject: its gradients in volume order, mean b0 image and brain mask."""

    bvals: np.ndarray
    bvecs: np.ndarray
    gtab: GradientTable
    mean_b0: np.ndarray
    mask: np.ndarray
    n_b0: int


def segment(parts: Sequence[B0Partial], n_volumes: int, b0_threshold: float, config: SegmentConfig,
            gradient_files: tuple[str | None, str | None] = (None, None)) -> Segmentation:
    """Merge a subject's partial b0 sums (in any split) into its mean b0 image and brain mask.

    Parameters
    ----------
    parts : sequence of B0Partial
        Together, every volume ``0..n_volumes-1`` exactly once.
    n_volumes : int
    b0_threshold : float
    config : SegmentConfig
    gradient_files : (str or None, str or None)
        The subject's .bval and .bvec files, named in messages.

    Returns
    -------
    Segmentation

    Raises
    ------
    ValueError
        Volumes missing or repeated, a volume holding NaN/Inf, gradients that
        are not physical or make no valid table (no b0 volume, ...), or an
        empty mask.
    """
    volumes = np.concatenate([np.asarray(p.volumes, dtype=np.int64) for p in parts])
    order = np.argsort(volumes, kind="stable")
    if not np.array_equal(volumes[order], np.arange(n_volumes)):
        raise ValueError(f"expected volumes 0..{n_volumes - 1}, got {len(volumes)} volumes")
    bvals = np.concatenate([np.asarray(p.bvals, dtype=np.float64) for p in parts])[order]
    bvecs = np.concatenate([np.asarray(p.bvecs, dtype=np.float64).reshape(-1, 3) for p in parts])[order]
    nonfinite = np.sort(np.concatenate([np.asarray(p.nonfinite, dtype=np.int64) for p in parts]))
    if nonfinite.size:
        shown = ", ".join(map(str, nonfinite[:10])) + (" ..." if nonfinite.size > 10 else "")
        raise ValueError(f"volume(s) {shown} hold NaN or infinite values")
    # Fails early, naming what is wrong and where.
    gtab = make_gradient_table(bvals, bvecs, b0_threshold, *gradient_files)
    total = B0Sum()
    for part in parts:
        total.merge(part.b0)
    mean_b0 = total.mean()
    mask = brain_mask(mean_b0, config)
    if not mask.any():
        raise ValueError("the brain mask is empty (median_otsu found no foreground)")
    return Segmentation(bvals, bvecs, gtab, mean_b0, mask, total.count)


def segment_subject(subject: Subject, b0_threshold: float, config: SegmentConfig) -> Segmentation:
    """:func:`segment` of a subject in memory: its volumes summed one by one, as one part."""
    part = B0Partial()
    is_b0 = b0_volumes(subject.bvals, b0_threshold)
    for v in range(subject.data.shape[3]):
        part.add(v, subject.data[..., v], subject.bvals[v], subject.bvecs[v], bool(is_b0[v]))
    return segment([part], subject.data.shape[3], b0_threshold, config, subject.gradient_files)


def write_mask(output: str | Path, subject: str, mask: np.ndarray, affine: np.ndarray) -> Path:
    """Write ``subjects/<subject>/mask.nii.gz`` (uint8) under ``output``."""
    return nifti.write_nifti(subject_dir(output, subject) / "mask.nii.gz", mask.astype(np.uint8), affine)


# ----------------------------------------------------------------------------- denoise

def denoise_subject(data: np.ndarray, mask: np.ndarray, config: DenoiseConfig,
                    num_threads: int | None = 1) -> tuple[np.ndarray, np.ndarray]:
    """Denoise every volume of a 4-D subject on its own (:func:`~scilens.neuro.denoise.denoise_volume`).

    Returns the denoised subject (``data``'s dtype, shape and layout) and
    each volume's noise sigma (float32, as ``estimate_sigma`` of the 4-D data).
    """
    denoised = np.zeros_like(data)
    sigmas = np.zeros(data.shape[3], dtype=np.float32)
    for v in range(data.shape[3]):
        out: DenoisedVolume = denoise_volume(data[..., v], mask, config, num_threads)
        denoised[..., v] = out.data
        sigmas[v] = out.sigma
    return denoised, sigmas


def mask_blocks(mask: np.ndarray, block_shape: Sequence[int]) -> list[tuple[int, Block, np.ndarray]]:
    """(block id, block, block mask) of the voxel blocks holding at least one masked voxel."""
    return [(bid, block, mask[block.slices]) for bid, block in enumerate(block_grid(mask.shape, list(block_shape)))
            if mask[block.slices].any()]


def write_denoised(output: str | Path, subject: str, volumes: Iterable[np.ndarray], shape: Sequence[int],
                   dtype: np.dtype | str, affine: np.ndarray) -> Path:
    """Write ``subjects/<subject>/denoised.nii.gz`` under ``output`` from its volumes, one in memory at a time."""
    return nifti.write_nifti_volumes(subject_dir(output, subject) / "denoised.nii.gz", volumes, shape, dtype, affine)


# ----------------------------------------------------------------------------- fit

@dataclass
class TensorMaps:
    """A subject's tensor maps on its voxel grid, zero outside the mask (as dipy's masked fit gives them)."""

    fa: np.ndarray
    md: np.ndarray
    evals: np.ndarray | None


def fit_subject(denoised: np.ndarray, mask: np.ndarray, gtab: GradientTable, config: TensorFitConfig) -> TensorMaps:
    """Fit the tensor to every masked voxel at once (each voxel is fitted alone: any split gives the same)."""
    whole = block_grid(mask.shape, list(mask.shape))[0]
    return assemble_maps(mask.shape, [(whole, mask, fit_tensors(denoised[mask], gtab, config))])


def assemble_maps(shape: Sequence[int], blocks: Iterable[tuple[Block, np.ndarray, VoxelTensors]],
                  with_evals: bool = True) -> TensorMaps:
    """FA, MD (and eigenvalue) maps of shape ``shape[:3]`` from the fits of blocks' masked voxels.

    Parameters
    ----------
    shape : sequence of int
        The subject's shape (its first three sizes are the grid).
    blocks : iterable of (Block, ndarray, VoxelTensors)
        Each block, its mask (the voxels fitted, in C order) and their fit.
    with_evals : bool
        Also fill the eigenvalue map (three values a voxel); without it,
        ``evals`` is None and the fits' eigenvalues are not read.

    Returns
    -------
    TensorMaps
    """
    grid = tuple(int(n) for n in shape[:3])
    maps = TensorMaps(np.zeros(grid), np.zeros(grid), np.zeros((*grid, 3)) if with_evals else None)
    for block, mask, fit in blocks:
        maps.fa[block.slices][mask] = fit.fa
        maps.md[block.slices][mask] = fit.md
        if maps.evals is not None:
            maps.evals[block.slices][mask] = fit.evals
    return maps


def write_maps(output: str | Path, subject: str, fa: np.ndarray, md: np.ndarray, affine: np.ndarray) -> None:
    """Write ``subjects/<subject>/fa.nii.gz`` and ``md.nii.gz`` (float64) under ``output``."""
    for name, data in (("fa", fa), ("md", md)):
        nifti.write_nifti(subject_dir(output, subject) / f"{name}.nii.gz", data, affine)


# ----------------------------------------------------------------------------- the chain

@dataclass
class SubjectResult:
    """Everything the chain computes for one subject."""

    subject: Subject
    segmentation: Segmentation
    sigma: np.ndarray
    denoised: np.ndarray
    maps: TensorMaps


def run_subject(subject: Subject, config: NeuroConfig | None = None, output: str | Path | None = None,
                num_threads: int | None = 1) -> SubjectResult:
    """The whole chain on one subject in memory, without Spark; writes its files under ``output`` if given.

    Parameters
    ----------
    subject : Subject
        From :func:`read_subject`.
    config : NeuroConfig, optional
        The job's config (its ``b0_threshold``, ``segment``, ``denoise``,
        ``fit`` and ``write_denoised``; the Spark-only fields are not used).
    output : str or Path, optional
        Where to write ``subjects/<subject>/`` (mask, FA, MD and, with
        ``write_denoised``, the denoised image), as ``scilens neuro`` does.
    num_threads : int or None
        dipy's threads in non-local means (None: every core; more than one
        makes dipy 1.12's blockwise method vary from run to run).

    Returns
    -------
    SubjectResult
    """
    config = config or NeuroConfig()
    seg = segment_subject(subject, config.b0_threshold, config.segment)
    denoised, sigma = denoise_subject(subject.data, seg.mask, config.denoise, num_threads)
    maps = fit_subject(denoised, seg.mask, seg.gtab, config.fit)
    if output is not None:
        write_mask(output, subject.name, seg.mask, subject.affine)
        write_maps(output, subject.name, maps.fa, maps.md, subject.affine)
        if config.write_denoised:
            write_denoised(output, subject.name, _volumes(denoised), denoised.shape, denoised.dtype, subject.affine)
    return SubjectResult(subject, seg, sigma, denoised, maps)


def _volumes(data: np.ndarray) -> Iterator[np.ndarray]:
    return (data[..., v] for v in range(data.shape[3]))
