"""Check the inputs against each other; score a catalog against truth.

Scoring covers matching, completeness, purity, astrometry and photometry.

**Inputs.** :func:`implausible_images` finds the images whose pixel scale or
position disagrees with the rest of the inputs (a WCS with a wrong CDELT or
CRVAL), before the sky map is built: the automatic tract covers every
image, so one image 30x too coarse would grow it from 2x2 to 26x26 patches.
Each image's own WCS is checked on reading (:func:`scilens.io.fits.check_wcs`).

**Truth.** Used by the tests, the job's report and the benchmark. Matching is one to
one: a detection and a true source match when each is the other's nearest
neighbour on the sky and they are closer than the match radius.

Which true sources *should* be found is decided from the co-add alone: the
expected S/N of a true source is its flux over the noise of the co-add in
an aperture of radius ``1.33 x FWHM`` around it -- the Kron aperture of a
point source (2.5 Kron radii; the Kron radius of a Gaussian is
sqrt(pi/2) sigma = 0.53 FWHM), so it is the S/N the catalog would report
for a star there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from astropy.coordinates import SkyCoord, match_coordinates_sky
from astropy.wcs import WCS

from scilens.astro.skymap import SkyMap, _mean_direction, _median_centre, _separation_deg, _unit

if TYPE_CHECKING:
    from scilens.astro.pipeline import ImageInfo

__all__ = ["KRON_RADIUS_PER_FWHM", "TruthScore", "expected_snr", "implausible_images", "match", "score",
           "truth_in_patches"]


def _image_scale_arcsec(wcs_header: str) -> float:
    """Geometric-mean pixel scale of an image's celestial WCS, arcsec per pixel."""
    from astropy.wcs.utils import proj_plane_pixel_scales

    from scilens.io.fits import wcs_from_text

    return float(np.sqrt(np.prod(proj_plane_pixel_scales(wcs_from_text(wcs_header).celestial)))) * 3600.0


def _diameter_deg(ra: np.ndarray, dec: np.ndarray) -> float:
    """Largest angular distance between two edge points of a footprint, degrees."""
    v = _unit(np.asarray(ra, float), np.asarray(dec, float))
    return float(np.degrees(np.arccos(np.clip((v @ v.T).min(), -1.0, 1.0))))


def implausible_images(infos: Iterable[ImageInfo], scale_tolerance: float = 1.5, centre_tolerance: float | None = 3.0,
                       ignore_beyond_deg: float | None = None) -> list[tuple[ImageInfo, str]]:
    """The images whose scale or position is implausible against the other inputs, each with the reason.

    Rules, with robust statistics so one bad image among two or more
    agreeing ones is caught and cannot shift the reference:

    * **scale**: an image's pixel scale (geometric mean of its axes) more
      than ``scale_tolerance`` times above or below the median scale of all
      inputs. With two images that disagree, neither can be trusted and
      both are named.
    * **position**: an image centred farther from the median image centre
      (per-axis median) than ``centre_tolerance`` x (median footprint
      diameter + median distance of the image centres from that centre):
      the second term lets a wide mosaic of many pointings pass.
      Images farther than ``ignore_beyond_deg`` are left alone (the sky map
      already puts them outside the tract and says so); None checks all.
      ``centre_tolerance=None`` skips this rule (a tract of fixed extent
      does not grow).

    With a single image there is nothing to compare, and nothing is returned.
    """
    infos = sorted(infos, key=lambda i: i.path)  # the result must not depend on arrival order
    if len(infos) < 2:
        return []
    scales = np.array([_image_scale_arcsec(i.wcs_header) for i in infos])
    # Median of the logs: for an even count, the geometric mean of the middle two, symmetric in over/under.
    ref = float(np.exp(np.median(np.log(scales))))
    out: dict[str, tuple[ImageInfo, str]] = {}
    for info, scale in zip(infos, scales):
        ratio = scale / ref
        if max(ratio, 1 / ratio) > scale_tolerance:
            out[info.path] = (info, f"{info.path}: pixel scale {scale:.4g}\"/px is {ratio:.3g} times the median "
                                    f"{ref:.4g}\"/px of the {len(infos)} input images, beyond the factor "
                                    f"{scale_tolerance:g} allowed (skymap.scale_tolerance); is its WCS "
                                    f"(CDELTi/CDi_j) wrong?")
    if centre_tolerance is None:
        return [out[i.path] for i in infos if i.path in out]
    centres = np.array([_mean_direction(i.footprint_ra, i.footprint_dec) for i in infos])
    ra0, dec0 = _median_centre(centres)
    dist = _separation_deg(centres[:, 0], centres[:, 1], ra0, dec0)
    size = float(np.median([_diameter_deg(i.footprint_ra, i.footprint_dec) for i in infos]))
    limit = centre_tolerance * (size + float(np.median(dist)))
    for info, d in zip(infos, dist):
        if d > limit and info.path not in out and (ignore_beyond_deg is None or d <= ignore_beyond_deg):
            out[info.path] = (info, f"{info.path}: image centred {d:.4g} deg from the median centre (RA {ra0:.5f}, "
                                    f"Dec {dec0:.5f}) of the {len(infos)} input images, beyond the {limit:.4g} deg "
                                    f"allowed ({centre_tolerance:g} x (median image diameter {size:.3g} deg + "
                                    f"median distance {float(np.median(dist)):.3g} deg), skymap.centre_tolerance); "
                                    f"is its WCS (CRVALi/CRPIXi) wrong?")
    return [out[i.path] for i in infos if i.path in out]

KRON_RADIUS_PER_FWHM = 2.5 * np.sqrt(np.pi / 2) / (2 * np.sqrt(2 * np.log(2)))
"""Radius of a point source's Kron aperture (2.5 Kron radii) in units of its FWHM: 1.33."""


def match(catalog: pd.DataFrame, truth: pd.DataFrame, radius_arcsec: float) -> pd.DataFrame:
    """Mutual nearest neighbours closer than ``radius_arcsec``.

    Returns one row per pair: ``det`` and ``true`` (row positions in
    ``catalog`` and ``truth``) and ``sep_arcsec``.
    """
    if len(catalog) == 0 or len(truth) == 0:
        return pd.DataFrame({"det": pd.Series(dtype=int), "true": pd.Series(dtype=int),
                             "sep_arcsec": pd.Series(dtype=float)})
    det = SkyCoord(catalog["ra"].to_numpy(), catalog["dec"].to_numpy(), unit="deg")
    tru = SkyCoord(truth["ra"].to_numpy(), truth["dec"].to_numpy(), unit="deg")
    t_of_d, sep, _ = match_coordinates_sky(det, tru)
    d_of_t, _, _ = match_coordinates_sky(tru, det)
    d_index = np.arange(len(catalog))
    mutual = (d_of_t[t_of_d] == d_index) & (sep.arcsec <= radius_arcsec)
    return pd.DataFrame({"det": d_index[mutual], "true": np.asarray(t_of_d)[mutual],
                         "sep_arcsec": sep.arcsec[mutual]})


def expected_snr(truth: pd.DataFrame, variance: np.ndarray, wcs: WCS, radius_px: float) -> np.ndarray:
    """Flux over the co-add noise in a circular aperture at each true position (NaN off the image or without data)."""
    from photutils.aperture import CircularAperture, aperture_photometry

    x, y = wcs.all_world2pix(truth["ra"].to_numpy(), truth["dec"].to_numpy(), 0)
    ny, nx = variance.shape
    out = np.full(len(truth), np.nan)
    on = (x >= radius_px) & (x < nx - 1 - radius_px) & (y >= radius_px) & (y < ny - 1 - radius_px)
    if on.any():
        table = aperture_photometry(variance, CircularAperture(np.column_stack([x[on], y[on]]), radius_px))
        with np.errstate(invalid="ignore"):
            out[on] = truth["flux"].to_numpy()[on] / np.sqrt(np.asarray(table["aperture_sum"], float))
    return out


@dataclass
class TruthScore:
    """How well a catalog recovers the truth (see :func:`score`)."""

    n_true_bright: int
    n_det_bright: int
    completeness: float
    purity: float
    astrometric_rms_px: float
    median_flux_ratio: float
    median_flux_ratio_stars: float

    def as_dict(self) -> dict:
        """The scores as a plain dict of their fields."""
        return asdict(self)


def score(catalog: pd.DataFrame, truth: pd.DataFrame, pairs: pd.DataFrame, pixel_scale_arcsec: float,
          snr_min: float = 10.0, exclude_flags: int = 0) -> TruthScore:
    """Completeness, purity, astrometric RMS and flux ratio above ``snr_min``.

    ``truth`` needs an ``expected_snr`` column (:func:`expected_snr`).
    Completeness: matched share of true sources with expected S/N >= snr_min.
    Purity: matched share of detections with S/N >= snr_min and no flag in
    ``exclude_flags`` (e.g. where too few visits overlap to clip artifacts).
    Astrometry and photometry use the matched pairs among those detections;
    the astrometric RMS is the root mean square of the 2-D offset, in co-add
    pixels.
    """
    matched_true = np.zeros(len(truth), bool)
    matched_true[pairs["true"].to_numpy()] = True
    matched_det = np.zeros(len(catalog), bool)
    matched_det[pairs["det"].to_numpy()] = True
    bright_true = truth["expected_snr"].to_numpy() >= snr_min
    bright_det = (catalog["snr"].to_numpy() >= snr_min) & ((catalog["flags"].to_numpy() & exclude_flags) == 0)
    det = catalog.iloc[pairs["det"].to_numpy()].reset_index(drop=True)
    tru = truth.iloc[pairs["true"].to_numpy()].reset_index(drop=True)
    use = (det["snr"].to_numpy() >= snr_min) & ((det["flags"].to_numpy() & exclude_flags) == 0)
    sep_px = pairs["sep_arcsec"].to_numpy()[use] / pixel_scale_arcsec
    ratio = det["flux"].to_numpy()[use] / tru["flux"].to_numpy()[use]
    stars = tru["type"].to_numpy()[use] == "star"
    return TruthScore(
        n_true_bright=int(bright_true.sum()), n_det_bright=int(bright_det.sum()),
        completeness=float(matched_true[bright_true].mean()) if bright_true.any() else float("nan"),
        purity=float(matched_det[bright_det].mean()) if bright_det.any() else float("nan"),
        astrometric_rms_px=float(np.sqrt(np.mean(sep_px**2))) if use.any() else float("nan"),
        median_flux_ratio=float(np.median(ratio)) if use.any() else float("nan"),
        median_flux_ratio_stars=float(np.median(ratio[stars])) if stars.any() else float("nan"),
    )


def truth_in_patches(truth: pd.DataFrame, skymap: SkyMap, coadds: Mapping[str, np.ndarray],
                     fwhm_arcsec: float) -> pd.DataFrame:
    """``truth`` with ``patch`` (the patch whose inner region holds each source; None outside) and ``expected_snr``.

    ``coadds`` maps a patch name to its co-add variance plane.
    """
    out = truth.copy()
    out["patch"] = None
    out["expected_snr"] = np.nan
    radius_px = KRON_RADIUS_PER_FWHM * fwhm_arcsec / skymap.pixel_scale_arcsec
    ra, dec = truth["ra"].to_numpy(), truth["dec"].to_numpy()
    for patch, variance in coadds.items():
        wcs = skymap.patch_wcs(patch)
        x, y = wcs.all_world2pix(ra, dec, 0)
        home = skymap.in_inner(patch, x, y)
        if home.any():
            out.loc[home, "patch"] = patch
            out.loc[home, "expected_snr"] = expected_snr(truth[home], variance, wcs, radius_px)
    return out
