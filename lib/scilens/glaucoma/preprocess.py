"""Retinal image preprocessing as the glaucoma study did it (dissertation Ch. 3 §3.2).

OCT (:func:`preprocess_oct`)
    Register neighbouring B-scans by translation; exclude a volume that
    translation cannot align (a neighbour shift beyond ``max_axial_shift``,
    or neighbours that still disagree after registration, as after a blink:
    Fig. 3.8); apply the shifts; flip the eye
    named by ``flip_eye`` left-right so the optic nerve is on one side for
    every scan; crop each scan to 1:1 about its centre; resize to
    ``image_size`` (224 in the paper).
CFP (:func:`preprocess_fundus`)
    Flip the eye named by ``flip_eye``; find the optic disc (the brightest
    region); subtract the local average colour (Gaussian-blurred image, the
    usual fundus normalisation) to even out lighting; crop a square around the
    disc; resize (Fig. 3.11).

Every function takes and returns numpy arrays, uint8 in, uint8 out. Training-time
augmentation is generic and lives in :mod:`scilens.vision.augment`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from scilens.core.config import Config, field

__all__ = [
    "Alignment",
    "AlignmentConfig",
    "FundusPreprocessConfig",
    "OctAlignmentError",
    "OctPreprocessConfig",
    "align_volume",
    "center_crop_square",
    "find_optic_disc",
    "preprocess_fundus",
    "preprocess_oct",
    "register_scans",
    "resize_uint8",
    "retinal_band",
    "subtract_local_average",
]


class OctAlignmentError(ValueError):
    """An OCT volume that translation cannot align; the message says which scans and why."""


@dataclass
class AlignmentConfig(Config):
    """The motion-correction check of OCT volumes."""

    max_axial_shift: float = field(0.15, "Largest axial shift between neighbouring B-scans that translation may "
                                   "correct, as a fraction of the scan height.", min=0.0, max=1.0)
    max_lateral_shift: float = field(0.05, "Largest lateral shift between neighbouring B-scans searched for, as a "
                                     "fraction of the scan width.", min=0.0, max=1.0)
    min_correlation: float = field(0.6, "Smallest correlation of neighbouring B-scans after registration "
                                   "(speckle smoothed out); below it the scans do not show the same retina.",
                                   min=-1.0, max=1.0)
    working_height: int = field(128, "B-scans are block-averaged to about this height before registration, "
                                "which averages speckle out and makes registration cheap.", min=8)


@dataclass
class Alignment:
    """Result of registering a volume's neighbouring scans.

    Attributes
    ----------
    steps : ndarray (n_scans - 1, 2)
        (axial, lateral) shift, in pixels, that registers scan ``i + 1`` to scan ``i``.
    shifts : ndarray (n_scans, 2)
        Shift of each scan that aligns it with the central scan.
    correlation : ndarray (n_scans - 1,)
        Correlation of each neighbour pair after registration.
    reason : str
        Why the volume cannot be aligned; empty when it can.
    """

    steps: np.ndarray
    shifts: np.ndarray
    correlation: np.ndarray
    reason: str

    @property
    def ok(self) -> bool:
        """Whether translation aligns the volume."""
        return not self.reason


def _block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    if factor <= 1:
        return image.astype(np.float64)
    h, w = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    return image[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


def _overlap_correlation(a: np.ndarray, b: np.ndarray, dy: int, dx: int) -> float:
    """Pearson correlation of ``a`` and ``b`` shifted by (dy, dx), over their overlap."""
    h, w = a.shape
    if abs(dy) >= h - 1 or abs(dx) >= w - 1:
        return -1.0
    a_part = a[max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)]
    b_part = b[max(0, -dy):h + min(0, -dy), max(0, -dx):w + min(0, -dx)]
    a_c, b_c = a_part - a_part.mean(), b_part - b_part.mean()
    denom = np.sqrt((a_c**2).sum() * (b_c**2).sum())
    return float((a_c * b_c).sum() / denom) if denom > 0 else 0.0


def _spectra(images: list[np.ndarray]) -> tuple[list[np.ndarray], tuple[int, int]]:
    """Zero-padded FFTs of the zero-mean images.

    Padding to twice the size makes the circular correlation of two spectra the linear one.
    """
    from scipy import fft

    h, w = images[0].shape
    shape = (fft.next_fast_len(2 * h - 1, real=True), fft.next_fast_len(2 * w - 1, real=True))
    return [fft.rfft2(im - im.mean(), s=shape) for im in images], shape


def _best_shift(fa: np.ndarray, fb: np.ndarray, shape: tuple[int, int], image_shape: tuple[int, int],
                max_dx: int) -> tuple[int, int]:
    """(dy, dx) maximising the cross-correlation sum_y a(y) b(y - d), with |dx| <= max_dx.

    Retinal layers run laterally, so a lateral shift is poorly determined
    by the image alone; bounding it keeps registration from sliding scans
    along the layers.
    """
    from scipy import fft

    h, w = image_shape
    corr = fft.irfft2(fa * np.conj(fb), s=shape)  # corr[dy mod P, dx mod Q]
    dys = np.arange(-(h - 1), h)
    dxs = np.arange(-min(max_dx, w - 1), min(max_dx, w - 1) + 1)
    window = corr[np.ix_(dys % shape[0], dxs % shape[1])]
    iy, ix = np.unravel_index(np.argmax(window), window.shape)
    return int(dys[iy]), int(dxs[ix])


def register_scans(volume: np.ndarray, config: AlignmentConfig) -> Alignment:
    """Register each B-scan to its neighbour by translation and judge whether the volume aligns.

    Parameters
    ----------
    volume : ndarray (n_scans, height, width)
    config : AlignmentConfig

    Returns
    -------
    Alignment
        With ``reason`` naming the first neighbour pair that fails, if any:
        a correlation after registration (lateral search bounded by
        ``max_lateral_shift``) below ``min_correlation``, or an axial shift
        beyond ``max_axial_shift``.
    """
    n, height, width = volume.shape
    factor = max(1, round(height / config.working_height))
    small = [ndimage.gaussian_filter(_block_mean(scan, factor), 1.0) for scan in volume]
    spectra, padded = _spectra(small)
    max_dx = int(config.max_lateral_shift * width / factor)
    steps = np.zeros((max(0, n - 1), 2))
    correlation = np.ones(max(0, n - 1))
    reason = ""
    for i in range(n - 1):
        dy, dx = _best_shift(spectra[i], spectra[i + 1], padded, small[i].shape, max_dx)
        steps[i] = (dy * factor, dx * factor)
        correlation[i] = _overlap_correlation(small[i], small[i + 1], dy, dx)
        if reason:
            continue
        # A low correlation first: then the scans do not show the same retina and the shift means nothing.
        if correlation[i] < config.min_correlation:
            reason = (f"B-scans {i}-{i + 1} correlate at {correlation[i]:.2f} after registration, below "
                      f"{config.min_correlation:g} (lost signal, or motion beyond a translation)")
        elif abs(steps[i, 0]) > config.max_axial_shift * height:
            reason = (f"B-scans {i}-{i + 1}: axial shift {abs(steps[i, 0]):.0f} px exceeds "
                      f"{config.max_axial_shift:g} of the height ({config.max_axial_shift * height:.0f} px)")
    cumulative = np.vstack([np.zeros((1, 2)), np.cumsum(steps, axis=0)])
    return Alignment(steps, cumulative - cumulative[n // 2], correlation, reason)


def align_volume(volume: np.ndarray, alignment: Alignment) -> np.ndarray:
    """Shift every scan by its :attr:`Alignment.shifts` (integer pixels; uncovered pixels become 0)."""
    out = np.zeros_like(volume)
    h, w = volume.shape[1:]
    for j, (dy, dx) in enumerate(alignment.shifts.astype(int)):
        src = volume[j, max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
        out[j, max(0, dy):max(0, dy) + src.shape[0], max(0, dx):max(0, dx) + src.shape[1]] = src
    return out


def center_crop_square(image: np.ndarray) -> np.ndarray:
    """The central square of an image (the shorter side kept whole)."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return image[top:top + side, left:left + side]


def resize_uint8(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to ``size`` x ``size`` (anti-aliased), uint8 in and out; channels kept."""
    from skimage.transform import resize

    if image.shape[0] == size and image.shape[1] == size:
        return np.asarray(image, dtype=np.uint8)
    out = resize(image, (size, size, *image.shape[2:]), order=1, anti_aliasing=True, preserve_range=True)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def retinal_band(scan: np.ndarray, level: float = 0.5, smooth: float = 0.01) -> tuple[int, int]:
    """The rows of a B-scan that hold tissue: from the inner limiting membrane to the choroid's outer edge.

    A saliency mask of an OCT model should fall on this band; what falls
    above it (vitreous) or below it (sclera, noise) is a candidate spurious
    cue. Per column, the smoothed scan's first and last rows brighter than
    ``level`` of the way from the vitreous background (the median of the top
    tenth of the scan) to the column's peak bound the tissue; the band is the
    2nd percentile of the first rows to the 98th of the last, so speckle and
    vessel shadows in a few columns do not move it. On synthetic scans
    (:func:`scilens.synth.retina.oct_volume`) it finds the truth within 2 % of
    the height.

    Parameters
    ----------
    scan : numpy.ndarray
        One B-scan, (height, width), any numeric type (the vitreous on top).
    level : float, default 0.5
        Brightness threshold, as a fraction from background to peak.
    smooth : float, default 0.01
        Gaussian smoothing, as a fraction of the height (four times it across the width).

    Returns
    -------
    tuple of int
        ``(top, bottom)``: the band's rows, half-open.
    """
    image = np.asarray(scan, dtype=np.float64)
    if image.ndim == 3:
        image = image.mean(axis=2)
    h, w = image.shape
    smoothed = ndimage.gaussian_filter(image, (max(1.0, smooth * h), max(1.0, 4 * smooth * w)))
    background = float(np.median(smoothed[: max(1, h // 10)]))
    peak = smoothed.max(axis=0)
    bright = smoothed >= background + level * (peak - background)[None, :]
    first = np.argmax(bright, axis=0)
    last = h - 1 - np.argmax(bright[::-1], axis=0)
    return int(np.percentile(first, 2)), int(np.percentile(last, 98)) + 1


@dataclass
class OctPreprocessConfig(Config):
    """OCT B-scan preprocessing."""

    flip_eye: str = field("right", "Eye whose scans are flipped left-right so the optic nerve is on one side "
                          "(the paper flips right eyes).", choices=("left", "right", "none"))
    image_size: int = field(224, "Side of the square model input, pixels.", min=8)
    alignment: AlignmentConfig = field(AlignmentConfig(), "Motion correction and exclusion.")


def preprocess_oct(volume: np.ndarray, eye: str,
                   config: OctPreprocessConfig | None = None) -> tuple[np.ndarray, Alignment]:
    """Align, flip, crop and resize an OCT volume; see the module doc.

    Parameters
    ----------
    volume : ndarray (n_scans, height, width)
        The B-scans of one volume, uint8.
    eye : str
        ``left`` or ``right``; the eye named by ``config.flip_eye`` is flipped left-right.
    config : OctPreprocessConfig, optional
        The paper's settings when omitted.

    Returns
    -------
    scans : ndarray (n_scans, size, size)
        The preprocessed scans, uint8.
    alignment : Alignment
        The registration that aligned them.

    Raises
    ------
    OctAlignmentError
        The volume cannot be aligned by translation.
    """
    config = config or OctPreprocessConfig()
    alignment = register_scans(volume, config.alignment)
    if not alignment.ok:
        raise OctAlignmentError(f"cannot be aligned by translation: {alignment.reason}")
    aligned = align_volume(volume, alignment)
    if eye == config.flip_eye:
        aligned = aligned[:, :, ::-1]
    scans = np.stack([resize_uint8(center_crop_square(scan), config.image_size) for scan in aligned])
    return scans, alignment


def _luminance(photo: np.ndarray) -> np.ndarray:
    return photo.astype(np.float64).mean(axis=2)


def _field_of_view(photo: np.ndarray, threshold: float = 20.0) -> np.ndarray:
    """Pixels inside the camera's circular field of view (the rest is near black)."""
    return ndimage.binary_opening(_luminance(photo) > threshold, iterations=2)


def find_optic_disc(photo: np.ndarray, smooth_fraction: float = 0.03) -> tuple[float, float]:
    """(row, col) of the optic disc: the brightest region of the smoothed photo inside the field of view.

    The smoothing scale (``smooth_fraction`` of the width, about half a disc
    radius) keeps thin bright reflexes from winning; the field of view is
    eroded so its rim does not.
    """
    sigma = max(1.0, smooth_fraction * photo.shape[1])
    fov = _field_of_view(photo)
    inner = ndimage.binary_erosion(fov, iterations=max(1, int(2 * sigma)))
    if not inner.any():
        raise ValueError("no field of view: the photo is black")
    smooth = ndimage.gaussian_filter(_luminance(photo) * fov, sigma)
    norm = ndimage.gaussian_filter(fov.astype(np.float64), sigma)
    score = np.where(inner, smooth / np.maximum(norm, 1e-6), -np.inf)
    row, col = np.unravel_index(np.argmax(score), score.shape)
    return float(row), float(col)


def subtract_local_average(photo: np.ndarray, sigma_fraction: float = 0.05, gain: float = 4.0) -> np.ndarray:
    """``gain * (photo - blurred photo) + 128`` per channel, outside the field of view 128.

    Removes slow lighting and colour variation between photos, keeping
    vessels, disc and cup edges.
    """
    fov = _field_of_view(photo)
    sigma = max(1.0, sigma_fraction * photo.shape[1])
    img = photo.astype(np.float64)
    # Blur only inside the field of view (normalised convolution) so the black surround does not
    # darken the average near the rim.
    weight = ndimage.gaussian_filter(fov.astype(np.float64), sigma)
    local = np.stack([ndimage.gaussian_filter(img[..., c] * fov, sigma) for c in range(3)], axis=-1)
    local /= np.maximum(weight, 1e-6)[..., None]
    out = gain * (img - local) + 128.0
    out[~fov] = 128.0
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


@dataclass
class FundusPreprocessConfig(Config):
    """Colour fundus photo preprocessing."""

    flip_eye: str = field("left", "Eye whose photos are flipped left-right so the optic disc is on one side "
                          "(the paper flips left eyes).", choices=("left", "right", "none"))
    image_size: int = field(224, "Side of the square model input, pixels.", min=8)
    crop_fraction: float = field(0.4, "Side of the square crop around the optic disc, as a fraction of the "
                                 "photo width.", min=0.05, max=1.0)
    local_average_sigma: float = field(0.05, "Width of the Gaussian local average subtracted, as a fraction of "
                                       "the photo width.", min=0.001, max=1.0)


def preprocess_fundus(photo: np.ndarray, eye: str,
                      config: FundusPreprocessConfig | None = None) -> tuple[np.ndarray, tuple[float, float]]:
    """Flip, find the disc, subtract the local average colour, crop around the disc and resize.

    Parameters
    ----------
    photo : ndarray (height, width, 3)
        A colour fundus photo, uint8.
    eye : str
        ``left`` or ``right``; the eye named by ``config.flip_eye`` is flipped left-right.
    config : FundusPreprocessConfig, optional
        The paper's settings when omitted.

    Returns
    -------
    image : ndarray (size, size, 3)
        The model input, uint8.
    disc : tuple of float
        The optic-disc centre (row, col) in the flipped photo.
    """
    config = config or FundusPreprocessConfig()
    if photo.ndim != 3 or photo.shape[2] != 3:
        raise ValueError(f"a fundus photo is (height, width, 3), got {photo.shape}")
    if eye == config.flip_eye:
        photo = photo[:, ::-1]
    disc = find_optic_disc(photo)
    flat = subtract_local_average(photo, config.local_average_sigma)
    side = max(8, round(config.crop_fraction * photo.shape[1]))
    half = side // 2
    padded = np.pad(flat, ((half, half), (half, half), (0, 0)), constant_values=128)
    top, left = round(disc[0]), round(disc[1])
    crop = padded[top:top + side, left:left + side]
    return resize_uint8(crop, config.image_size), disc
