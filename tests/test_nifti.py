"""NIfTI ingest equals nibabel voxel for voxel, with the right affine and gradient table."""

from __future__ import annotations

import gzip
import shutil

import nibabel as nib
import numpy as np
import pytest
from dipy.core.gradients import gradient_table
from dipy.io.gradients import read_bvals_bvecs

from scilens.core import tensor
from scilens.io import nifti


def _collect(volumes):
    rows = sorted(volumes.collect(), key=lambda r: (r.subject, r.volume))
    return rows


def test_small_64d_equals_nibabel(spark, small_64d):
    image_path, bval_path, bvec_path = small_64d
    volumes, rejected = nifti.read_volumes(spark, [str(image_path)])
    assert rejected.count() == 0
    rows = _collect(volumes)
    img = nib.load(str(image_path))
    expected = np.asanyarray(img.dataobj)
    assert len(rows) == expected.shape[3] == 65
    stacked = np.stack([tensor.decode(r.data) for r in rows], axis=-1)
    assert stacked.dtype == expected.dtype
    assert np.array_equal(stacked, expected)
    for r in rows:
        assert np.array_equal(tensor.decode(r.affine), img.affine)
        assert r.voxel_size == pytest.approx([float(z) for z in img.header.get_zooms()[:3]])
        assert r.subject == "small_64D" and r.n_volumes == 65
    bvals, bvecs = read_bvals_bvecs(str(bval_path), str(bvec_path))
    row_bvals, row_bvecs = nifti.gradient_arrays([r.bval for r in rows], [r.bvec for r in rows])
    assert np.array_equal(row_bvals, bvals)
    assert np.isnan(bvecs[0]).all()  # the file says "nan nan nan" for the b0 volume
    assert np.array_equal(row_bvecs, bvecs, equal_nan=True)
    # The gradient table rebuilt from rows is dipy's.
    gtab = gradient_table(row_bvals, bvecs=row_bvecs, b0_threshold=10)
    ref = gradient_table(bvals, bvecs=bvecs, b0_threshold=10)
    assert np.array_equal(gtab.b0s_mask, ref.b0s_mask) and np.allclose(gtab.bvecs, ref.bvecs)


def test_gzip_streaming_and_scaling_match_nibabel(tmp_path, small_64d):
    image_path = small_64d[0]
    gz = tmp_path / "sub01.nii.gz"
    with open(image_path, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    img = nib.load(str(gz))
    volumes = [v for _, v in zip(range(100), nifti.iter_volumes(gz)[1])]
    assert np.array_equal(np.stack(volumes, -1), np.asanyarray(img.dataobj))

    # A scaled image (slope/intercept) gives nibabel's scaled floats.
    data = np.arange(4 * 3 * 2 * 3, dtype=np.int16).reshape(4, 3, 2, 3)
    scaled = nib.Nifti1Image(data, np.eye(4))
    scaled.header.set_slope_inter(0.5, -3.0)
    path = tmp_path / "scaled.nii"
    nib.save(scaled, str(path))
    loaded = np.asanyarray(nib.load(str(path)).dataobj)
    ours = np.stack(list(nifti.iter_volumes(path)[1]), -1)
    assert ours.dtype == loaded.dtype and np.array_equal(ours, loaded)


def test_side_files_and_writer(tmp_path, small_64d):
    image_path, bval_path, bvec_path = small_64d
    assert nifti.find_gradient_files(image_path) == (bval_path, bvec_path)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-90, -126, -72]
    data = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    out = nifti.write_nifti(tmp_path / "fa.nii.gz", data, affine)
    back = nib.load(str(out))
    assert np.array_equal(back.get_fdata(dtype=np.float32), data)
    assert np.array_equal(back.affine, affine)
