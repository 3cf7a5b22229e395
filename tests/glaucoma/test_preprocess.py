"""OCT motion correction and exclusion, CFP normalisation and cropping."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from scilens.glaucoma import preprocess as rp
from scilens.synth import retina


def test_exclusion_rule_catches_exactly_the_misaligned_volumes():
    config = rp.AlignmentConfig()
    caught = {}
    for i, kind in enumerate(["", "jump", "blink"] * 6):
        volume = retina.oct_volume(("left", "right")[i % 2], 0.3, np.random.default_rng(i), 8, 64, 80, kind)
        alignment = rp.register_scans(volume, config)
        caught.setdefault(kind, []).append(not alignment.ok)
        if kind == "jump":
            assert "axial shift" in alignment.reason
        if kind == "blink":
            assert "correlate at" in alignment.reason
    assert caught == {"": [False] * 6, "jump": [True] * 6, "blink": [True] * 6}


def test_registration_recovers_and_undoes_known_shifts():
    volume = retina.oct_volume("left", 0.0, np.random.default_rng(11), 6, 128, 160)
    # Move scans axially by known amounts (within the correctable range) on top of the generator's own motion.
    injected = np.array([0, 6, -4, 10, 2, -8])
    moved = np.stack([np.roll(scan, dy, axis=0) for scan, dy in zip(volume, injected)])
    before = rp.register_scans(volume, rp.AlignmentConfig())
    after = rp.register_scans(moved, rp.AlignmentConfig())
    assert before.ok and after.ok
    # Registration measures the injected steps on top of the natural ones, to the pixel.
    assert np.abs((before.steps[:, 0] - after.steps[:, 0]) - np.diff(injected)).max() <= 1
    # The correcting shifts undo the injected ones (relative to the central scan, which stays put).
    correction = after.shifts[:, 0] - before.shifts[:, 0]
    assert np.abs(correction + (injected - injected[3])).max() <= 1
    # And the aligned scans put the retina where the aligned original has it (smoothed: speckle moves with
    # every pixel of error, the retina does not).
    a = ndimage.gaussian_filter(rp.align_volume(moved, after).astype(float), (0, 2, 2))
    b = ndimage.gaussian_filter(np.roll(rp.align_volume(volume, before), injected[3], axis=1).astype(float),
                                (0, 2, 2))
    inner = np.s_[:, 24:-24, 8:-8]
    unaligned = ndimage.gaussian_filter(moved.astype(float), (0, 2, 2)) - ndimage.gaussian_filter(
        np.roll(volume, injected[3], axis=1).astype(float), (0, 2, 2))
    assert np.abs(a - b)[inner].mean() < 0.3 * np.abs(unaligned)[inner].mean()


def test_oct_step_flips_crops_resizes_and_rejects_what_it_cannot_align():
    config = rp.OctPreprocessConfig(image_size=32)
    left = retina.oct_volume("left", 0.0, np.random.default_rng(5), 4, 64, 80)
    scans, alignment = rp.preprocess_oct(left, "left", config)
    assert scans.shape == (4, 32, 32) and scans.dtype == np.uint8 and alignment.ok
    # The RNFL thickens towards the optic nerve, so the retinal surface rises on the nasal side: on the
    # left of a left eye's scans, on the right of a right eye's, and on the left of both once right eyes
    # are flipped.
    def nasal_rise(scans: np.ndarray) -> float:
        smooth = ndimage.gaussian_filter(scans.astype(float), (0, 1, 1))
        ilm = np.argmax(smooth > 0.5 * np.percentile(smooth, 99), axis=1)  # (scan, column)
        return float(ilm[:, 16:].mean() - ilm[:, :16].mean())  # > 0: surface higher on the left

    unflipped = rp.OctPreprocessConfig(image_size=32, flip_eye="none")
    for seed in range(3):
        left = retina.oct_volume("left", 0.0, np.random.default_rng(seed), 4, 64, 80)
        right = retina.oct_volume("right", 0.0, np.random.default_rng(seed), 4, 64, 80)
        assert nasal_rise(rp.preprocess_oct(left, "left", config)[0]) > 0
        assert nasal_rise(rp.preprocess_oct(right, "right", config)[0]) > 0
        assert nasal_rise(rp.preprocess_oct(right, "right", unflipped)[0]) < 0
    with pytest.raises(rp.OctAlignmentError, match="cannot be aligned by translation"):
        rp.preprocess_oct(retina.oct_volume("left", 0.0, np.random.default_rng(5), 8, 64, 80, "blink"), "left", config)


def test_fundus_step_crops_around_the_disc_on_one_side_for_both_eyes():
    config = rp.FundusPreprocessConfig(image_size=48, crop_fraction=0.4)
    for eye in ("left", "right"):
        photo, row, col = retina.fundus_photo(eye, 0.6, np.random.default_rng(2), 160)
        crop, disc = rp.preprocess_fundus(photo, eye, config)
        assert crop.shape == (48, 48, 3) and crop.dtype == np.uint8
        # The paper flips left photos: every disc ends up on the right of the photo, found where it was drawn.
        assert disc[1] > 80
        expected_col = col if eye == "right" else 159 - col
        assert np.hypot(disc[0] - row, disc[1] - expected_col) < 0.5 * 0.065 * 160
        # The crop is centred on the disc: its brightest region is the middle of the crop.
        lum = crop.astype(float).mean(axis=2)
        centre = np.array(np.unravel_index(np.argmax(lum), lum.shape))
        assert np.hypot(*(centre - 24)) < 8


def test_local_average_subtraction_removes_slow_lighting():
    photo, _, _ = retina.fundus_photo("left", 0.4, np.random.default_rng(3), 128)
    ramp = np.linspace(0.6, 1.2, 128)[None, :, None]  # a lighting gradient across the photo
    lit = np.clip(photo * ramp, 0, 255).astype(np.uint8)
    a, b = rp.subtract_local_average(photo), rp.subtract_local_average(lit)
    inner = np.s_[24:-24, 24:-24]
    # The gradient changes the photo by up to 40 % but the normalised images by a few grey levels only
    # (vessels and disc keep their contrast scaled by the local brightness).
    assert np.abs(lit.astype(float) - photo)[inner].mean() > 15
    assert np.abs(a.astype(float) - b)[inner].mean() < 6


@pytest.mark.parametrize("height, width", [(512, 650), (224, 224), (128, 160)])
def test_retinal_band_finds_the_tissue_between_ilm_and_sclera(height, width):
    for seed in range(3):
        for thinning in (0.0, 0.45):
            # One scan: the generator's between-scan motion is then zero, so its boundaries are the truth.
            truth = retina.layer_boundaries(1, width, "left", thinning, np.random.default_rng(seed))[:, 0] * height
            scan = retina.oct_volume("left", thinning, np.random.default_rng(seed), 1, height, width)[0]
            top, bottom = rp.retinal_band(scan)
            assert abs(top - truth[0].min()) <= 0.02 * height, (seed, thinning)
            assert abs(bottom - truth[-1].max()) <= 0.02 * height, (seed, thinning)
