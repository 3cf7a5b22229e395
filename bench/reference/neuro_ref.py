"""The neuroscience benchmark's single-process reference, as its public script does it.

Mirrors ``neuroscience/ref/ref.py`` of the dissertation's benchmark repository
(github.com/parmitam/image_analytics), step for step, on dipy 1.12:

1. load the 4-D image (``img.get_data()`` there: the on-disk values, here
   ``dipy.io.image.load_nifti``, which gives the same array) and the FSL
   gradient files; ``gradient_table(bvals, bvecs, b0_threshold=10)``;
2. ``mean_b0 = np.mean(data[..., gtab.b0s_mask], -1)`` and
   ``median_otsu(mean_b0, 4, 2, False, vol_idx=np.where(gtab.b0s_mask), dilate=1)``
   (median_radius=4, numpass=2, autocrop=False);
3. ``sigma = estimate_sigma(data)``, ``nlmeans(data, sigma=sigma, mask=mask, num_threads=...)``
   (the script passed 8 threads, every core of its machine; ``None`` here means
   every core of this one);
4. ``TensorModel(gtab).fit(denoised, mask=mask)`` -> FA and MD.

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
    from dipy.core.gradients import gradient_table
    from dipy.denoise.nlmeans import nlmeans
    from dipy.denoise.noise_estimate import estimate_sigma
    from dipy.io.gradients import read_bvals_bvecs
    from dipy.io.image import load_nifti
    from dipy.reconst.dti import TensorModel
    from dipy.segment.mask import median_otsu

    seconds = {}
    start = time.perf_counter()
    data, affine = load_nifti(str(image))
    bvals, bvecs = read_bvals_bvecs(str(bval), str(bvec))
    seconds["load"] = time.perf_counter() - start

    start = time.perf_counter()
    gtab = gradient_table(bvals, bvecs=bvecs, b0_threshold=b0_threshold)
    mean_b0 = np.mean(data[..., gtab.b0s_mask], -1)
    _, mask = median_otsu(mean_b0, median_radius=4, numpass=2, autocrop=False,
                          vol_idx=np.where(gtab.b0s_mask), dilate=1)
    seconds["segment"] = time.perf_counter() - start

    start = time.perf_counter()
    sigma = estimate_sigma(data)
    denoised = nlmeans(data, sigma=sigma, mask=mask, num_threads=num_threads)
    seconds["denoise"] = time.perf_counter() - start

    start = time.perf_counter()
    ten_fit = TensorModel(gtab).fit(denoised, mask=mask)
    fa, md, evals = ten_fit.fa, ten_fit.md, ten_fit.evals
    seconds["fit"] = time.perf_counter() - start
    return ReferenceResult(affine, mean_b0, mask, sigma, denoised, fa, md, evals, seconds)


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
