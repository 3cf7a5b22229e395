"""The pure kernels: per-volume and per-block pieces give exactly what dipy's whole-subject calls give."""

from __future__ import annotations

import re

import nibabel as nib
import numpy as np
import pytest
from dipy.core.gradients import gradient_table
from dipy.data import get_fnames
from dipy.denoise.nlmeans import nlmeans
from dipy.denoise.noise_estimate import estimate_sigma
from dipy.io.gradients import read_bvals_bvecs
from dipy.reconst.dti import TensorModel
from dipy.segment.mask import median_otsu
from dipy.sims.voxel import single_tensor

from scilens.core import tensor
from scilens.neuro.denoise import DenoiseConfig, denoise_volume, estimate_volume_sigma
from scilens.neuro.dti import TensorFitConfig, fit_tensors
from scilens.neuro.gradients import b0_volumes, check_gradients, make_gradient_table
from scilens.neuro.segment import B0Sum, brain_mask
from scilens.synth import dmri


@pytest.fixture(scope="module")
def subject():
    """small_64D with the reference's gradient table and mask."""
    image, bval, bvec = get_fnames(name="small_64D")
    data = np.asanyarray(nib.load(str(image)).dataobj)
    bvals, bvecs = read_bvals_bvecs(str(bval), str(bvec))
    gtab = gradient_table(bvals, bvecs=bvecs, b0_threshold=10)
    mean_b0 = np.mean(data[..., gtab.b0s_mask], -1)
    _, mask = median_otsu(mean_b0, median_radius=4, numpass=2, dilate=1)
    return data, gtab, mean_b0, mask


@pytest.mark.parametrize("method", ["blockwise", "classic"])
def test_volume_by_volume_denoising_equals_the_4d_call(subject, method):
    data, _, _, mask = subject
    sigma = estimate_sigma(data)
    whole = nlmeans(data, sigma=sigma, mask=mask, num_threads=1, method=method)
    config = DenoiseConfig(method=method)
    for v in range(data.shape[-1]):
        assert estimate_volume_sigma(data[..., v]) == sigma[v]
        out = denoise_volume(data[..., v], mask, config)
        assert out.data.dtype == data.dtype
        assert np.array_equal(out.data, whole[..., v]), f"volume {v}"


def test_block_fits_equal_the_whole_masked_fit(subject):
    data, gtab, _, mask = subject
    whole = TensorModel(gtab).fit(data, mask=mask)
    voxels = np.argwhere(mask)
    order = np.random.default_rng(0).permutation(len(voxels))
    for part in np.array_split(order, 7):  # arbitrary voxel sets, like blocks
        ijk = tuple(voxels[part].T)
        fit = fit_tensors(data[ijk], gtab, TensorFitConfig())
        assert np.array_equal(fit.fa, whole.fa[ijk])
        assert np.array_equal(fit.md, whole.md[ijk])
        assert np.array_equal(fit.evals, whole.evals[ijk])
    assert np.all(whole.fa[~mask] == 0) and np.all(whole.md[~mask] == 0)  # what the pipeline writes outside


def test_segmentation_equals_the_reference_call(subject):
    _, _, mean_b0, mask = subject
    assert np.array_equal(brain_mask(mean_b0), mask)
    assert mask.dtype == bool and 0 < mask.sum() < mask.size


def test_b0_sums_merged_in_any_order_equal_numpy_mean():
    rng = np.random.default_rng(1)
    volumes = rng.integers(0, 4000, size=(6, 5, 4, 7)).astype(np.int16)
    for split in ([7], [3, 4], [1, 1, 5]):
        parts, start = [], 0
        for n in split:
            part = B0Sum()
            for v in range(start, start + n):
                part.add(volumes[..., v])
            parts.append(part)
            start += n
        total = B0Sum()
        for part in reversed(parts):
            total.merge(part)
        mean = total.mean()
        # Integer values add exactly in float64, so every split gives numpy's bits.
        assert mean.dtype == np.float64 and np.array_equal(mean, np.mean(volumes, -1))
    floats = volumes.astype(np.float32) / 7
    acc = B0Sum()
    for v in range(7):
        acc.add(floats[..., v])
    assert acc.mean().dtype == np.float32
    np.testing.assert_allclose(acc.mean(), np.mean(floats, -1), rtol=2 * np.finfo(np.float32).eps)
    with pytest.raises(ValueError, match="no b0 volume"):
        B0Sum().mean()


def test_gradient_tables_are_checked():
    _, bval, bvec = get_fnames(name="small_101D")
    bvals, bvecs = read_bvals_bvecs(str(bval), str(bvec))
    with pytest.raises(ValueError, match=re.escape("no b0 volume: no b-value is <= b0_threshold=10 "
                                                   "(the smallest is 15)")):
        make_gradient_table(bvals, bvecs, 10)
    assert make_gradient_table(bvals, bvecs, 50).b0s_mask.sum() == 1
    assert b0_volumes(np.array([0, 10, 10.5, np.nan]), 10).tolist() == [True, True, False, False]
    with pytest.raises(ValueError, match=r"no b-value for volume\(s\) 2"):
        make_gradient_table(np.array([0, 1000, np.nan]), np.eye(3), 10)
    unit = np.vstack([np.zeros(3), np.eye(3), np.eye(3)])
    with pytest.raises(ValueError, match=re.escape("b-vector of diffusion-weighted volume(s) 1 (2) in x.bvec is "
                                                   "not of unit length")):
        make_gradient_table(np.array([0, *[1000] * 6]), unit * [[1], [2], [1], [1], [1], [1], [1]], 10,
                            "x.bval", "x.bvec")
    with pytest.raises(ValueError, match=re.escape("5 diffusion-weighted volume(s): a diffusion tensor has six")):
        make_gradient_table(np.array([0, *[1000] * 5]), unit[:6], 10)


def test_unphysical_gradients_are_refused_naming_file_volumes_and_rule():
    """dipy takes a negative b-value for a b0 volume (``b <= b0_threshold``): the fit is then wrong, silently."""
    _, bval, bvec = get_fnames(name="small_64D")
    bvals, bvecs = read_bvals_bvecs(str(bval), str(bvec))
    gtab = make_gradient_table(bvals, bvecs, 10, "s.bval", "s.bvec")  # a real table passes (NaN b0 vector)
    assert np.isnan(bvecs[0]).all() and gtab.b0s_mask.sum() == 1
    negative = bvals.copy()
    negative[[5, 9]] *= -1
    assert gradient_table(negative, bvecs=np.nan_to_num(bvecs), b0_threshold=10).b0s_mask.sum() == 3  # dipy: b0s
    cases = {
        f"negative b-value for volume(s) 5 ({negative[5]:g}), 9 ({negative[9]:g}) in s.bval; b-values are >= 0": (
            negative, bvecs),
        "infinite b-value for volume(s) 2 in s.bval": (np.where(np.arange(65) == 2, np.inf, bvals), bvecs),
        "no b-value for volume(s) 4 in s.bval": (np.where(np.arange(65) == 4, np.nan, bvals), bvecs),
        "no b-vector (NaN) for diffusion-weighted volume(s) 3 in s.bvec": (bvals, np.where(
            (np.arange(65) == 3)[:, None], np.nan, bvecs)),
        "infinite b-vector for volume(s) 0 in s.bvec": (bvals, np.where(
            (np.arange(65) == 0)[:, None], np.inf, bvecs)),
        "b-vector of diffusion-weighted volume(s) 8 (1.05) in s.bvec is not of unit length": (bvals, np.where(
            (np.arange(65) == 8)[:, None], 1.05 * bvecs, bvecs)),
    }
    for message, (vals, vecs) in cases.items():
        with pytest.raises(ValueError, match=re.escape(message)):
            make_gradient_table(vals, vecs, 10, "s.bval", "s.bvec")
        with pytest.raises(ValueError, match=re.escape(message)):
            check_gradients(vals, vecs, 10, "s.bval", "s.bvec")
    # Within dipy's own tolerance a b-vector passes, as the reference takes it.
    check_gradients(bvals, np.where((np.arange(65) == 8)[:, None], 1.009 * bvecs, bvecs), 10)


def test_read_only_float64_volume_is_denoised(subject):
    """Decoded tensors are read-only views; a float64 one reached dipy's Cython kernel as is, which refused it."""
    data, _, _, mask = subject
    volume = data[..., 3].astype(np.float64)
    expected = nlmeans(volume, sigma=estimate_sigma(volume), mask=mask, num_threads=1)
    for dtype in ("float64", "float32", "int16"):
        frozen = tensor.decode(tensor.encode(volume.astype(dtype)))
        frozen_mask = tensor.decode(tensor.encode(mask))
        assert not frozen.flags.writeable and not frozen_mask.flags.writeable
        out = denoise_volume(frozen, frozen_mask)
        assert out.data.dtype == np.dtype(dtype)
        if dtype == "float64":
            assert np.array_equal(out.data, expected)
        assert not frozen.flags.writeable and np.array_equal(frozen, volume.astype(dtype))  # input untouched


def test_phantom_signals_truth_and_noise(tmp_path):
    shape = (24, 22, 16)
    labels = dmri.tissue_labels(shape)
    assert set(np.unique(labels)) == set(dmri.TISSUES)  # every tissue is on the grid
    bvals, bvecs = dmri.acquisition("single_shell")
    assert len(bvals) == 65 and (bvals <= 10).sum() == 1
    assert len(dmri.acquisition("multi_shell")[0]) == 193
    clean = dmri.tissue_signals(bvals, bvecs, s0=1000)
    gtab = gradient_table(bvals, bvecs=bvecs, b0_threshold=10)
    for label in dmri.WHITE_MATTER:  # each bundle's signal is dipy's for a tensor along its direction
        fit = TensorModel(gtab).fit(clean[label])
        assert fit.fa == pytest.approx(dmri.TISSUES[label].fa, abs=1e-6)
        assert abs(fit.evecs[:, 0] @ np.asarray(dmri.TISSUES[label].direction)) == pytest.approx(1, abs=1e-6)
    assert np.allclose(clean[2], single_tensor(gtab, S0=1200, evals=np.array([0.8e-3] * 3)))

    files = dmri.write_phantom(tmp_path, shape=shape, snr=20, s0=1000, seed=4, dtype="float32")
    data = np.asanyarray(nib.load(str(files.nifti)).dataobj)
    assert data.shape == (*shape, 65) and data.dtype == np.float32
    assert np.array_equal(np.asanyarray(nib.load(str(files.fa)).dataobj), dmri.true_maps(labels)["fa"])
    # Background is pure Rician noise of a zero signal: Rayleigh with scale sigma = s0 / snr = 50,
    # mean sigma*sqrt(pi/2), variance (4 - pi)/2 sigma². Five standard errors of the sample mean.
    background = data[labels == 0].astype(np.float64)
    sigma = dmri.noise_sigma(1000, 20)
    stderr = np.sqrt((4 - np.pi) / 2) * sigma / np.sqrt(background.size)
    assert abs(background.mean() - sigma * np.sqrt(np.pi / 2)) < 5 * stderr
    again = dmri.write_phantom(tmp_path / "again", shape=shape, snr=20, s0=1000, seed=4, dtype="float32")
    assert np.array_equal(np.asanyarray(nib.load(str(again.nifti)).dataobj), data)  # seeded per volume
