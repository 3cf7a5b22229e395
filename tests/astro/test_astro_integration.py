"""``scilens astro`` through spark-submit on a real standalone cluster equals the single-process reference."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from tests.astro.conftest import TINY_SKYMAP
from tests.cluster import standalone_cluster, submit

pytestmark = pytest.mark.integration


def test_astro_on_standalone_cluster_equals_reference(survey_dir, astro_config, tmp_path):
    from bench.reference import astro_ref

    inputs = tmp_path / "images.txt"  # a manifest: two visits keep it quick
    inputs.write_text("\n".join(str(p) for p in sorted((survey_dir / "images").glob("v000[01]_*.fits"))) + "\n")
    ref = tmp_path / "reference"
    astro_ref.run(str(inputs), ref, astro_config)

    out = tmp_path / "cluster"
    with standalone_cluster(tmp_path / "cluster-state") as master:
        done = submit(master, "astro", "--input", str(inputs), "--output", str(out), "--config",
                      "conf/astro_pipeline.yaml", *[a for s in TINY_SKYMAP for a in ("--set", s)])
        assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["spark_master"] == master  # it really ran there
    assert manifest["counts"] == {"succeeded": 8, "rejected": 0}
    names = sorted(p.name for p in (out / "coadds").glob("*.fits"))
    assert names == sorted(p.name for p in (ref / "coadds").glob("*.fits")) and len(names) == 4
    for name in names:
        with fits.open(out / "coadds" / name) as a, fits.open(ref / "coadds" / name) as b:
            for plane in ("MASK", "COUNT"):
                assert np.array_equal(a[plane].data, b[plane].data)
            # Executors and the reference are separate processes: float sums may round differently.
            for plane in ("IMAGE", "VARIANCE"):
                np.testing.assert_allclose(a[plane].data, b[plane].data, rtol=1e-5, atol=1e-6 * np.nanmax(
                    np.abs(b[plane].data)), equal_nan=True)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "catalog.parquet"), pd.read_parquet(ref / "catalog.parquet"),
                                  check_exact=False, rtol=1e-5)
