"""Tissue detection (seed 000 section 3.1, seed 001): RGB -> HSV, blur, threshold.

A pixel is tissue when its blurred saturation is above ``saturation`` (default 0.07, range [0, 1]) and its
blurred value above ``value`` (default 0.1): glass is bright and grey (low saturation), pen marks and
folds far from the background are dark. ``method="otsu"`` replaces the fixed saturation threshold by Otsu's
threshold of the blurred saturation. A patch is kept when it holds any tissue pixel, which is seed 000's
"maximum saturation above 0.07".

Example:
    >>> import numpy as np
    >>> from equipath.data.tissue import TissueOptions, tissue_mask
    >>> rgb = np.full((40, 40, 3), 240, np.uint8)     # glass
    >>> rgb[10:30, 10:30] = (200, 120, 190)           # pink tissue
    >>> mask = tissue_mask(rgb, TissueOptions())
    >>> int(mask.sum()) >= 400 - 40 and not mask[0, 0]
    True
"""

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

__all__ = ["TissueOptions", "tissue_mask", "overlay_mask", "resize_nearest"]


@dataclass(frozen=True)
class TissueOptions:
    """How tissue is found.

    Attributes:
        method: ``"hsv"`` (fixed thresholds, seed 000) or ``"otsu"``. Defaults to ``"hsv"``.
        saturation: minimum blurred saturation in [0, 1] for ``"hsv"``. Defaults to 0.07.
        value: minimum blurred value (brightness) in [0, 1]. Defaults to 0.1.
        blur_sigma: Gaussian blur in mask pixels before thresholding. Defaults to 1.0.
        mpp: microns per mask pixel; the mask is computed on the slide resampled to this resolution.
            Defaults to 8.0 (about Camelyon16 level 5).
    """

    method: str = "hsv"
    saturation: float = 0.07
    value: float = 0.1
    blur_sigma: float = 1.0
    mpp: float = 8.0

    def __post_init__(self):
        if self.method not in ("hsv", "otsu"):
            raise ValueError(f"tissue method must be 'hsv' or 'otsu', got {self.method!r}")
        for name in ("saturation", "value"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"tissue {name} threshold must be in [0, 1], got {getattr(self, name)}")
        if self.blur_sigma < 0 or not self.mpp > 0:
            raise ValueError(f"tissue blur_sigma must be >= 0 and mpp > 0, got {self.blur_sigma} and {self.mpp}")


def saturation_value(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HSV saturation and value ``(H, W)`` float64 of an RGB image ``(H, W, 3) uint8``, bit for bit what
    ``skimage.color.rgb2hsv`` gives (``V = max / 255``, ``S = (max - min) / max``, 0 where ``max = min``),
    computed from the per-pixel max and min without the float64 copy of the image and the hue: a whole-slide
    thumbnail needs about a third of the memory."""
    high, low = rgb.max(axis=-1), rgb.min(axis=-1)
    val = np.multiply(high, 1.0 / 255, dtype=np.float64)  # as skimage's img_as_float scales uint8
    delta = val - np.multiply(low, 1.0 / 255, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        sat = delta / val
    sat[delta == 0.0] = 0.0
    return sat, val


def tissue_mask(rgb: np.ndarray, options: TissueOptions = TissueOptions()) -> np.ndarray:
    """Boolean tissue mask ``(H, W)`` of an RGB image ``(H, W, 3) uint8``."""
    if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"tissue_mask: expected an (H, W, 3) uint8 image, got {rgb.shape} {rgb.dtype}")
    sat, val = saturation_value(rgb)
    if options.blur_sigma > 0:
        sat = ndimage.gaussian_filter(sat, options.blur_sigma)
        val = ndimage.gaussian_filter(val, options.blur_sigma)
    if options.method == "otsu":
        threshold = threshold_otsu(sat) if np.ptp(sat) > 1e-6 else np.inf
    else:
        threshold = options.saturation
    return (sat > threshold) & (val > options.value)


def overlay_mask(rgb: np.ndarray, mask: np.ndarray, color=(0, 160, 0), alpha: float = 0.4) -> np.ndarray:
    """``rgb`` ``(H, W, 3) uint8`` with ``mask`` (any shape; resized by nearest neighbour) tinted in ``color``."""
    mask = resize_nearest(mask.astype(bool), rgb.shape[:2])
    out = rgb.astype(np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(color, np.float32)
    return np.round(out).astype(np.uint8)


def resize_nearest(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a 2-D array to ``shape`` (pixel centres mapped onto pixel centres)."""
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * a.shape[0] / shape[0]).astype(int), a.shape[0] - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * a.shape[1] / shape[1]).astype(int), a.shape[1] - 1)
    return a[rows[:, None], cols[None, :]]
