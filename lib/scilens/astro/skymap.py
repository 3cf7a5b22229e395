"""The sky map: one tract with a TAN or STG projection, tiled by overlapping patches.

A tract is a pixel grid on the sky (one WCS) centred on the field. Patches
tile it: patch ``(i, j)`` owns the *inner* region ``[i*inner, (i+1)*inner)``
along x (and likewise along y, in tract pixels) and extends ``border`` pixels
beyond it on every side, so neighbouring patches overlap by ``2*border``. All
patches share the tract's pixel grid, so a sky position has the same pixel
value in every patch that holds it, and exactly one patch holds it in its
inner region -- that patch alone reports a source found there.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from astropy.wcs import WCS, FITSFixedWarning

from scilens.core.config import Config, ConfigError, field
from scilens.core.inputs import InputError

__all__ = ["SKYMAP_PRESETS", "PatchBox", "SkyMap", "SkyMapConfig", "footprint"]


SKYMAP_PRESETS: dict[str, dict] = {
    "dissertation": {"projection": "TAN", "pixel_scale_arcsec": 0.333, "patch_inner_px": 2000, "patch_border_px": 100},
    "tiny": {"projection": "TAN", "patch_inner_px": 380, "patch_border_px": 38},
}
"""Named sky maps: ``dissertation`` is the benchmark's (and Rubin's) 2000x2000 px
patches plus a 100 px border at 0.333"/px; ``tiny`` fits the ``tiny`` test survey (patches of
380+2x38 px at the inputs' own scale: 100" at DECam's 0.263"/px)."""


@dataclass
class SkyMapConfig(Config):
    """Geometry of the tract and its patches."""

    projection: str = field("TAN", "Tract projection: TAN (gnomonic) or STG (stereographic).", choices=("TAN", "STG"))
    pixel_scale_arcsec: float | None = field(None, "Co-add pixel scale, arcsec per pixel; null: the inputs' native "
                                                   "scale (median over the input images).", min=0.001)
    patch_inner_px: int = field(2000, "Side of a patch's inner region, pixels.", min=16)
    patch_border_px: int = field(100, "Border added on every side of a patch's inner region, pixels.", min=0)
    center_ra: float | None = field(None, "Tract centre RA, degrees; null: the centre of the input images.",
                                    min=0.0, max=360.0)
    center_dec: float | None = field(None, "Tract centre Dec, degrees; null: the centre of the input images.",
                                     min=-90.0, max=90.0)
    patches: list[int] | None = field(None, "Patches along [x, y]; null: just enough to cover the input images.",
                                      min=1, check=lambda v: len(v) == 2, check_doc="two entries")
    max_radius_deg: float = field(2.0, "With an automatic centre: images centred farther than this from the "
                                       "median image centre are outside the sky map.", min=0.0)
    max_patches: int = field(1024, "Refuse a tract of more patches than this: inputs spread over too much sky "
                                   "(an image with a wrong WCS) must not make the run grow without bound.", min=1)
    scale_tolerance: float = field(1.5, "Before the tract is built, reject images whose pixel scale is more than "
                                        "this factor from the median of the inputs.", min=1.0)
    centre_tolerance: float = field(3.0, "Before the tract is built, reject images centred farther from the median "
                                         "image centre than this many (median image diameter + median distance of "
                                         "the image centres from it).", min=0.0)
    tract: int = field(0, "Tract number, used in output names.", min=0)
    preset: str | None = field(None, "A named geometry (SKYMAP_PRESETS: dissertation = 2000+2x100 px at 0.333\"/px, "
                               "tiny) setting projection, pixel scale and patch sizes; those fields must then keep "
                               "their defaults or agree with it.", choices=tuple(SKYMAP_PRESETS))

    def with_native_scale(self, scales: list[float]) -> SkyMapConfig:
        """The config with an automatic pixel scale set to the median of the inputs' ``scales`` (arcsec/px)."""
        if self.pixel_scale_arcsec is not None:
            return self
        finite = [s for s in scales if np.isfinite(s) and s > 0]
        if not finite:
            raise ValueError("an automatic pixel scale needs at least one input image with a valid WCS")
        # Rounded to 1e-6 arcsec: the median of float scales read from headers, free of last-bit noise.
        return dataclasses.replace(self, pixel_scale_arcsec=round(float(np.median(finite)), 6))

    def validate(self) -> None:
        """Check the centre and the patch count, and apply the preset (refusing a contradicting field)."""
        if (self.center_ra is None) != (self.center_dec is None):
            raise ConfigError("center_ra/center_dec: give both or neither")
        if self.patches is not None and self.patches[0] * self.patches[1] > self.max_patches:
            raise ConfigError(f"patches: {self.patches[0]}x{self.patches[1]} is more than max_patches = "
                              f"{self.max_patches}; raise max_patches if you mean it")
        if self.preset is not None:
            defaults = {f.name: f.default for f in dataclasses.fields(self)}
            for name, value in SKYMAP_PRESETS[self.preset].items():
                if getattr(self, name) not in (defaults[name], value):
                    raise ConfigError(f"{name}: {getattr(self, name)!r} contradicts preset {self.preset!r} "
                                      f"({value!r}); drop one of them")
                setattr(self, name, value)


@dataclass(frozen=True)
class PatchBox:
    """A rectangle of pixels: ``[y0, y0+ny) x [x0, x0+nx)`` in some grid."""

    x0: int
    y0: int
    nx: int
    ny: int

    @property
    def slices(self) -> tuple[slice, slice]:
        """The (y, x) slices that cut this box out of its grid."""
        return slice(self.y0, self.y0 + self.ny), slice(self.x0, self.x0 + self.nx)


def footprint(wcs: WCS, shape: tuple[int, int], per_edge: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """RA, Dec (degrees) of points along the edges of an image of ``shape`` (ny, nx), outer pixel edges."""
    ny, nx = shape
    t = np.linspace(0.0, 1.0, per_edge, endpoint=False)
    xs = np.concatenate([t * nx, np.full(per_edge, nx), (1 - t) * nx, np.zeros(per_edge)]) - 0.5
    ys = np.concatenate([np.zeros(per_edge), t * ny, np.full(per_edge, ny), (1 - t) * ny]) - 0.5
    ra, dec = wcs.all_pix2world(xs, ys, 0)
    return np.asarray(ra), np.asarray(dec)


def _unit(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    ra, dec = np.deg2rad(ra), np.deg2rad(dec)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def _mean_direction(ra: np.ndarray, dec: np.ndarray) -> tuple[float, float]:
    v = _unit(ra, dec).sum(axis=0)
    v /= np.linalg.norm(v)
    return float(np.degrees(np.arctan2(v[1], v[0])) % 360.0), float(np.degrees(np.arcsin(v[2])))


def _separation_deg(ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float) -> np.ndarray:
    cos = _unit(ra, dec) @ _unit(np.array(ra0), np.array(dec0))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


@dataclass(frozen=True)
class SkyMap:
    """A tract of ``patches_x`` x ``patches_y`` patches centred on (center_ra, center_dec)."""

    config: SkyMapConfig
    center_ra: float
    center_dec: float
    patches_x: int
    patches_y: int

    def __post_init__(self) -> None:
        # An automatic tract covers every input: bound it here, before anything is computed per patch.
        if self.patches_x * self.patches_y > self.config.max_patches:
            side = self.config.patch_inner_px * (self.config.pixel_scale_arcsec or 0.0) / 3600.0
            raise InputError(f"the input images need a tract of {self.patches_x}x{self.patches_y} patches "
                             f"({self.patches_x * side:.3g} x {self.patches_y * side:.3g} deg), more than "
                             f"skymap.max_patches = {self.config.max_patches}: do they belong to one field, and "
                             f"are their WCSs right? Set skymap.center_ra/center_dec and patches, or raise "
                             f"skymap.max_patches")

    @property
    def pixel_scale_arcsec(self) -> float:
        """The co-add pixel scale, arcsec per pixel (set: :meth:`from_config` refuses an automatic one)."""
        scale = self.config.pixel_scale_arcsec
        if scale is None:
            raise ValueError("the sky map's pixel scale is automatic: set it from the inputs first "
                             "(SkyMapConfig.with_native_scale)")
        return scale

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config: SkyMapConfig,
                    footprints: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None) -> SkyMap:
        """The sky map ``config`` describes, filling its automatic parts from image ``footprints``.

        ``footprints`` maps an image's name to its edge points (RA, Dec arrays,
        degrees); they are used in name order, so the result never depends on
        the order images arrive in. With no centre given, the tract is
        centred on the RA/Dec box of the images near the median image centre
        (within ``max_radius_deg``; fields away from the poles -- give the
        centre near them); with no patch count, it gets just enough patches
        to cover those images.
        """
        if config.pixel_scale_arcsec is None:
            raise ValueError("the sky map's pixel scale is automatic: set it from the inputs first "
                             "(SkyMapConfig.with_native_scale)")
        # SkyMapConfig.validate takes both centre coordinates or neither.
        centre = (None if config.center_ra is None or config.center_dec is None
                  else (float(config.center_ra), float(config.center_dec)))
        if centre is not None and config.patches is not None:
            return cls(config, *centre, *config.patches)
        ordered = [footprints[k] for k in sorted(footprints)] if footprints else []
        if not ordered:
            raise ValueError("an automatic sky map needs at least one image footprint")
        centres = np.array([_mean_direction(ra, dec) for ra, dec in ordered])
        if centre is not None:
            ra0, dec0 = centre
            near = list(ordered)
        else:
            # A robust centre: the median of image centres, then the images near it.
            med_ra, med_dec = _median_centre(centres)
            near = [fp for fp, c in zip(ordered, centres)
                    if _separation_deg(c[0], c[1], med_ra, med_dec) <= config.max_radius_deg]
            if not near:
                raise ValueError("no image lies within max_radius_deg of the median image centre")
            # The middle of the images' RA/Dec bounding box: made of minima and maxima only, so repeated
            # or reordered images give the same tract to the last bit.
            ra = np.concatenate([(fp[0] - med_ra + 180.0) % 360.0 - 180.0 + med_ra for fp in near])
            dec = np.concatenate([fp[1] for fp in near])
            ra0, dec0 = float((ra.min() + ra.max()) / 2 % 360.0), float((dec.min() + dec.max()) / 2)
        if config.patches is not None:
            return cls(config, ra0, dec0, *config.patches)
        probe = cls(config, ra0, dec0, 1, 1)
        x, y = probe.world_to_tract(np.concatenate([fp[0] for fp in near]), np.concatenate([fp[1] for fp in near]))
        # Offsets from the tract centre (pixel (inner-1)/2 of the 1x1 probe) in units of patches.
        half = (config.patch_inner_px - 1) / 2
        extent_x = 2 * max(abs(x.min() - half), abs(x.max() - half)) + 1
        extent_y = 2 * max(abs(y.min() - half), abs(y.max() - half)) + 1
        return cls(config, ra0, dec0, max(1, int(np.ceil(extent_x / config.patch_inner_px))),
                   max(1, int(np.ceil(extent_y / config.patch_inner_px))))

    # ------------------------------------------------------------------ tract geometry
    @property
    def tract_shape(self) -> tuple[int, int]:
        """(ny, nx) of the union of inner regions."""
        return self.patches_y * self.config.patch_inner_px, self.patches_x * self.config.patch_inner_px

    @property
    def patch_shape(self) -> tuple[int, int]:
        """(ny, nx) of every patch, border included."""
        side = self.config.patch_inner_px + 2 * self.config.patch_border_px
        return side, side

    def tract_wcs(self) -> WCS:
        """WCS of the tract grid: pixel (0, 0) is the first inner pixel of patch (0, 0)."""
        ny, nx = self.tract_shape
        proj = self.config.projection
        wcs = WCS(naxis=2)
        wcs.wcs.ctype = [f"RA---{proj}", f"DEC--{proj}"]
        wcs.wcs.crval = [self.center_ra, self.center_dec]
        wcs.wcs.crpix = [(nx + 1) / 2, (ny + 1) / 2]
        scale = self.pixel_scale_arcsec / 3600.0
        wcs.wcs.cd = [[-scale, 0.0], [0.0, scale]]
        return wcs

    def world_to_tract(self, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tract pixel coordinates (x, y), 0-based, of sky positions ``ra``, ``dec`` (degrees)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            x, y = self.tract_wcs().all_world2pix(ra, dec, 0)
        return np.asarray(x), np.asarray(y)

    def tract_to_world(self, x: float, y: float) -> tuple[float, float]:
        """Sky position (ra, dec) in degrees of tract pixel (``x``, ``y``), 0-based."""
        ra, dec = self.tract_wcs().all_pix2world([x], [y], 0)
        return float(ra[0]), float(dec[0])

    # ------------------------------------------------------------------ patches
    def patch_names(self) -> list[str]:
        """Names of every patch of the tract, row by row."""
        return [self.patch_name(i, j) for j in range(self.patches_y) for i in range(self.patches_x)]

    @staticmethod
    def patch_name(i: int, j: int) -> str:
        """Rubin's patch name: ``"i,j"``."""
        return f"{i},{j}"

    @staticmethod
    def patch_index(name: str) -> tuple[int, int]:
        """Patch indices (i, j) of the patch named ``name`` (``"i,j"``)."""
        i, j = name.split(",")
        return int(i), int(j)

    def patch_number(self, name: str) -> int:
        """Sequence number of a patch in the tract (row-major)."""
        i, j = self.patch_index(name)
        return j * self.patches_x + i

    def patch_origin(self, name: str) -> tuple[int, int]:
        """Tract pixel (x, y) of the patch's pixel (0, 0), border included."""
        i, j = self.patch_index(name)
        inner, border = self.config.patch_inner_px, self.config.patch_border_px
        return i * inner - border, j * inner - border

    def patch_wcs(self, name: str) -> WCS:
        """WCS of a patch: the tract's, shifted to the patch origin."""
        x0, y0 = self.patch_origin(name)
        wcs = self.tract_wcs()
        wcs.wcs.crpix = [wcs.wcs.crpix[0] - x0, wcs.wcs.crpix[1] - y0]
        return wcs

    def in_inner(self, name: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Whether patch pixel coordinates (x, y) lie in the patch's inner region (half-open, pixel edges)."""
        border, inner = self.config.patch_border_px, self.config.patch_inner_px
        lo, hi = border - 0.5, border + inner - 0.5
        return (x >= lo) & (x < hi) & (y >= lo) & (y < hi)

    def overlaps(self, ra: np.ndarray, dec: np.ndarray, pad: int = 3) -> dict[str, PatchBox]:
        """Patches a footprint (edge points, degrees) overlaps, and the box it covers in each (patch pixels).

        The box is the footprint's bounding box in the patch grid, widened by
        ``pad`` pixels and clipped to the patch.
        """
        x, y = self.world_to_tract(ra, dec)
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            return {}
        out = {}
        ny, nx = self.patch_shape
        for name in self.patch_names():
            ox, oy = self.patch_origin(name)
            xa, xb = int(np.floor(x.min() - ox)) - pad, int(np.ceil(x.max() - ox)) + pad + 1
            ya, yb = int(np.floor(y.min() - oy)) - pad, int(np.ceil(y.max() - oy)) + pad + 1
            xa, ya, xb, yb = max(xa, 0), max(ya, 0), min(xb, nx), min(yb, ny)
            if xa < xb and ya < yb:
                out[name] = PatchBox(xa, ya, xb - xa, yb - ya)
        return out


def _median_centre(centres: np.ndarray) -> tuple[float, float]:
    """The per-axis median of (ra, dec) centres, with RA unwrapped around the first centre."""
    ra = centres[:, 0]
    ra = (ra - ra[0] + 180.0) % 360.0 - 180.0 + ra[0]
    return float(np.median(ra) % 360.0), float(np.median(centres[:, 1]))
