"""FITS images round-trip with their WCS in both HDU layouts, through Spark too."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from scilens.core import tensor
from scilens.io import fits as fits_io
from scilens.synth import sky


@pytest.fixture(scope="module")
def image():
    return sky.make_image(shape=(64, 80), n_sources=10, seed=3)


@pytest.mark.parametrize("layout", [fits_io.FitsLayout(), fits_io.FitsLayout.hst()], ids=["decam", "hst"])
@pytest.mark.parametrize("suffix", [".fits", ".fits.gz"])
def test_round_trip_with_wcs(tmp_path, image, layout, suffix):
    path = fits_io.write_image(tmp_path / f"ccd{suffix}", image.flux, image.variance, image.mask,
                               image.wcs_header, layout=layout)
    back = fits_io.read_image(path, layout)
    assert back["image_id"] == "ccd"
    assert np.array_equal(back["flux"], image.flux)
    assert np.array_equal(back["mask"], image.mask)
    if layout.variance_is_sigma:  # stored as sigma, read back squared
        assert np.allclose(back["variance"], image.variance, rtol=1e-6)
    else:
        assert np.array_equal(back["variance"], image.variance)
    wcs = fits_io.wcs_from_text(back["wcs_header"])
    x, y = image.truth["x"].to_numpy(), image.truth["y"].to_numpy()
    ra, dec = wcs.pixel_to_world_values(x, y)
    assert np.allclose(ra, image.truth["ra"], atol=1e-10) and np.allclose(dec, image.truth["dec"], atol=1e-10)


def test_hst_file_written_by_astropy_directly(tmp_path, image):
    """A file laid out by hand as HST does (SCI/ERR/DQ), not by our writer."""
    header = image.wcs_header
    hdus = fits.HDUList([fits.PrimaryHDU(),
                         fits.ImageHDU(image.flux.astype(">f4"), header=header, name="SCI"),
                         fits.ImageHDU(np.sqrt(image.variance), header=header, name="ERR"),
                         fits.ImageHDU(image.mask.astype(np.int16), header=header, name="DQ")])
    path = tmp_path / "hst.fits"
    hdus.writeto(path)
    back = fits_io.read_image(path, fits_io.FitsLayout.hst())
    assert np.array_equal(back["flux"], image.flux)
    assert np.allclose(back["variance"], image.variance, rtol=1e-6)


def test_spark_reader_equals_astropy(spark, tmp_path, image):
    paths = []
    for i in range(3):
        paths.append(str(fits_io.write_image(tmp_path / f"img{i}.fits", image.flux + i, image.variance,
                                             image.mask, image.wcs_header)))
    images, rejected = fits_io.read_images(spark, paths)
    assert rejected.count() == 0
    rows = {r.image_id: r for r in images.collect()}
    for i, path in enumerate(paths):
        with fits.open(path) as hdul:
            assert hdul[1].data.dtype.byteorder == ">"  # FITS is big-endian on disk
            flux = tensor.decode(rows[f"img{i}"].flux)
            assert np.array_equal(flux, hdul[1].data)
            assert np.array_equal(tensor.decode(rows[f"img{i}"].variance), hdul[3].data)
            assert np.array_equal(tensor.decode(rows[f"img{i}"].mask), hdul[2].data)


def test_missing_plane_names_file_and_hdu(tmp_path, image):
    path = tmp_path / "novar.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(image.flux, name="IMAGE"),
                  fits.ImageHDU(image.mask, name="MASK")]).writeto(path)
    with pytest.raises(ValueError, match=r"novar.fits: no HDU '3' for the variance plane"):
        fits_io.read_image(path)
