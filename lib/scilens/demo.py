"""``make demo``: run the scilens jobs end to end on small real and generated data, locally.

    python -m scilens.demo --output demo-output

Inputs are dipy's real ``small_64D`` diffusion MRI subject (shipped with dipy)
and a generated FITS sky image; every job writes into ``<output>/<job>/``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from scilens import cli
from scilens.io import fits as fits_io
from scilens.synth import sky


def prepare_inputs(root: Path) -> Path:
    """Copy dipy's small_64D subject and write one generated FITS image under ``root/inputs``."""
    from dipy.data import get_fnames

    inputs = root / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    for path in get_fnames(name="small_64D"):
        shutil.copy(path, inputs / Path(path).name)
    image = sky.make_image(shape=(512, 512), n_sources=60, seed=7)
    fits_io.write_image(inputs / "field_ccd0.fits", image.flux, image.variance, image.mask, image.wcs_header)
    image.truth.to_csv(inputs / "field_ccd0_truth.csv", index=False)
    return inputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scilens.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="demo-output", help="directory for inputs and results")
    args = parser.parse_args(argv)
    root = Path(args.output).absolute()
    inputs = prepare_inputs(root)
    code = cli.main(["ingest", "--input", str(inputs), "--output", str(root / "ingest")])
    if code != 0:
        print(f"demo: ingest failed (exit {code})", file=sys.stderr)
        return code
    print(f"""
scilens demo finished. Look at:
  {root / 'ingest' / 'volumes.parquet'}   dMRI volumes of dipy's small_64D (one row per volume)
  {root / 'ingest' / 'images.parquet'}    the generated FITS image (flux, variance, mask, WCS)
  {root / 'ingest' / 'manifest.json'}     inputs, config, versions, timings and counts of the run
Read a table with:  .venv/bin/python -c "import pandas as pd; print(pd.read_parquet('{root}/ingest/volumes.parquet'))"
""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
