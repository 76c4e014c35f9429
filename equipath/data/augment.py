"""Augmentation for the baselines, applied jointly to an image and its mask.

Every transform is called as ``image, mask = t(image, mask)`` with ``image`` a float tensor ``(C, H, W)``
in [0, 1] (RGB for the colour transforms) and ``mask`` a tensor ``(..., H, W)`` or None. Its random
parameters are drawn once per call, from torch's generator (seeded per ``DataLoader`` worker), and the
same geometric change is applied to the image and the mask; masks are never interpolated (nearest).

- :class:`D4`: a uniformly drawn element ``g`` of ``p4m`` (or ``p4``), applied as ``T_g`` by
  :mod:`equipath.groups`, the one implementation of the group action.
- :class:`ElasticDeform`: ``out(p) = in(p + d(p))`` for a smooth random displacement field ``d``
  (bilinear for the image, nearest for the mask).
- :class:`GaussianNoise`: ``image + N(0, s^2)`` with ``s`` drawn in ``[0, std]``, clipped to [0, 1].
- :class:`HEDJitter`: stain jitter in haematoxylin-eosin-DAB space (Ruifrok-Johnston colour
  deconvolution with scikit-image's matrices): ``hed' = hed * (1 + a) + b`` per stain.
- :class:`ColorJitter`: brightness, contrast and saturation factors.

Example:
    >>> import torch
    >>> from equipath.data.augment import make_augmentation
    >>> aug = make_augmentation(["d4", "elastic", "noise", "hed"])
    >>> image, mask = aug(torch.rand(3, 32, 32), torch.randint(0, 2, (32, 32)))
    >>> tuple(image.shape), tuple(mask.shape), mask.dtype
    ((3, 32, 32), (32, 32), torch.int64)
"""

import numpy as np
import torch
from scipy import ndimage
from skimage.color import hed_from_rgb, rgb_from_hed

from equipath.groups import get_group

__all__ = ["Compose", "D4", "ElasticDeform", "GaussianNoise", "HEDJitter", "ColorJitter",
           "AUGMENTATIONS", "make_augmentation"]


def _check(image, mask):
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or not image.is_floating_point():
        raise ValueError(f"expected a float image tensor (C, H, W), got "
                         f"{type(image).__name__} {tuple(getattr(image, 'shape', ()))}")
    if mask is not None and (not isinstance(mask, torch.Tensor) or mask.shape[-2:] != image.shape[-2:]):
        raise ValueError(f"expected a mask tensor (..., {image.shape[-2]}, {image.shape[-1]}) matching the "
                         f"image, got {type(mask).__name__} {tuple(getattr(mask, 'shape', ()))}")


def _rgb(image):
    if image.shape[0] != 3:
        raise ValueError(f"colour augmentation needs an RGB image (3, H, W), got {tuple(image.shape)}")


def _happens(p: float) -> bool:
    return p >= 1 or bool(torch.rand(()) < p)


class Compose:
    """Apply ``transforms`` in order to ``(image, mask)``."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, image, mask=None):
        for t in self.transforms:
            image, mask = t(image, mask)
        return image, mask

    def __repr__(self):
        return f"Compose({self.transforms})"


class D4:
    """A random roto-reflection: ``(T_g image, T_g mask)`` for ``g`` uniform over ``group`` (``"p4m"``,
    the dihedral group D4 of the square, or its rotations ``"p4"``), via :meth:`equipath.groups.Group.transform`.

    Example:
        >>> import torch
        >>> from equipath.data.augment import D4
        >>> image, mask = D4()(torch.rand(3, 8, 8), torch.zeros(8, 8, dtype=torch.long))
    """

    def __init__(self, group="p4m"):
        self.group = get_group(group)

    def __call__(self, image, mask=None):
        _check(image, mask)
        g = int(torch.randint(self.group.order, ()))
        image = self.group.transform(image, g).contiguous()
        if mask is not None:
            mask = self.group.transform(mask, g).contiguous()
        return image, mask

    def __repr__(self):
        return f"D4(group={self.group.name!r})"


class ElasticDeform:
    """Elastic deformation ``out(p) = in(p + d(p))``: ``d`` is white noise smoothed by a Gaussian of
    ``sigma`` pixels and scaled so its per-axis standard deviation is ``magnitude`` pixels. The image is
    resampled bilinearly (order 1), the mask by nearest neighbour (order 0); borders reflect.

    Args:
        magnitude: displacement standard deviation in pixels. Defaults to 3.
        sigma: smoothness of the field in pixels. Defaults to 10.
        p: probability of deforming. Defaults to 0.5.
    """

    def __init__(self, magnitude: float = 3.0, sigma: float = 10.0, p: float = 0.5):
        if magnitude < 0 or sigma <= 0:
            raise ValueError(f"ElasticDeform needs magnitude >= 0 and sigma > 0, got {magnitude}, {sigma}")
        self.magnitude, self.sigma, self.p = magnitude, sigma, p

    def __call__(self, image, mask=None):
        _check(image, mask)
        if not _happens(self.p):
            return image, mask
        h, w = image.shape[-2:]
        noise = torch.rand(2, h, w, dtype=torch.float64).numpy() * 2 - 1
        field = np.stack([ndimage.gaussian_filter(n, self.sigma, mode="reflect") for n in noise])
        field *= self.magnitude / (field.std(axis=(1, 2), keepdims=True) + 1e-12)
        coords = np.mgrid[0:h, 0:w].astype(np.float64) + field  # (2, H, W) where each pixel reads from
        img = image.detach().cpu().numpy()
        out = np.stack([ndimage.map_coordinates(c, coords, order=1, mode="reflect") for c in img])
        image = torch.from_numpy(out.astype(img.dtype, copy=False)).to(image.device)
        if mask is not None:
            m = mask.detach().cpu().numpy()
            flat = m.reshape(-1, h, w)
            warped = np.stack([ndimage.map_coordinates(c, coords, order=0, mode="reflect") for c in flat])
            mask = torch.from_numpy(warped.reshape(m.shape)).to(mask.device)
        return image, mask

    def __repr__(self):
        return f"ElasticDeform(magnitude={self.magnitude}, sigma={self.sigma}, p={self.p})"


class GaussianNoise:
    """``clip(image + N(0, s^2), 0, 1)`` with ``s`` uniform in ``[0, std]``; the mask is unchanged.

    Args:
        std: largest noise standard deviation. Defaults to 0.03.
        p: probability of adding noise. Defaults to 0.5.
    """

    def __init__(self, std: float = 0.03, p: float = 0.5):
        if std < 0:
            raise ValueError(f"GaussianNoise needs std >= 0, got {std}")
        self.std, self.p = std, p

    def __call__(self, image, mask=None):
        _check(image, mask)
        if not _happens(self.p):
            return image, mask
        s = float(torch.rand(())) * self.std
        return (image + s * torch.randn_like(image)).clamp_(0, 1), mask

    def __repr__(self):
        return f"GaussianNoise(std={self.std}, p={self.p})"


class HEDJitter:
    """Stain jitter by colour deconvolution: optical density ``od = -log(max(rgb, 1e-6))``, stain
    concentrations ``hed = od @ hed_from_rgb`` (``skimage.color``), ``hed' = hed * (1 + a) + b`` with
    ``a ~ U(-sigma, sigma)`` and ``b ~ U(-bias, bias)`` per stain (haematoxylin, eosin, DAB), and back:
    ``rgb' = exp(-hed' @ rgb_from_hed)``, clipped to [0, 1]. With ``a = b = 0`` it is the identity (unlike
    ``rgb2hed`` / ``hed2rgb``, which clip negative concentrations).

    Args:
        sigma: relative change of each stain's concentration. Defaults to 0.05.
        bias: additive change of each concentration. Defaults to 0.01.
        p: probability of jittering. Defaults to 1.
    """

    def __init__(self, sigma: float = 0.05, bias: float = 0.01, p: float = 1.0):
        self.sigma, self.bias, self.p = sigma, bias, p

    def __call__(self, image, mask=None):
        _check(image, mask)
        _rgb(image)
        if not _happens(self.p):
            return image, mask
        a = (torch.rand(3, dtype=torch.float64).numpy() * 2 - 1) * self.sigma
        b = (torch.rand(3, dtype=torch.float64).numpy() * 2 - 1) * self.bias
        rgb = image.detach().cpu().numpy().astype(np.float64).transpose(1, 2, 0)  # (H, W, 3)
        hed = -np.log(np.maximum(rgb, 1e-6)) @ hed_from_rgb
        rgb = np.clip(np.exp(-(hed * (1 + a) + b) @ rgb_from_hed), 0, 1).transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(rgb)).to(image.dtype).to(image.device), mask

    def __repr__(self):
        return f"HEDJitter(sigma={self.sigma}, bias={self.bias}, p={self.p})"


class ColorJitter:
    """Brightness, contrast and saturation factors drawn in ``[1 - x, 1 + x]``: ``image * f_b``, a blend
    with the mean grey level by ``f_c`` and with the grey image by ``f_s``; clipped to [0, 1].

    Args:
        brightness, contrast, saturation: half-widths of the factor ranges. Default to 0.1 each.
        p: probability of jittering. Defaults to 1.
    """

    def __init__(self, brightness: float = 0.1, contrast: float = 0.1, saturation: float = 0.1, p: float = 1.0):
        self.brightness, self.contrast, self.saturation, self.p = brightness, contrast, saturation, p

    def __call__(self, image, mask=None):
        _check(image, mask)
        _rgb(image)
        if not _happens(self.p):
            return image, mask
        f = 1 + (torch.rand(3) * 2 - 1) * torch.tensor([self.brightness, self.contrast, self.saturation])
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=image.dtype, device=image.device)
        image = (image * f[0]).clamp(0, 1)
        grey = (image * weights[:, None, None]).sum(0, keepdim=True)  # (1, H, W)
        image = (grey.mean() + f[1] * (image - grey.mean())).clamp(0, 1)
        grey = (image * weights[:, None, None]).sum(0, keepdim=True)
        return (grey + f[2] * (image - grey)).clamp(0, 1), mask

    def __repr__(self):
        return (f"ColorJitter(brightness={self.brightness}, contrast={self.contrast}, "
                f"saturation={self.saturation}, p={self.p})")


AUGMENTATIONS = {
    "d4": lambda: D4("p4m"),
    "c4": lambda: D4("p4"),
    "elastic": ElasticDeform,
    "noise": GaussianNoise,
    "hed": HEDJitter,
    "color": ColorJitter,
}


def make_augmentation(names) -> Compose:
    """A :class:`Compose` of the named transforms with their defaults, in the given order; names are keys
    of :data:`AUGMENTATIONS` (``"d4"``, ``"c4"``, ``"elastic"``, ``"noise"``, ``"hed"``, ``"color"``)."""
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"unknown augmentation {unknown[0]!r}: expected some of {', '.join(AUGMENTATIONS)}")
    return Compose(AUGMENTATIONS[n]() for n in names)
