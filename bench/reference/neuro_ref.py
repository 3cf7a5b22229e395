"""The neuroscience benchmark's single-process reference: the public script's steps, run by scilens' pipeline.

Mirrors ``neuroscience/ref/ref.py`` of the dissertation's benchmark repository
(github.com/parmitam/image_analytics), step for step, on dipy 1.12, calling
the per-subject functions of :mod:`scilens.neuro.pipeline` (the ones the Spark
job's stages call) with the script's parameters, which are their defaults:

1. load the 4-D image (``img.get_data()`` there: the on-disk values, scaled
   when the header says so; here :func:`~scilens.neuro.pipeline.read_subject`)
   and the FSL gradient files; ``gradient_table(bvals, bvecs, b0_threshold=10)``;
2. ``mean_b0 = np.mean(data[..., gtab.b0s_mask], -1)`` and
   ``median_otsu(mean_b0, 4, 2, False, vol_idx=np.where(gtab.b0s_mask), dilate=1)``
   (median_radius=4, numpass=2, autocrop=False):
   :func:`~scilens.neuro.pipeline.segment_subject`, whose mean is summed in
   float64 and so is numpy's mean bit for bit on integer data or one b0
   volume (every dataset here); it also refuses gradients that are not physical;
3. ``sigma = estimate_sigma(data)``, ``nlmeans(data, sigma=sigma, mask=mask, num_threads=...)``
   (the script passed 8 threads, every core of its machine; ``None`` here means
   every core of this one): :func:`~scilens.neuro.pipeline.denoise_subject`,
   volume by volume as dipy's 4-D calls do it (``tests/neuro/test_kernels.py``
   checks they are equal);
4. ``TensorModel(gtab).fit(denoised, mask=mask)`` -> FA and MD:
   :func:`~scilens.neuro.pipeline.fit_subject`.

The only knobs are ``b0_threshold`` (10 in the script; dipy's ``small_101D``
has no b-value <= 10, so it needs a larger one) and ``num_threads``. dipy
1.12's default ``blockwise`` non-local means gives different values from run
to run with more than one thread, so equality checks use ``num_threads=1``.

Run as a script: ``python -m bench.reference.neuro_ref IMAGE BVAL BVEC OUTDIR``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class ReferenceResult:
    """Everything the reference computes, and how long each step took (seconds)."""

    affine: np.ndarray
    mean_b0: np.ndarray
    mask: np.ndarray
    sigma: np.ndarray
    denoised: np.ndarray
    fa: np.ndarray
    md: np.ndarray
    evals: np.ndarray
    seconds: dict[str, float] = field(default_factory=dict)


def run_reference(image: str | Path, bval: str | Path, bvec: str | Path, b0_threshold: float = 10,
                  num_threads: int | None = None) -> ReferenceResult:
    """Run the reference pipeline on one subject."""
    from scilens.neuro import pipeline
    from scilens.neuro.denoise import DenoiseConfig
    from scilens.neuro.dti import TensorFitConfig
    from scilens.neuro.segment import SegmentConfig

    seconds = {}
    start = time.perf_counter()
    subject = pipeline.read_subject(image, bval_path=bval, bvec_path=bvec, max_volume_mb=None)
    seconds["load"] = time.perf_counter() - start

    start = time.perf_counter()
    seg = pipeline.segment_subject(subject, b0_threshold, SegmentConfig())
    seconds["segment"] = time.perf_counter() - start

    start = time.perf_counter()
    denoised, sigma = pipeline.denoise_subject(subject.data, seg.mask, DenoiseConfig(), num_threads)
    seconds["denoise"] = time.perf_counter() - start

    start = time.perf_counter()
    maps = pipeline.fit_subject(denoised, seg.mask, seg.gtab, TensorFitConfig())
    seconds["fit"] = time.perf_counter() - start
    return ReferenceResult(subject.affine, seg.mean_b0, seg.mask, sigma, denoised, maps.fa, maps.md, maps.evals,
                           seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image")
    parser.add_argument("bval")
    parser.add_argument("bvec")
    parser.add_argument("outdir")
    parser.add_argument("--b0-threshold", type=float, default=10)
    parser.add_argument("--threads", type=int, default=None, help="nlmeans threads (default: every core)")
    args = parser.parse_args(argv)
    import nibabel as nib

    result = run_reference(args.image, args.bval, args.bvec, args.b0_threshold, args.threads)
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    nib.save(nib.Nifti1Image(result.mask.astype(np.uint8), result.affine), str(out / "mask.nii.gz"))
    nib.save(nib.Nifti1Image(result.fa, result.affine), str(out / "fa.nii.gz"))
    nib.save(nib.Nifti1Image(result.md, result.affine), str(out / "md.nii.gz"))
    result.seconds["save"] = time.perf_counter() - start
    print(" ".join(f"{k}={v:.2f}s" for k, v in result.seconds.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
