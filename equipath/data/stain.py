"""Stain normalisation to a reference image: Macenko and Reinhard, as data transforms whose fitted reference
travels with the model (a plain dict, saved in the checkpoint under ``"stain"``).

**Macenko** (Macenko et al. 2009). Optical density ``OD = -ln(I)`` of RGB ``I`` in (0, 1] (clipped at
1/255); pixels with an OD below ``beta`` (0.15) in any channel are background. The two principal axes of
the tissue ODs span a plane; each pixel's angle in it is taken, and the ``alpha``-th and
``(100 - alpha)``-th percentiles of the angles (alpha = 1) give the two stain vectors (unit OD vectors),
haematoxylin first (the one with the larger red OD). Concentrations ``C`` solve ``OD = C S`` (least
squares); the reference's 99th-percentile concentrations ``m_ref`` are kept. An image is normalised by
fitting its own ``S_img`` and ``m_img``, scaling ``C`` by ``m_ref / m_img`` and rebuilding
``I = exp(-C S_ref)``.

**Reinhard** (Reinhard et al. 2001, in CIELAB as most pathology tools do): every channel of the image's
LAB is shifted and scaled to the reference's mean and standard deviation,
``lab' = (lab - mean_img) / std_img * std_ref + mean_ref``, then converted back to RGB.

Both take ``uint8 (H, W, 3)`` arrays (returning uint8) or float tensors ``(3, H, W)`` in [0, 1] (returning
the same), and serve as the joint ``transform(image, mask)`` of the data sets (:class:`StainTransform`).
By default every image is measured on its own (its stains, its LAB statistics): right for patches. For a
slide read tile by tile, ``normalizer.from_source(thumbnail)`` measures the slide once and returns a
transform that applies that same mapping to every tile (a tile with little tissue would otherwise be
measured on almost nothing).

Example:
    >>> import numpy as np
    >>> reference = np.random.default_rng(0).integers(60, 230, (32, 32, 3), dtype=np.uint8)
    >>> norm = fit_stain_normalizer("reinhard", reference)
    >>> same = stain_from_state(norm.state_dict())
    >>> bool(np.array_equal(same(reference), norm(reference)))
    True
"""

import numpy as np
import torch
from skimage.color import lab2rgb, rgb2lab

__all__ = ["BlankImageError", "MacenkoNormalizer", "ReinhardNormalizer", "StainTransform", "fit_stain_normalizer",
           "stain_from_state", "stain_from_checkpoint", "STAIN_METHODS"]

_EPS = 1.0 / 255.0


class BlankImageError(ValueError):
    """Macenko found too few tissue pixels in an image to measure its stains."""


def _as_float_rgb(image) -> tuple[np.ndarray, str]:
    """``(H, W, 3)`` float64 in [0, 1] and the input kind (``uint8`` / ``tensor`` / ``float``)."""
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"stain normalisation: expected a (3, H, W) tensor, got {tuple(image.shape)}")
        return image.detach().cpu().double().permute(1, 2, 0).numpy(), "tensor"
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"stain normalisation: expected an (H, W, 3) RGB image, got shape {array.shape}")
    if array.dtype == np.uint8:
        return array.astype(np.float64) / 255.0, "uint8"
    return array.astype(np.float64), "float"


def _back(rgb: np.ndarray, kind: str, like):
    rgb = np.clip(rgb, 0.0, 1.0)
    if kind == "uint8":
        return np.round(rgb * 255.0).astype(np.uint8)
    if kind == "tensor":
        return torch.from_numpy(rgb.transpose(2, 0, 1).copy()).to(like.dtype)
    return rgb


class MacenkoNormalizer:
    """Macenko normalisation (module docstring). ``fit(reference)`` then ``normalizer(image)``.

    Args:
        alpha: percentile of the angles for the extreme stain directions. Defaults to 1.
        beta: OD below which a channel counts as background. Defaults to 0.15.
    """

    method = "macenko"

    def __init__(self, alpha: float = 1.0, beta: float = 0.15):
        self.alpha, self.beta = float(alpha), float(beta)
        self.stain_matrix: np.ndarray | None = None  # (2, 3): rows H, E (unit OD vectors)
        self.max_concentrations: np.ndarray | None = None  # (2,)

    def _od(self, rgb: np.ndarray) -> np.ndarray:
        return -np.log(np.clip(rgb, _EPS, 1.0)).reshape(-1, 3)  # (N, 3)

    def stains(self, image) -> tuple[np.ndarray, np.ndarray]:
        """``(stain matrix (2, 3), 99th-percentile concentrations (2,))`` of one image."""
        od = self._od(_as_float_rgb(image)[0])
        tissue = od[(od > self.beta).all(axis=1)]
        if len(tissue) < 10:
            raise BlankImageError(f"Macenko: only {len(tissue)} tissue pixels (optical density > {self.beta} in every "
                             "channel); is the image blank?")
        _, vectors = np.linalg.eigh(np.cov(tissue.T))
        plane = vectors[:, [2, 1]]  # (3, 2): the two largest principal axes
        plane[:, 0] *= np.sign(plane[:, 0].sum()) or 1.0  # point into positive OD
        plane[:, 1] *= np.sign(plane[:, 1].sum()) or 1.0
        projected = tissue @ plane  # (N, 2)
        angles = np.arctan2(projected[:, 1], projected[:, 0])
        low, high = np.percentile(angles, [self.alpha, 100.0 - self.alpha])
        v1 = plane @ np.array([np.cos(low), np.sin(low)])
        v2 = plane @ np.array([np.cos(high), np.sin(high)])
        matrix = np.stack([v1, v2] if v1[0] > v2[0] else [v2, v1])  # haematoxylin: the larger red OD
        matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
        concentrations = np.linalg.lstsq(matrix.T, self._od(_as_float_rgb(image)[0]).T, rcond=None)[0]  # (2, N)
        return matrix, np.percentile(concentrations, 99, axis=1)

    def fit(self, reference) -> "MacenkoNormalizer":
        self.stain_matrix, self.max_concentrations = self.stains(reference)
        return self

    def __call__(self, image):
        return self._apply(image, *self.stains(image))

    def from_source(self, source) -> "_FixedSource":
        """The mapping measured once on ``source`` (e.g. a slide's thumbnail), applied as it is to any image."""
        return _FixedSource(self, self.stains(source))

    def _apply(self, image, matrix, maxima):
        if self.stain_matrix is None:
            raise ValueError("Macenko: fit() a reference first")
        rgb, kind = _as_float_rgb(image)
        concentrations = np.linalg.lstsq(matrix.T, self._od(rgb).T, rcond=None)[0]  # (2, N)
        concentrations *= (self.max_concentrations / maxima)[:, None]
        out = np.exp(-(concentrations.T @ self.stain_matrix)).reshape(rgb.shape)
        return _back(out, kind, image)

    def state_dict(self) -> dict:
        return {"method": self.method, "alpha": self.alpha, "beta": self.beta,
                "stain_matrix": self.stain_matrix.tolist(), "max_concentrations": self.max_concentrations.tolist()}

    def load_state_dict(self, state: dict) -> "MacenkoNormalizer":
        self.alpha, self.beta = float(state["alpha"]), float(state["beta"])
        self.stain_matrix = np.asarray(state["stain_matrix"], dtype=np.float64).reshape(2, 3)
        self.max_concentrations = np.asarray(state["max_concentrations"], dtype=np.float64).reshape(2)
        return self


class ReinhardNormalizer:
    """Reinhard normalisation in CIELAB (module docstring). ``fit(reference)`` then ``normalizer(image)``."""

    method = "reinhard"

    def __init__(self):
        self.mean: np.ndarray | None = None  # (3,) L, a, b
        self.std: np.ndarray | None = None

    @staticmethod
    def statistics(image) -> tuple[np.ndarray, np.ndarray]:
        lab = rgb2lab(_as_float_rgb(image)[0]).reshape(-1, 3)
        return lab.mean(0), np.maximum(lab.std(0), 1e-6)

    def fit(self, reference) -> "ReinhardNormalizer":
        self.mean, self.std = self.statistics(reference)
        return self

    def __call__(self, image):
        return self._apply(image, *self.statistics(image))

    def from_source(self, source) -> "_FixedSource":
        """The mapping measured once on ``source`` (e.g. a slide's thumbnail), applied as it is to any image."""
        return _FixedSource(self, self.statistics(source))

    def _apply(self, image, mean, std):
        if self.mean is None:
            raise ValueError("Reinhard: fit() a reference first")
        rgb, kind = _as_float_rgb(image)
        out = lab2rgb((rgb2lab(rgb) - mean) / std * self.std + self.mean)
        return _back(out, kind, image)

    def state_dict(self) -> dict:
        return {"method": self.method, "mean": self.mean.tolist(), "std": self.std.tolist()}

    def load_state_dict(self, state: dict) -> "ReinhardNormalizer":
        self.mean = np.asarray(state["mean"], dtype=np.float64).reshape(3)
        self.std = np.asarray(state["std"], dtype=np.float64).reshape(3)
        return self


class _FixedSource:
    """A normaliser's mapping with the source measured once (``normalizer.from_source(image)``)."""

    def __init__(self, normalizer, measured: tuple):
        self.normalizer, self.measured = normalizer, measured

    def __call__(self, image):
        return self.normalizer._apply(image, *self.measured)


STAIN_METHODS = {"macenko": MacenkoNormalizer, "reinhard": ReinhardNormalizer}


def fit_stain_normalizer(method: str, reference):
    """A normaliser of ``method`` (``macenko`` or ``reinhard``) fitted on the ``reference`` image (an array,
    a tensor, or a path to an image file)."""
    if method not in STAIN_METHODS:
        raise ValueError(f"stain normalisation: unknown method {method!r}; expected one of {', '.join(STAIN_METHODS)}")
    if isinstance(reference, (str, bytes)) or hasattr(reference, "__fspath__"):
        from PIL import Image

        try:
            with Image.open(reference) as im:
                reference = np.asarray(im.convert("RGB"))
        except OSError as exc:
            raise ValueError(f"stain reference {reference}: not a readable image ({exc})") from None
    return STAIN_METHODS[method]().fit(reference)


def stain_from_state(state: dict):
    """The normaliser saved by ``state_dict()`` (e.g. a checkpoint's ``"stain"`` entry)."""
    method = state.get("method") if isinstance(state, dict) else None
    if method not in STAIN_METHODS:
        raise ValueError(f"stain state: unknown method {method!r}; expected one of {', '.join(STAIN_METHODS)}")
    return STAIN_METHODS[method]().load_state_dict(state)


def stain_from_checkpoint(checkpoint: dict):
    """The stain normaliser stored in a checkpoint dict (``checkpoint["stain"]``), or None when it has none."""
    state = checkpoint.get("stain")
    return None if state is None else stain_from_state(state)


class StainTransform:
    """The joint data transform ``(image, mask) -> (normalised image, mask)`` of a fitted normaliser, for
    the ``transform`` argument of the data sets (the mask is untouched). An image with too little tissue
    for Macenko to measure its stains (a background patch) passes unchanged.

    Example:
        >>> import torch, numpy as np
        >>> norm = fit_stain_normalizer("reinhard", np.full((8, 8, 3), 128, np.uint8))
        >>> image, mask = StainTransform(norm)(torch.rand(3, 8, 8), None)
        >>> tuple(image.shape), mask is None
        ((3, 8, 8), True)
    """

    def __init__(self, normalizer):
        self.normalizer = normalizer

    def __call__(self, image, mask=None):
        try:
            return self.normalizer(image), mask
        except BlankImageError:  # a patch of background (no stain to measure) passes unchanged
            return image, mask
