"""Light profiles carry their flux, width and shape as the formulas say."""

from __future__ import annotations

import numpy as np
import pytest

from scilens.synth import profiles


@pytest.mark.parametrize("render", [profiles.gaussian_psf, profiles.moffat_psf])
def test_psf_flux_and_fwhm(render):
    stamp = render((101, 101), fwhm=4.0, flux=1000.0)
    assert stamp.sum() == pytest.approx(1000.0, rel=0.01 if render is profiles.moffat_psf else 1e-4)
    # The half-maximum contour along the central row spans the FWHM.
    row = stamp[50]
    above = np.flatnonzero(row >= row.max() / 2)
    assert above[-1] - above[0] + 1 == pytest.approx(4.0, abs=1.0)


def test_sersic_half_light_radius_and_flux():
    image = profiles.sersic((201, 201), 100.0, 100.0, flux=5000.0, r_eff=10.0, n=1.0)
    assert image.sum() == pytest.approx(5000.0, rel=0.005)
    yy, xx = np.mgrid[0:201, 0:201]
    r = np.hypot(xx - 100, yy - 100)
    assert image[r <= 10.0].sum() / image.sum() == pytest.approx(0.5, abs=0.02)


def test_edge_on_disk_is_elongated_along_its_angle():
    q = profiles.disk_axis_ratio(90.0)
    assert q == pytest.approx(0.12)
    assert profiles.disk_axis_ratio(0.0) == pytest.approx(1.0)
    image = profiles.sersic((81, 81), 40.0, 40.0, flux=1.0, r_eff=8.0, axis_ratio=q, angle_deg=90.0)
    assert image[:, 40].sum() > 3 * image[40, :].sum()  # light spread along y when the major axis is vertical


def test_convolve_keeps_flux():
    image = profiles.sersic((64, 64), 32.0, 32.0, flux=100.0, r_eff=3.0)
    psf = profiles.moffat_psf((25, 25), fwhm=3.0)
    assert profiles.convolve(image, psf).sum() == pytest.approx(image.sum(), rel=1e-6)
