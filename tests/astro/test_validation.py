"""Inputs are checked against each other before the sky map is built, and the tract is bounded.

One image whose WCS is wrong -- a pixel scale 30x too coarse, a CRVAL off by
half a degree -- stretched the automatic tract to cover it (2x2 patches grew
to 26x26 and the run did not end); an image whose WCS keywords are not
numbers was read with them as 0 and co-added in the wrong place. Each such
image must be rejected naming the file and the rule or keyword, and the
rest co-added as if it had never been there.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from scilens import cli
from scilens.astro.config import AstroConfig
from scilens.astro.pipeline import ImageInfo
from scilens.astro.skymap import SkyMap, SkyMapConfig, footprint
from scilens.astro.validate import implausible_images
from scilens.core.config import ConfigError
from scilens.core.inputs import InputError
from scilens.io import fits as fits_io
from scilens.synth import sky
from tests.astro.conftest import TINY_SKYMAP, assert_coadds_equal

SHAPE = (320, 320)
SCALE = 0.263  # arcsec/px, as the tiny survey's CCDs: 84" a side


def _info(name: str, ra: float = 150.1, dec: float = 2.2, scale: float = SCALE, rotation: float = 0.0) -> ImageInfo:
    wcs = sky.tan_wcs(SHAPE, ra, dec, pixel_scale_arcsec=scale, rotation_deg=rotation)
    ra_fp, dec_fp = footprint(wcs, SHAPE)
    return ImageInfo(name, f"/data/{name}.fits", SHAPE, wcs.to_header().tostring(sep="\n"), ra_fp, dec_fp)


def _mosaic(n_side: int = 2, step_arcsec: float = 90.0) -> list[ImageInfo]:
    """A field of n_side x n_side CCDs, two visits dithered by a few arcsec (like the tiny survey)."""
    out = []
    for visit, (dra, rot) in enumerate([(0.0, 0.0), (3.0 / 3600, 0.5)]):
        for j in range(n_side):
            for i in range(n_side):
                out.append(_info(f"v{visit}_c{j}{i}", 150.1 + dra + (i - (n_side - 1) / 2) * step_arcsec / 3600,
                                 2.2 + (j - (n_side - 1) / 2) * step_arcsec / 3600, rotation=rot))
    return out


def _tract(infos: list[ImageInfo], **config) -> SkyMap:
    cfg = SkyMapConfig(pixel_scale_arcsec=0.333, patch_inner_px=300, patch_border_px=30, **config)
    return SkyMap.from_config(cfg, {i.path: (i.footprint_ra, i.footprint_dec) for i in infos})


def test_one_image_with_a_wrong_pixel_scale_is_named_and_the_tract_stays_small():
    good = _mosaic()
    coarse = _info("coarse", scale=30 * SCALE)  # CDELT 30x too large: a 42' footprint
    infos = [*good, coarse]
    tract = _tract(good)
    assert (tract.patches_x, tract.patches_y) == (2, 2)
    grown = _tract(infos)  # what the automatic tract did with the bad image in it
    assert grown.patches_x >= 25 and grown.patches_y >= 25
    found = implausible_images(infos)
    assert [i.path for i, _ in found] == [coarse.path]
    reason = found[0][1]
    assert reason.startswith("/data/coarse.fits: pixel scale 7.89\"/px is 30 times the median 0.263\"/px of the 9")
    assert "skymap.scale_tolerance" in reason
    kept = [i for i in infos if i.path not in {f.path for f, _ in found}]
    assert _tract(kept) == tract
    # Robust: the median is not pulled by the bad image, in either direction, nor by arrival order.
    fine = _info("fine", scale=SCALE / 30)
    assert [i.path for i, _ in implausible_images([fine, *good[::-1]])] == [fine.path]


def test_one_image_pointed_elsewhere_is_named_but_a_wide_mosaic_passes():
    good = _mosaic()
    off = _info("off", ra=150.1 + 0.5, dec=2.2)  # CRVAL1 off by 0.5 deg: 15 image diameters away
    found = implausible_images([*good, off])
    assert [i.path for i, _ in found] == [off.path]
    assert re.match(r"/data/off\.fits: image centred 0\.48\d* deg from the median centre", found[0][1])
    assert "skymap.centre_tolerance" in found[0][1]
    assert _tract([*good, off]).patches_x >= 19  # what it would have cost
    # A wide survey: 8x8 pointings spanning 6 diameters edge to edge, nothing is implausible.
    assert implausible_images(_mosaic(n_side=8)) == []
    # Images beyond ignore_beyond_deg are the sky map's to reject ("overlaps no patch"), not this rule's.
    far = _info("far", ra=180.1)
    assert [i.path for i, _ in implausible_images([*good, off, far], ignore_beyond_deg=2.0)] == [off.path]
    assert implausible_images([*good, off], centre_tolerance=None) == []


def test_one_or_two_images():
    """One image: nothing to compare. Two that disagree 30x: neither can be trusted, both are named."""
    assert implausible_images([_info("alone", scale=30 * SCALE)]) == []
    a, b = _info("a"), _info("b", scale=30 * SCALE)
    assert sorted(i.path for i, _ in implausible_images([a, b])) == [a.path, b.path]
    assert implausible_images([a, _info("c", scale=1.4 * SCALE)]) == []  # within the factor 1.5


def test_the_tract_is_bounded():
    infos = [*_mosaic(), _info("off", ra=150.1 + 0.5)]
    with pytest.raises(InputError, match=r"the input images need a tract of \d+x\d+ patches .* more than "
                                         r"skymap.max_patches = 20"):
        _tract(infos, max_patches=20)
    assert _tract(_mosaic(), max_patches=4).patches_x == 2
    with pytest.raises(ConfigError, match=r"patches: 40x40 is more than max_patches = 1024"):
        SkyMapConfig(patches=[40, 40]).validate()


# --------------------------------------------------------------------------- the job

def _replace_card(path: Path, keyword: str, value_text: str) -> None:
    """Overwrite ``keyword``'s card in every HDU with raw text (astropy will not write NaN itself)."""
    raw = bytearray(path.read_bytes())
    at = raw.find(f"{keyword:<8}=".encode())
    while at >= 0:
        raw[at:at + 80] = f"{keyword:<8}= {value_text:>20}".ljust(80).encode()
        at = raw.find(f"{keyword:<8}=".encode(), at + 80)
    path.write_bytes(bytes(raw))


def _write_bad(root: Path, template: Path) -> dict[str, str]:
    """Bad copies of a good image, and what their rejection must say."""
    image = fits_io.read_image(template)
    header = fits_io.header_from_text(image["wcs_header"])
    planes = image["flux"], image["variance"], image["mask"]
    text = header.copy()
    text["CRPIX1"] = "not-a-number"  # astropy would read it as 0: 42" off
    fits_io.write_image(root / "crpix_text.fits", *planes, text)
    fits_io.write_image(root / "crval_nan.fits", *planes, header)
    _replace_card(root / "crval_nan.fits", "CRVAL1", "NaN")
    coarse = header.copy()
    coarse["CDELT1"], coarse["CDELT2"] = 30 * coarse["CDELT1"], 30 * coarse["CDELT2"]
    fits_io.write_image(root / "coarse.fits", *planes, coarse)
    fits.HDUList([fits.PrimaryHDU(), *[fits.ImageHDU(np.zeros((0, 10), np.float32)) for _ in range(3)]]
                 ).writeto(root / "empty.fits")
    return {"crpix_text.fits": "WCS keyword CRPIX1 = 'not-a-number' is not a finite number",
            "crval_nan.fits": "WCS keyword CRVAL1 = 'NaN' is not a finite number",
            "coarse.fits": "pixel scale 7.89\"/px is 30 times the median",
            "empty.fits": "HDU '1' (flux) is an empty image"}


def test_astro_rejects_bad_images_and_coadds_the_rest_as_without_them(spark, survey_dir, tmp_path):
    from bench.reference import astro_ref

    good = sorted((survey_dir / "images").glob("v000[0-2]_c00.fits"))  # one CCD, three visits
    assert len(good) == 3
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for path in good:
        (mixed / path.name).symlink_to(path)
    expected = _write_bad(mixed, good[0])
    out, ref = tmp_path / "out", tmp_path / "reference"
    assert cli.main(["astro", "--input", str(mixed), "--output", str(out),
                     *[a for s in TINY_SKYMAP for a in ("--set", s)], "--set", "report.enabled=false"]) == 0
    rejected = pd.read_parquet(out / "_rejected" / "rejected.parquet")
    reasons = {Path(p).name: (m, s) for p, m, s in zip(rejected["path"], rejected["message"], rejected["step"])}
    assert sorted(reasons) == sorted(expected)
    for name, text in expected.items():
        assert name in reasons[name][0] and text in reasons[name][0], reasons[name]
    assert reasons["coarse.fits"][1] == "check footprints" and reasons["crpix_text.fits"][1] == "scan"
    steps = {s["name"]: s["counts"] for s in json.loads((out / "manifest.json").read_text())["steps"]}
    assert steps["check footprints"] == {"images": 3, "rejected": 1}
    # The co-adds equal those of the good images alone (the single-process reference, run on them only).
    result = astro_ref.run([str(p) for p in good], ref, AstroConfig().with_overrides(TINY_SKYMAP))
    assert (steps["sky map"]["patches_x"], steps["sky map"]["patches_y"]) == (result["skymap"].patches_x,
                                                                             result["skymap"].patches_y)
    assert_coadds_equal(out, ref)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "catalog.parquet"), pd.read_parquet(ref / "catalog.parquet"),
                                  check_exact=False, rtol=1e-5)
