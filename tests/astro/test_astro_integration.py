"""``scilens astro`` through spark-submit on a real standalone cluster equals the single-process reference."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.astro.conftest import TINY_SKYMAP, assert_coadds_equal
from tests.cluster import submit

pytestmark = pytest.mark.integration


def test_astro_on_standalone_cluster_equals_reference(survey_dir, astro_config, tmp_path, standalone_master):
    from bench.reference import astro_ref

    inputs = tmp_path / "images.txt"  # a manifest: two visits keep it quick
    inputs.write_text("\n".join(str(p) for p in sorted((survey_dir / "images").glob("v000[01]_*.fits"))) + "\n")
    ref = tmp_path / "reference"
    astro_ref.run(str(inputs), ref, astro_config)

    out = tmp_path / "cluster"
    master = standalone_master
    done = submit(master, "astro", "--input", str(inputs), "--output", str(out), "--config",
                  "conf/astro.yaml", *[a for s in TINY_SKYMAP for a in ("--set", s)])
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["spark_master"] == master  # it really ran there
    assert manifest["counts"] == {"succeeded": 8, "rejected": 0}
    assert len(assert_coadds_equal(out, ref)) == 4
    pd.testing.assert_frame_equal(pd.read_parquet(out / "catalog.parquet"), pd.read_parquet(ref / "catalog.parquet"),
                                  check_exact=False, rtol=1e-5)
