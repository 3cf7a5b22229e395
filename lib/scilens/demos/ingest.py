"""Demo of the ``ingest`` job: dipy's real small_64D subject and a generated FITS image."""

from __future__ import annotations

import shutil
from pathlib import Path

from scilens.demos.index import Shown
from scilens.demos.run import run_job
from scilens.io import fits as fits_io


def demo(root: Path) -> list[Shown]:
    """Ingest dipy's real small_64D subject and a generated FITS image."""
    from dipy.data import get_fnames

    from scilens.synth import sky

    inputs = root / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    for path in get_fnames(name="small_64D"):
        shutil.copy(path, inputs / Path(path).name)
    image = sky.make_image(shape=(512, 512), n_sources=60, seed=7)
    fits_io.write_image(inputs / "field_ccd0.fits", image.flux, image.variance, image.mask, image.wcs_header)
    out = root / "output"
    run_job("ingest", inputs, out)
    return [(out / "volumes.parquet", "dMRI volumes of dipy's small_64D, one row per volume"),
            (out / "images.parquet", "a generated FITS image (flux, variance, mask, WCS)"),
            (out / "manifest.json", "inputs, config, versions, timings and counts of the run")]
