"""NIfTI ingest equals nibabel voxel for voxel, with the right affine and gradient table."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

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


def _header_only(path, shape, dtype, data_bytes: bytes, nifti2: bool = False) -> None:
    """A NIfTI file whose header claims ``shape`` of ``dtype`` but which holds only ``data_bytes`` after it."""
    header = (nib.Nifti2Header if nifti2 else nib.Nifti1Header)()
    header.set_data_dtype(dtype)
    header.set_data_shape(shape)
    offset = 544 if nifti2 else 352
    header.set_data_offset(offset)
    with nib.openers.ImageOpener(str(path), "wb") as handle:
        header.write_to(handle)
        handle.write(b"\0" * (offset - handle.tell()) + data_bytes)


def test_lying_headers_refused_before_reading(tmp_path):
    # The probe's file: 4.4 KB whose header claims 2 GiB per volume (1024^3 int16).
    _header_only(tmp_path / "liar.nii", (1024, 1024, 1024, 1), np.int16, b"\1" * 4000)
    with pytest.raises(ValueError) as info:
        nifti.iter_volumes(tmp_path / "liar.nii")
    message = str(info.value)
    assert str(tmp_path / "liar.nii") in message
    assert f"claims {352 + 2**31} bytes" in message and "holds only 4352 bytes" in message
    # Compressed: the file size bounds nothing, the memory budget per volume does.
    _header_only(tmp_path / "liar.nii.gz", (1024, 1024, 1024, 1), np.int16, b"\1" * 4000)
    with pytest.raises(ValueError, match=r"liar\.nii\.gz: header claims volumes of \(1024, 1024, 1024\) int16, "
                                         r"2048\.0 MiB each in memory, more than the budget of 1024\.0 MiB"):
        nifti.iter_volumes(tmp_path / "liar.nii.gz")
    # Scaling to floats counts: 2 MiB of uint8 on disk are 16 MiB as float64.
    data = np.ones((128, 128, 128), np.uint8)
    scaled = nib.Nifti1Image(data, np.eye(4))
    scaled.header.set_slope_inter(2.0, 1.0)
    nib.save(scaled, str(tmp_path / "scaled.nii"))
    with pytest.raises(ValueError, match=r"16\.0 MiB each in memory, more than the budget of 8\.0 MiB"):
        nifti.iter_volumes(tmp_path / "scaled.nii", max_volume_mb=8)
    assert np.array_equal(next(nifti.iter_volumes(tmp_path / "scaled.nii", max_volume_mb=16)[1]), 2.0 * data + 1)
    # Beyond any memory (NIfTI-2, 2^40 voxels a side): Python ints, no int64 overflow.
    _header_only(tmp_path / "huge.nii", (2**40, 2**40, 2**40, 2**20), np.float64, b"", nifti2=True)
    with pytest.raises(ValueError, match=r"huge\.nii: header claims \d{40,} bytes"):
        nifti.iter_volumes(tmp_path / "huge.nii")


def test_empty_shapes_and_file_problems_are_named(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 0), np.int16), np.eye(4)), str(tmp_path / "novolumes.nii"))
    nib.save(nib.Nifti1Image(np.zeros((0, 10, 10), np.int16), np.eye(4)), str(tmp_path / "flat.nii"))
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2, 2, 2), np.int16), np.eye(4)), str(tmp_path / "five.nii"))
    (tmp_path / "empty.nii").write_bytes(b"")
    (tmp_path / "loop1.nii").symlink_to(tmp_path / "loop2.nii")
    (tmp_path / "loop2.nii").symlink_to(tmp_path / "loop1.nii")
    expected = {
        "novolumes.nii": "4-D image with 0 volumes (shape (4, 4, 4, 0))",
        "flat.nii": "image has an empty dimension (shape (0, 10, 10))",
        "five.nii": "expected a 3-D or 4-D image, got shape (2, 2, 2, 2, 2)",
        "empty.nii": "empty file (0 bytes)",
        "loop1.nii": "cannot open (Too many levels of symbolic links)",
    }
    for name, reason in expected.items():
        with pytest.raises((OSError, ValueError)) as info:
            list(nifti.volume_rows(str(tmp_path / name)))
        assert str(info.value).startswith(f"{tmp_path / name}: {reason}")


def test_zero_byte_image_is_blamed_not_its_gradients(spark, tmp_path):
    for name in ("sub.nii", "sub.bval", "sub.bvec"):
        (tmp_path / name).write_bytes(b"")
    frame = spark.createDataFrame([(str(tmp_path / "sub.nii"), "sub", str(tmp_path / "sub.bval"),
                                    str(tmp_path / "sub.bvec"))], "path string, subject string, bval_path string, "
                                                                   "bvec_path string")
    volumes, rejected = nifti.read_volumes(spark, frame)
    [record] = rejected.collect()
    assert volumes.count() == 0
    assert record.record == "sub"
    assert record.message == f"{tmp_path / 'sub.nii'}: empty file (0 bytes), not a NIfTI image"


@pytest.mark.parametrize(("bvec", "reason"), [
    ("1\n0\n", "sub.bvec: b-vectors must be 3 rows (FSL) or 3 columns of numbers, this file is 2 x 1"),
    ("1 0 0 0\n", "sub.bvec: b-vectors must be 3 rows (FSL) or 3 columns of numbers, this file is 1 x 4"),
    ("0 1\n0 0\n0 0\n", "sub.bval has 1 b-values but {d}/sub.bvec has 2 b-vectors (a 3 x 2 table)"),
    ("", "sub.bvec: empty b-vector file"),
    ("1 x 0\n", "sub.bvec: b-vector file is not a table of numbers"),
])
def test_gradient_messages_state_the_real_mismatch(tmp_path, bvec, reason):
    (tmp_path / "sub.bval").write_text("1000\n")
    (tmp_path / "sub.bvec").write_text(bvec)
    with pytest.raises(ValueError) as info:
        nifti.read_gradients(tmp_path / "sub.bval", tmp_path / "sub.bvec")
    assert reason.format(d=tmp_path) in str(info.value)


def test_nan_and_inf_voxels_read_as_stored(tmp_path):
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    data[0, 0, 0], data[1, 2, 3], data[1, 1, 1] = np.nan, np.inf, -np.inf
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "odd name ü (1).nii"))
    [volume] = nifti.iter_volumes(tmp_path / "odd name ü (1).nii")[1]
    assert volume.dtype == np.float32 and np.array_equal(volume, data, equal_nan=True)


def _error_of(call, user: int | None) -> str:
    """``call()``'s exception as "Type message", run as ``user`` in a forked child if given (root only)."""
    import os

    if user is None:
        try:
            call()
        except Exception as exc:
            return f"{type(exc).__name__} {exc}"
        return "no error"
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop root, report, exit without running any of the parent's cleanup
        try:
            os.setgid(user)
            os.setuid(user)
            text = _error_of(call, None)
        except BaseException as exc:  # anything goes back to the parent
            text = f"child failed: {exc!r}"
        os.write(write_end, text.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        text = pipe.read().decode()
    os.waitpid(pid, 0)
    return text


def test_unreadable_file_says_permission_denied():
    """chmod 000 stops any user but root: when the tests run as root, the read runs as ``nobody``."""
    import os
    import tempfile

    # A directory anyone may enter (pytest's tmp_path is private to its user): the file is reachable, unreadable.
    shared = Path(tempfile.mkdtemp(prefix="scilens-perm-"))
    try:
        shared.chmod(0o755)
        locked = shared / "locked.nii"
        nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.int16), np.eye(4)), str(locked))
        locked.chmod(0)
        text = _error_of(lambda: nifti.iter_volumes(locked), 65534 if os.geteuid() == 0 else None)
        assert text == f"PermissionError {locked}: permission denied (cannot open the file for reading)"
    finally:
        shutil.rmtree(shared)


def test_plan_tasks_groups_small_files_by_size():
    mb = 2**20
    sizes = [100 * mb, 4000, 0, 3 * mb, 70 * mb] + [2000] * 300
    groups = nifti.plan_tasks(sizes, 64 * mb, min_tasks=2)
    assert sorted(i for g in groups for i in g) == list(range(len(sizes)))  # every file, once
    assert groups[:2] == [[0], [4]]  # large files alone, heaviest first
    assert len(groups) == 2 + 5  # 303 small files, 306 MiB counting a MiB a file: five tasks of <= 64 MiB
    loads = [sum(sizes[i] + nifti.FILE_COST_BYTES for i in g) for g in groups[2:]]
    assert max(loads) <= 64 * mb and max(loads) - min(loads) <= 4 * mb  # even, to the largest small file
    # Few small files still use every core; no files, no tasks.
    assert nifti.plan_tasks([10, 10, 10], 64 * mb, min_tasks=2) == [[0, 2], [1]]
    assert nifti.plan_tasks([], 64 * mb, min_tasks=2) == []


def test_many_tiny_files_share_tasks(spark, tmp_path, small_64d):
    """300 tiny files (some bad) and a real subject: a few tasks, not one per file; all good rows, all bad named."""
    good = np.arange(2 * 2 * 2 * 2, dtype=np.int16).reshape(2, 2, 2, 2)
    for i in range(300):
        path = tmp_path / f"tiny{i:03d}.nii"
        if i % 50 == 7:
            path.write_bytes(b"not a nifti file")
        else:
            nib.save(nib.Nifti1Image(good + i, np.eye(4)), str(path))
    shutil.copy(small_64d[0], tmp_path / "real.nii")
    paths = sorted(str(p) for p in tmp_path.iterdir())
    volumes, rejected = nifti.read_volumes(spark, paths)
    # 301 files at 1 MiB each for opening it (1.6 MB of data): ceil(301 / 64) = 5 tasks, not 301.
    assert volumes.rdd.getNumPartitions() == 5
    bad = {f"tiny{i:03d}.nii" for i in range(300) if i % 50 == 7}
    assert {Path(r.path).name for r in rejected.collect()} == bad
    counts = {Path(r.path).name: r["count"] for r in volumes.groupBy("path").count().collect()}
    assert counts == {**{f"tiny{i:03d}.nii": 2 for i in range(300) if f"tiny{i:03d}.nii" not in bad}, "real.nii": 65}
    row = volumes.where(volumes.path == str(tmp_path / "tiny123.nii")).where("volume = 1").first()
    assert np.array_equal(tensor.decode(row.data), good[..., 1] + 123)
