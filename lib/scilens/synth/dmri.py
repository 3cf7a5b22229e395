"""A brain-like diffusion-MRI phantom with known tensors, for tests, demos and benchmarks.

The phantom is a grid of tissue labels (:func:`tissue_labels`): an ellipsoidal
head in background, a scalp shell, a brain whose default tissue is grey-matter
like, two CSF-filled ventricles, and white-matter-like bundles of high
anisotropy running left-right, anterior-posterior, superior-inferior and
obliquely in the axial plane. Every label has one diffusion tensor and one b0
signal (:data:`TISSUES`), so the true FA and MD maps are exact.

Signals are simulated per tissue with ``dipy.sims.voxel.single_tensor`` for a
real gradient table shipped with dipy (:func:`acquisition`), then each volume
gets Rician noise from ``dipy.sims.voxel.add_noise`` with
``sigma = s0 / snr``: ``snr`` is the b0 signal-to-noise ratio of white matter.
Volumes are generated one at a time, each from its own seeded generator, so a
phantom of any size is written in the memory of one volume and is the same
however it is produced.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "TISSUES",
    "PhantomFiles",
    "Tissue",
    "acquisition",
    "iter_volumes",
    "noise_sigma",
    "tissue_labels",
    "tissue_signals",
    "true_maps",
    "write_phantom",
]


@dataclass(frozen=True)
class Tissue:
    """One tissue class of the phantom."""

    label: int
    name: str
    s0: float
    """b0 signal relative to white matter."""
    evals: tuple[float, float, float]
    """Tensor eigenvalues, mm²/s, largest first."""
    direction: tuple[float, float, float]
    """Principal diffusion direction in voxel axes (i, j, k)."""

    @property
    def fa(self) -> float:
        """Fractional anisotropy of the tensor's eigenvalues."""
        from dipy.reconst.dti import fractional_anisotropy

        return float(fractional_anisotropy(np.array(self.evals)))

    @property
    def md(self) -> float:
        """Mean diffusivity: the mean of the tensor's eigenvalues."""
        return float(np.mean(self.evals))


_WM = (1.7e-3, 0.3e-3, 0.3e-3)  # FA 0.80, MD 0.77e-3 mm²/s: adult white matter
_DIAG = (float(np.sqrt(0.5)), float(np.sqrt(0.5)), 0.0)

TISSUES: dict[int, Tissue] = {t.label: t for t in (
    Tissue(0, "background", 0.0, (0.0, 0.0, 0.0), (1.0, 0.0, 0.0)),
    Tissue(1, "scalp", 0.5, (1.0e-3, 1.0e-3, 1.0e-3), (1.0, 0.0, 0.0)),
    Tissue(2, "grey matter", 1.2, (0.8e-3, 0.8e-3, 0.8e-3), (1.0, 0.0, 0.0)),
    Tissue(3, "CSF", 2.0, (3.0e-3, 3.0e-3, 3.0e-3), (1.0, 0.0, 0.0)),
    Tissue(4, "white matter left-right", 1.0, _WM, (1.0, 0.0, 0.0)),
    Tissue(5, "white matter anterior-posterior", 1.0, _WM, (0.0, 1.0, 0.0)),
    Tissue(6, "white matter superior-inferior", 1.0, _WM, (0.0, 0.0, 1.0)),
    Tissue(7, "white matter oblique", 1.0, _WM, _DIAG),
)}
"""The phantom's tissues by label. Labels 4-7 are white-matter like."""

WHITE_MATTER = (4, 5, 6, 7)


def acquisition(kind: str = "single_shell") -> tuple[np.ndarray, np.ndarray]:
    """A real gradient table shipped with dipy: ``(bvals, bvecs)``.

    ``single_shell``: dipy's ``small_64D`` acquisition, one b0 and 64
    directions at b ~ 1000 s/mm² (65 volumes). ``multi_shell``: dipy's
    ``gtab_3shell``, one b0 and 64 directions at each of b = 1000, 2000 and
    3500 s/mm² (193 volumes).
    """
    from dipy.data import get_3shell_gtab, get_fnames
    from dipy.io.gradients import read_bvals_bvecs

    if kind == "single_shell":
        _, bval, bvec = get_fnames(name="small_64D")
        bvals, bvecs = read_bvals_bvecs(str(bval), str(bvec))
    elif kind == "multi_shell":
        gtab = get_3shell_gtab()
        bvals, bvecs = gtab.bvals, gtab.bvecs
    else:
        raise ValueError(f"unknown acquisition {kind!r}; choose single_shell or multi_shell")
    bvecs = np.where(np.isnan(bvecs), 0.0, bvecs)  # FSL's "nan" b0 vectors, written as zeros
    return np.asarray(bvals, dtype=np.float64), np.asarray(bvecs, dtype=np.float64)


def _tube(u: Sequence[np.ndarray], centre: Sequence[float], axis: int, radius: float,
          extent: tuple[float, float]) -> np.ndarray:
    """A cylinder along ``axis`` in normalised coordinates."""
    others = [a for a in range(3) if a != axis]
    r2 = sum((u[a] - centre[a]) ** 2 for a in others)
    return (r2 < radius**2) & (u[axis] > extent[0]) & (u[axis] < extent[1])


def tissue_labels(shape: Sequence[int]) -> np.ndarray:
    """The phantom's label grid (uint8, labels of :data:`TISSUES`) for a 3-D ``shape``.

    Geometry is in coordinates normalised to the brain's radii (40 % of the
    grid along each axis), so every grid size holds the same anatomy.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"phantom grid must be 3-D with at least 8 voxels per axis, got {shape}")
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    centre = [(n - 1) / 2 for n in shape]
    u = [(g - c) / (0.40 * n) for g, c, n in zip(grid, centre, shape)]
    r2 = u[0] ** 2 + u[1] ** 2 + u[2] ** 2
    labels = np.zeros(shape, dtype=np.uint8)
    labels[r2 < (0.46 / 0.40) ** 2] = 1  # scalp shell around the brain
    labels[r2 < 1.0] = 2
    # Slab like the corpus callosum, left-right.
    labels[(np.abs(u[0]) < 0.6) & (np.abs(u[1]) < 0.45) & (u[2] > 0.05) & (u[2] < 0.55) & (r2 < 1)] = 4
    for side in (-1, 1):  # anterior-posterior bundles
        labels[_tube(u, (side * 0.55, 0.0, -0.1), axis=1, radius=0.22, extent=(-0.6, 0.6))] = 5
    for side in (-1, 1):  # superior-inferior bundles, like the corticospinal tracts
        labels[_tube(u, (side * 0.25, -0.35, 0.0), axis=2, radius=0.18, extent=(-0.8, 0.0))] = 6
    # An oblique bundle in the axial plane, along (i + j) / sqrt(2).
    along = (u[0] + (u[1] - 0.45)) / np.sqrt(2)
    across = (u[0] - (u[1] - 0.45)) / np.sqrt(2)
    labels[(np.abs(along) < 0.4) & (across**2 + (u[2] + 0.45) ** 2 < 0.18**2)] = 7
    for side in (-1, 1):  # ventricles
        labels[((u[0] - side * 0.14) / 0.09) ** 2 + ((u[1] - 0.1) / 0.32) ** 2 + ((u[2] + 0.1) / 0.14) ** 2 < 1] = 3
    return labels


def _tensor_evecs(direction: Sequence[float]) -> np.ndarray:
    """Eigenvectors (columns) with the first along ``direction``."""
    e1 = np.asarray(direction, dtype=np.float64)
    e1 = e1 / np.linalg.norm(e1)
    helper = np.array([0.0, 0.0, 1.0]) if abs(e1[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e2 = np.cross(e1, helper)
    e2 /= np.linalg.norm(e2)
    return np.column_stack([e1, e2, np.cross(e1, e2)])


def tissue_signals(bvals: np.ndarray, bvecs: np.ndarray, s0: float) -> np.ndarray:
    """Noise-free signal of every tissue: shape (n_labels, n_volumes), from ``dipy.sims``."""
    from dipy.core.gradients import gradient_table
    from dipy.sims.voxel import single_tensor

    gtab = gradient_table(bvals, bvecs=bvecs, b0_threshold=10)
    signals = np.zeros((max(TISSUES) + 1, len(bvals)))
    for label, tissue in TISSUES.items():
        if tissue.s0 > 0:
            signals[label] = single_tensor(gtab, S0=s0 * tissue.s0, evals=np.array(tissue.evals),
                                           evecs=_tensor_evecs(tissue.direction))
    return signals


def noise_sigma(s0: float, snr: float) -> float:
    """Standard deviation of each Gaussian component of the Rician noise: dipy's ``S0 / snr``."""
    return s0 / snr


def iter_volumes(labels: np.ndarray, bvals: np.ndarray, bvecs: np.ndarray, snr: float | None,
                 s0: float = 1000.0, seed: int = 0, dtype: str = "int16",
                 scale: tuple[float, float] | None = None) -> Iterator[np.ndarray]:
    """Yield the noisy volumes in order, one at a time, as stored on disk.

    Volume ``v`` draws its noise from ``numpy.random.default_rng([seed, v])``.
    With ``scale = (slope, inter)`` the stored values are ``(signal - inter) / slope``
    (a reader applying NIfTI's ``scl_slope``/``scl_inter`` gets the signal back).
    Integer dtypes round to the nearest integer (clipped to the type's range),
    like scanner output.
    """
    from dipy.sims.voxel import add_noise

    signals = tissue_signals(bvals, bvecs, s0)
    out_dtype = np.dtype(dtype)
    for v in range(len(bvals)):
        clean = signals[labels, v]
        noisy = clean if snr is None else add_noise(clean, snr, s0, noise_type="rician",
                                                    rng=np.random.default_rng([seed, v]))
        if scale is not None:
            noisy = (noisy - scale[1]) / scale[0]
        if out_dtype.kind in "iu":
            info = np.iinfo(out_dtype)
            noisy = np.clip(np.rint(noisy), info.min, info.max)
        yield noisy.astype(out_dtype)


def true_maps(labels: np.ndarray) -> dict[str, np.ndarray]:
    """True FA and MD maps (float64) of a label grid."""
    fa = np.array([TISSUES[t].fa if t in TISSUES else 0.0 for t in range(max(TISSUES) + 1)])
    md = np.array([TISSUES[t].md if t in TISSUES else 0.0 for t in range(max(TISSUES) + 1)])
    return {"fa": fa[labels], "md": md[labels]}


def _write_scaled(path: Path, volumes: Iterator[np.ndarray], shape: tuple[int, ...], dtype: str,
                  affine: np.ndarray, scale: tuple[float, float]) -> None:
    """A single-file NIfTI-1 whose header carries ``scl_slope``/``scl_inter``, volume by volume.

    nibabel's own writer recomputes the scaling from the data on save, so the
    header is written here (as :func:`scilens.io.nifti.write_nifti_volumes` does,
    with the scaling set).
    """
    import nibabel as nib

    header = nib.Nifti1Image(np.zeros((1, 1, 1), dtype=dtype), affine).header
    header.set_data_dtype(dtype)
    header.set_data_shape(shape)
    header.set_slope_inter(*scale)
    header.set_data_offset(352)  # 348-byte header + 4-byte extension flag
    with nib.openers.ImageOpener(str(path), "wb") as fileobj:
        header.write_to(fileobj)
        fileobj.write(b"\0" * (header.get_data_offset() - fileobj.tell()))
        for volume in volumes:
            fileobj.write(np.asarray(volume, dtype=dtype).tobytes(order="F"))


@dataclass(frozen=True)
class PhantomFiles:
    """Where a written phantom is, and what it is."""

    subject: str
    nifti: Path
    bval: Path
    bvec: Path
    labels: Path
    fa: Path
    md: Path
    shape: tuple[int, int, int, int]
    snr: float | None
    s0: float


def write_phantom(directory: str | Path, subject: str = "phantom", shape: Sequence[int] = (96, 96, 60),
                  gradients: str = "single_shell", snr: float | None = 30.0, s0: float = 1000.0,
                  seed: int = 0, dtype: str = "int16", voxel_mm: float = 2.0,
                  compressed: bool = True, volumes: Sequence[int] | None = None,
                  scale: tuple[float, float] | None = None) -> PhantomFiles:
    """Write a phantom subject: ``<subject>.nii[.gz]``, ``.bval``, ``.bvec`` and its truth.

    Parameters
    ----------
    directory : str or Path
        Where to write; created if missing.
    subject : str
        File stem (the subject's name for ``scilens neuro``).
    shape : sequence of int
        Grid size (i, j, k) in voxels.
    gradients : {'single_shell', 'multi_shell'}
        The acquisition, see :func:`acquisition`.
    snr : float or None
        b0 signal-to-noise ratio of white matter; None for noise-free data.
    s0 : float
        b0 signal of white matter.
    seed : int
        Noise seed.
    dtype : str
        On-disk data type: ``int16`` like most scanners, or any other NIfTI
        numeric type (``uint8``, ``int32``, ``float32``, ``float64``, ...).
    voxel_mm : float
        Isotropic voxel size for the affine.
    compressed : bool
        Write ``.nii.gz`` (else ``.nii``).
    volumes : sequence of int, optional
        Keep only these volumes of the acquisition (in this order), e.g. a
        b0 and a dozen directions for a cheap test subject.
    scale : (float, float), optional
        ``(scl_slope, scl_inter)`` to write in the header; the stored values
        are scaled so that a reader applying them gets the phantom's signal.

    Truth files: ``<subject>_labels.nii.gz`` (tissue labels), ``<subject>_fa_true.nii.gz``
    and ``<subject>_md_true.nii.gz``.
    """
    from scilens.io.nifti import write_nifti, write_nifti_volumes

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    labels = tissue_labels(shape)
    bvals, bvecs = acquisition(gradients)
    if volumes is not None:
        keep = np.asarray(volumes, dtype=int)
        bvals, bvecs = bvals[keep], bvecs[keep]
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = -voxel_mm * (np.asarray(labels.shape) - 1) / 2  # world origin at the grid centre
    full_shape = (*labels.shape, len(bvals))
    nifti = directory / f"{subject}.nii{'.gz' if compressed else ''}"
    stored = iter_volumes(labels, bvals, bvecs, snr, s0, seed, dtype, scale)
    if scale is None:
        write_nifti_volumes(nifti, stored, full_shape, dtype, affine)
    else:
        _write_scaled(nifti, stored, full_shape, dtype, affine, scale)
    bval, bvec = directory / f"{subject}.bval", directory / f"{subject}.bvec"
    np.savetxt(bval, bvals[None, :], fmt="%g")
    np.savetxt(bvec, bvecs.T, fmt="%.8f")
    truth = true_maps(labels)
    paths = {name: directory / f"{subject}_{name}.nii.gz" for name in ("labels", "fa_true", "md_true")}
    write_nifti(paths["labels"], labels, affine)
    write_nifti(paths["fa_true"], truth["fa"], affine)
    write_nifti(paths["md_true"], truth["md"], affine)
    return PhantomFiles(subject, nifti, bval, bvec, paths["labels"], paths["fa_true"], paths["md_true"],
                        full_shape, snr, s0)
