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


# --------------------------------------------------------------------------- untrusted headers

def _replace_card(path, hdu: int, keyword: str, value_text: str) -> None:
    """Overwrite ``keyword``'s card in HDU ``hdu`` with raw text (astropy refuses to write NaN or junk itself)."""
    raw = bytearray(path.read_bytes())
    starts = [i for i in range(0, len(raw), 2880) if raw[i:i + 8] in (b"SIMPLE  ", b"XTENSION")]
    at = raw.find(f"{keyword:<8}=".encode(), starts[hdu])
    assert at >= 0 and (hdu + 1 == len(starts) or at < starts[hdu + 1])
    raw[at:at + 80] = f"{keyword:<8}= {value_text:>20}".ljust(80).encode()
    path.write_bytes(bytes(raw))


def _good(tmp_path, image, name="good.fits", **wcs_cards):
    header = image.wcs_header
    header.update(wcs_cards)
    return fits_io.write_image(tmp_path / name, image.flux, image.variance, image.mask, header)


BAD_WCS = {
    # name: (edit of the WCS cards or raw card text, keyword the message must name)
    "crpix_text": ({"CRPIX1": "not-a-number"}, "CRPIX1"),
    "crval_nan": ("CRVAL1", "CRVAL1"),
    "crval2_inf": ("CRVAL2", "CRVAL2"),
    "scale_tiny": ({"CDELT1": 1e-6, "CDELT2": 1e-6}, "pixel scale"),  # 2.6e-7"/px
    "scale_huge": ({"CDELT1": 1e5, "CDELT2": 1e5}, "pixel scale"),  # 26,300"/px: 7 degrees per pixel
    "dec_95": ({"CRVAL2": 95.0}, "CRVAL2"),
    "singular": ({"PC2_1": -7.3e-5, "PC2_2": 0.0, "PC1_1": 0.0, "PC1_2": 0.0}, "singular"),
}


def _bad_wcs_file(tmp_path, image, name):
    edit, _ = BAD_WCS[name]
    if isinstance(edit, dict):
        return _good(tmp_path, image, f"{name}.fits", **edit)
    path = _good(tmp_path, image, f"{name}.fits")
    for hdu in (1, 2, 3):  # the WCS is in every image HDU
        _replace_card(path, hdu, edit, "NaN" if name.endswith("nan") else "Inf")
    return path


@pytest.mark.parametrize("name", list(BAD_WCS))
def test_invalid_wcs_is_refused_naming_the_keyword(tmp_path, image, name):
    """astropy reads CRPIX1 = 'not-a-number' and CRVAL1 = NaN as 0 (with a filtered warning): the image would be
    co-added tens of arcsec or degrees off. Every reader must refuse it, naming the file and the keyword."""
    path = _bad_wcs_file(tmp_path, image, name)
    keyword = BAD_WCS[name][1]
    for read in (fits_io.read_header, fits_io.read_image):
        with pytest.raises(ValueError, match=rf"{name}\.fits: .*{keyword}") as err:
            read(path)
        assert "\n" not in str(err.value)


def test_plausible_wcs_passes(tmp_path, image):
    """The bounds are wide: 1 mas/px and 1 deg/px (an all-sky map) pass, as does a rotated CD-matrix WCS."""
    for name, scale in (("fine", 1.1e-3), ("coarse", 3599.0)):
        wcs = sky.tan_wcs(image.flux.shape, 150.0, 2.2, pixel_scale_arcsec=scale, rotation_deg=30.0)
        header = wcs.to_header()  # PC + CDELT
        fits_io.check_wcs(header, name)
        cd = fits.Header({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 150.0, "CRVAL2": 2.2,
                          "CRPIX1": 40.5, "CRPIX2": 32.5, "CD1_1": -scale / 3600, "CD1_2": 0.0, "CD2_1": 0.0,
                          "CD2_2": scale / 3600})
        fits_io.check_wcs(cd, name)
    fits_io.check_wcs(fits.Header(), "no-wcs")  # no WCS at all: nothing to check


def test_zero_size_and_dataless_planes_are_refused(tmp_path, image):
    """A (0, 10) image was read as an empty row; a primary HDU without data where the layout wants an image."""
    path = tmp_path / "empty.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((0, 10), np.float32)),
                  fits.ImageHDU(np.zeros((0, 10), np.int32)), fits.ImageHDU(np.zeros((0, 10), np.float32))]
                 ).writeto(path)
    for read in (fits_io.read_header, fits_io.read_image):
        with pytest.raises(ValueError, match=r"empty\.fits: HDU '1' \(flux\) is an empty image: NAXIS1 = 10, "
                                             r"NAXIS2 = 0"):
            read(path)
    path = tmp_path / "nodata.fits"
    fits.HDUList([fits.PrimaryHDU(header=image.wcs_header), fits.ImageHDU(image.variance)]).writeto(path)
    layout = fits_io.FitsLayout(flux="0", variance="1", mask=None)
    for read in (fits_io.read_header, fits_io.read_image):
        with pytest.raises(ValueError, match=r"nodata\.fits: HDU '0' \(flux\) holds no data"):
            read(path, layout)


def test_truncated_file_is_refused_before_reading(tmp_path, image):
    """The last HDU's data is cut short: the header's claim is checked against the file size, not read."""
    path = _good(tmp_path, image)
    raw = path.read_bytes()
    cut = tmp_path / "cut.fits"
    cut.write_bytes(raw[:len(raw) - 2 * 2880])
    claimed = image.variance.nbytes
    with pytest.raises(ValueError, match=rf"cut\.fits: HDU '3' \(variance\) claims {claimed:,} bytes of data "
                                         rf"from byte [0-9,]+, but the file has {len(raw) - 5760:,} bytes"):
        fits_io.read_header(cut)


def test_header_claims_beyond_the_file_or_the_memory_budget_are_refused(tmp_path, image):
    """NAXIS1 = NAXIS2 = 200000 (160 GB of float32) in a 80 kB file: refused from the headers, plain or gzipped
    (where only the memory budget can tell)."""
    import gzip

    path = _good(tmp_path, image)
    for key in ("NAXIS1", "NAXIS2"):
        _replace_card(path, 3, key, "200000")
    with pytest.raises(ValueError, match=r"good\.fits: HDU '3' \(variance\) claims 160,000,000,000 bytes"):
        fits_io.read_image(path)
    gz = tmp_path / "huge.fits.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    with pytest.raises(ValueError, match=r"huge\.fits\.gz: the headers claim [0-9,]+ MB of image data, more than "
                                         r"the memory budget"):
        fits_io.read_header(gz)
    small = _good(tmp_path, image, "small.fits")  # 64x80: 20 kB a plane, 61 kB in all
    assert fits_io.read_image(small, fits_io.FitsLayout(max_image_mb=1))["flux"].shape == (64, 80)
    big = sky.make_image(shape=(400, 400), n_sources=1, seed=1)  # 1.9 MB in all
    path = fits_io.write_image(tmp_path / "big.fits", big.flux, big.variance, big.mask, big.wcs_header)
    with pytest.raises(ValueError, match=r"big\.fits: the headers claim 2 MB .* budget of 1 MB"):
        fits_io.read_image(path, fits_io.FitsLayout(max_image_mb=1))


def test_spark_reader_quarantines_bad_files_and_keeps_the_good(spark, tmp_path, image):
    """``scilens ingest``'s reader: each bad file is one rejected record naming it and the problem; the good
    images come through unchanged."""
    good = [_good(tmp_path, image, f"good{i}.fits") for i in range(2)]
    bad = {name: _bad_wcs_file(tmp_path, image, name) for name in ("crpix_text", "crval_nan", "scale_huge")}
    empty = tmp_path / "empty.fits"
    fits.HDUList([fits.PrimaryHDU(), *[fits.ImageHDU(np.zeros((0, 10), np.float32)) for _ in range(3)]]
                 ).writeto(empty)
    bad["empty"] = empty
    images, rejected = fits_io.read_images(spark, [str(p) for p in [*good, *bad.values()]])
    rows = {r.image_id: r for r in images.collect()}
    assert sorted(rows) == ["good0", "good1"]
    for row in rows.values():
        assert np.array_equal(tensor.decode(row.flux), image.flux)
    reasons = {r.path: r.message for r in rejected.collect()}
    assert sorted(reasons) == sorted(str(p) for p in bad.values())
    for name, keyword in (("crpix_text", "CRPIX1"), ("crval_nan", "CRVAL1"), ("scale_huge", "pixel scale"),
                          ("empty", "empty image")):
        assert str(bad[name]) in reasons[str(bad[name])] and keyword in reasons[str(bad[name])]
