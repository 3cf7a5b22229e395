"""Demo of the ``neuro`` job: dipy's real small_64D subject and a small generated phantom."""

from __future__ import annotations

import shutil
from pathlib import Path

from scilens.demos.index import Shown
from scilens.demos.run import run_job


def demo(root: Path) -> list[Shown]:
    """Run the pipeline on dipy's real small_64D subject and a small generated phantom."""
    from dipy.data import get_fnames

    from scilens.synth import dmri

    inputs = root / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    for path in get_fnames(name="small_64D"):
        shutil.copy(path, inputs / Path(path).name)
    truth = root / "truth"
    dmri.write_phantom(truth, subject="phantom", shape=(48, 48, 32), snr=30, seed=1)
    for suffix in (".nii.gz", ".bval", ".bvec"):
        shutil.move(truth / f"phantom{suffix}", inputs / f"phantom{suffix}")
    out = root / "output"
    run_job("neuro", inputs, out, ["spark.master=local[2]", "write_denoised=true"])
    from scilens.neuro.pipeline import subject_dir

    return [(out / "report.html", "subjects, rejected inputs, step timings, mid-slice pictures"),
            (subject_dir(out, "small_64D") / "report.png", "dipy's real small_64D: mean b0, brain mask, FA"),
            (subject_dir(out, "phantom") / "report.png", "a 48x48x32 phantom at SNR 30: bundles in four directions"),
            (subject_dir(out, "phantom") / "fa.nii.gz", f"FA; the truth is {truth / 'phantom_fa_true.nii.gz'}"),
            (out / "voxels.parquet", "one row per brain voxel: subject, i, j, k, fa, md, eigenvalues")]
