"""The synthetic retinas carry the glaucoma signal in their pixels, where the anatomy says it is."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from scilens.glaucoma.preprocess import find_optic_disc
from scilens.io import retina as retina_io
from scilens.synth import retina


def _ilm_rows(scan: np.ndarray) -> np.ndarray:
    """Per column: the row of the inner limiting membrane, measured on the image.

    It is where the smoothed intensity first rises above halfway between the dark vitreous and the
    bright retina (the RNFL is among the brightest layers).
    """
    smooth = ndimage.gaussian_filter(scan.astype(float), (1.0, 3.0))
    threshold = (np.median(smooth[:10]) + np.percentile(smooth, 99)) / 2
    return np.argmax(smooth > threshold, axis=0).astype(float)


def test_glaucoma_thins_the_inner_retina_most_at_the_superior_and_inferior_scans():
    n, h, w, thinning = 9, 256, 200, 0.5
    healthy = retina.oct_volume("left", 0.0, np.random.default_rng(3), n, h, w)
    glaucoma = retina.oct_volume("left", thinning, np.random.default_rng(3), n, h, w)
    # Same seed: same anatomy and noise, only RNFL and GCL thinner. The truth, in pixels:
    bounds_h = retina.layer_boundaries(n, w, "left", 0.0, np.random.default_rng(3)) * h
    bounds_g = retina.layer_boundaries(n, w, "left", thinning, np.random.default_rng(3)) * h
    # The RPE stays, so the inner limiting membrane moves down by the RNFL + GCL loss.
    true_loss = np.median(bounds_g[0] - bounds_h[0], axis=1)
    measured = np.array([np.median(_ilm_rows(g) - _ilm_rows(h)) for h, g in zip(healthy, glaucoma)])
    # The ILM is located to about a pixel per column (speckle, blur); the median over 200 columns to
    # better than 1.5 px.
    assert measured == pytest.approx(true_loss, abs=1.5)
    weight = retina.thinning_weight(n)
    assert weight[0] == weight[-1] == 1.0 and weight[n // 2] == pytest.approx(0.3)
    # Strongest at the superior (0) and inferior (n-1) scans, at least twice the central loss.
    assert min(measured[0], measured[-1]) > 2 * measured[n // 2] > 0


def test_anatomy_is_mirrored_between_eyes():
    # The RNFL thickens towards the optic nerve: nasal, right of the image for a right eye.
    for eye, thicker_right in (("right", True), ("left", False)):
        bounds = retina.layer_boundaries(5, 100, eye, 0.0, np.random.default_rng(0))
        rnfl = bounds[1] - bounds[0]
        assert (rnfl[:, -10:].mean() > rnfl[:, :10].mean()) == thicker_right
    for eye in ("left", "right"):
        _, _, disc_col = retina.fundus_photo(eye, 0.4, np.random.default_rng(1), 128)
        assert (disc_col > 64) == (eye == "right")


def test_optic_disc_is_where_the_truth_says_and_the_cup_grows_with_cdr():
    size = 160
    for seed in range(6):
        eye = ("left", "right")[seed % 2]
        photo, row, col = retina.fundus_photo(eye, 0.5, np.random.default_rng(seed), size)
        found = find_optic_disc(photo)
        # The disc radius is 0.065 of the side (10 px here); the brightest spot is its cup, near the centre.
        assert np.hypot(found[0] - row, found[1] - col) < 0.5 * 0.065 * size
    areas = []
    for cdr in (0.3, 0.5, 0.7):
        photo, row, col = retina.fundus_photo("left", cdr, np.random.default_rng(7), size)
        lum = photo.astype(float).mean(axis=2)
        areas.append(np.sum(lum > 0.9 * lum[round(row), round(col)]))
    # Cup area scales as cdr squared: the ratio of the extremes is (0.7/0.3)**2 = 5.4.
    assert areas[0] < areas[1] < areas[2]
    assert np.sqrt(areas[2] / areas[0]) == pytest.approx(0.7 / 0.3, rel=0.2)


def test_labels_drive_thinning_and_cdr_and_rendering_is_deterministic():
    config = retina.RetinaSynthConfig(n_scans=4, oct_height=32, oct_width=40, fundus_size=48)
    truths = {label: [retina.render_eye(eid, "left", label, config)[2] for eid in range(20)]
              for label in ("healthy", "ptg", "glaucoma")}
    thinning = {k: np.mean([t.thinning for t in v]) for k, v in truths.items()}
    cdr = {k: np.mean([t.cdr for t in v]) for k, v in truths.items()}
    # Means of 20 draws with sd 0.1 (0.05 healthy) and 0.08: within 3 sd / sqrt(20) of the configured means.
    assert thinning["healthy"] == pytest.approx(0.0, abs=0.04)
    assert thinning["ptg"] == pytest.approx(config.thinning_ptg, abs=0.07)
    assert thinning["glaucoma"] == pytest.approx(config.thinning_glaucoma, abs=0.07)
    assert cdr["healthy"] < cdr["ptg"] < cdr["glaucoma"]
    a = retina.render_eye(5, "right", "glaucoma", config, seed=1)
    b = retina.render_eye(5, "right", "glaucoma", config, seed=1)
    c = retina.render_eye(5, "right", "glaucoma", config, seed=2)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert not np.array_equal(a[0], c[0])


def test_cohort_images_round_trip_through_their_files(tmp_path):
    import pandas as pd

    eyes = pd.DataFrame({"eid": [101, 101, 202], "eye": ["left", "right", "left"],
                         "label": ["glaucoma", "glaucoma", "healthy"], "visit": [0, 0, 1]})
    config = retina.RetinaSynthConfig(n_scans=3, oct_height=24, oct_width=30, fundus_size=40)
    truth = retina.write_cohort_images(eyes, tmp_path, config, seed=4)
    for row in truth.itertuples():
        volume, photo, _ = retina.render_eye(row.eid, row.eye, row.label, config, seed=4)
        assert np.array_equal(retina_io.read_oct(row.oct_path), volume)
        assert np.array_equal(retina_io.read_fundus(row.fundus_path), photo)
        key = retina_io.parse_image_name(row.oct_path)
        assert key == (row.eid, row.eye, row.visit, "oct")
        assert retina_io.parse_image_name(row.fundus_path).modality == "cfp"
    with pytest.raises(ValueError, match="not <eid>_<field>"):
        retina_io.parse_image_name("scan.tif")
    with pytest.raises(ValueError, match="field 99999 is not a retinal image field"):
        retina_io.parse_image_name("1_99999_0_0.tif")
