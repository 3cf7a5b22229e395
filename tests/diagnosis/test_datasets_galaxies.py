"""Image tables: real Fashion-MNIST and digits as they are known to be; generated galaxies obey their physics."""

from __future__ import annotations

import gzip

import numpy as np
import pyarrow.parquet as pq
import pytest

from scilens.core import tensor
from scilens.diagnosis import datasets
from scilens.synth import galaxies, profiles


def test_fashion_mnist_is_the_real_balanced_set():
    train, test = datasets.fashion_mnist("train"), datasets.fashion_mnist("test")
    assert train.images.shape == (60_000, 28, 28, 1) and test.images.shape == (10_000, 28, 28, 1)
    assert train.images.dtype == np.uint8
    # Zalando's release: exactly 6,000 training and 1,000 test images per class.
    assert np.bincount(train.labels).tolist() == [6000] * 10
    assert np.bincount(test.labels).tolist() == [1000] * 10
    assert len(np.intersect1d(train.ids, test.ids)) == 0
    # Trousers (1) are tall and narrow, bags (8) wide: the mean image's width differs accordingly.
    def width(label):
        mean = train.images[train.labels == label, :, :, 0].mean(0)
        return np.sum(mean.mean(0) > 20)
    assert width(1) < width(8)


def test_idx_reader_names_a_truncated_file(tmp_path):
    raw = gzip.compress(bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2]) + bytes(5))
    (tmp_path / "short.gz").write_bytes(raw)
    with pytest.raises(ValueError, match=r"short.gz: header says shape \(2, 2, 2\) but holds 5 values"):
        datasets.read_idx(tmp_path / "short.gz")


def test_digits_split_is_stratified_and_tables_round_trip(tmp_path):
    train, test = datasets.digits("train"), datasets.digits("test")
    assert len(train) + len(test) == 1797 and not set(train.ids) & set(test.ids)
    share = np.bincount(test.labels) / np.bincount(datasets.digits("all").labels)
    assert np.all(np.abs(share - 0.3) < 0.01)
    path = datasets.write_image_table(tmp_path / "t", test, rows_per_file=200)
    table = pq.read_table(path)
    assert len(list(path.glob("part-*.parquet"))) == 3
    order = np.argsort(table.column("id").to_numpy())
    images = np.stack(tensor.decode_column(table.column("image").to_pandas()))[order]
    assert np.array_equal(images, test.images[np.argsort(test.ids)])


def test_galaxy_moments_follow_the_inclined_disk():
    """A pure disk's light has elliptical isophotes, so its second-moment axis ratio is its apparent one.

    The PSF adds its variance s^2 to both moments: q_obs^2 = (q^2 a^2 + s^2) / (a^2 + s^2), where an
    exponential disk of half-light radius r_e = 1.678 h has major-axis moment a^2 = 3 h^2 = 107 px^2 for
    r_e = 10 px. A 1-px FWHM PSF plus pixelisation give s^2 < 0.5 px^2, so q_obs - q < s^2 / (2 q a^2)
    < 0.016 down to q = 0.15 (85 degrees); the 101-px stamp holds all but e^-10 of the light.
    """
    for inclination in (0.0, 45.0, 70.0, 85.0):
        q = profiles.disk_axis_ratio(inclination, 0.12)
        _, measured = galaxies.render_galaxy(101, inclination, 30.0, bulge_fraction=0.0, disk_r_eff=10.0,
                                             flux=1000.0, psf_fwhm=1.0)
        assert measured == pytest.approx(q, abs=0.02), inclination


def test_galaxy_cutouts_and_vote_labels():
    made = galaxies.make_galaxies(400, seed=11)
    assert made.images.shape == (400, 69, 69, 3) and made.images.dtype == np.uint8
    again = galaxies.make_galaxies(5, seed=11)
    assert np.array_equal(again.images, made.images[:5])
    truth = made.truth
    # Isotropic orientations: cos i uniform on [0, 1] -- mean 1/2, variance 1/12 (4-sigma bounds for n=400).
    cos_i = np.cos(np.deg2rad(truth["inclination_deg"]))
    assert abs(cos_i.mean() - 0.5) < 4 * np.sqrt(1 / 12 / 400)
    # Far from the 0.45 threshold (5 softness widths) a volunteer errs with probability < 0.7 %, so the
    # majority of 40 is the geometric answer; near it both labels occur.
    far = np.abs(truth["axis_ratio"] - 0.45) > 0.25
    assert np.array_equal(made.labels[far], (truth["axis_ratio"][far] < 0.45).astype(int))
    near = np.abs(truth["axis_ratio"] - 0.45) < 0.05
    assert set(made.labels[near]) == {0, 1}
    # Edge-on galaxies look elongated in the RGB cutouts too: the moments of their brightest 2 % of pixels
    # (a galaxy covers a few hundred of the 4,761) are flatter.
    def image_q(img):
        light = img.astype(float).sum(-1)
        return galaxies.moment_axis_ratio(np.clip(light - np.percentile(light, 98), 0, None))
    q_edge = np.median([image_q(made.images[k]) for k in np.flatnonzero(made.labels == 1)[:40]])
    q_face = np.median([image_q(made.images[k]) for k in np.flatnonzero(made.labels == 0)[:40]])
    assert q_edge < q_face - 0.2
