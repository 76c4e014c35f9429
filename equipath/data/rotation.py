"""Rotation of square images by arbitrary angles, in radians (bilinear resampling with ``affine_grid`` /
``grid_sample``): the one rotation helper of equipath. Quarter turns of the pixel grid are group elements
and belong to :mod:`equipath.groups`; this module covers the continuous angles in between (the cells'
rotation loss and KL under rotation, the stability analysis's sub-90-degree rotations).

Convention: ``rotate(x, t)`` turns the image counter-clockwise by ``t`` radians about its centre,
``rotate(x, t)(p) = x(R_t^-1 p)``, the sense of ``rot90`` in :mod:`equipath.groups`: ``rotate(x, pi / 2)``
equals ``get_group("p4").transform(x, 1)`` up to interpolation rounding.

Example:
    >>> import math, torch
    >>> from equipath.groups import get_group
    >>> x = torch.rand(1, 3, 8, 8)
    >>> bool(torch.allclose(rotate(x, math.pi / 2), get_group("p4").transform(x, 1), atol=1e-5))
    True
"""

import torch
import torch.nn.functional as F

__all__ = ["rotate"]


def rotate(x: torch.Tensor, angle, padding_mode: str = "reflection", mode: str = "bilinear") -> torch.Tensor:
    """Rotate square images ``x`` ``(B, C, H, H)`` counter-clockwise by ``angle`` radians (a float or a
    ``(B,)`` tensor) about their centre.

    Pixels are resampled by ``grid_sample`` (``mode``, ``align_corners=False``); those that come from outside
    the image are filled by ``padding_mode`` (``"reflection"``, ``"border"`` or ``"zeros"``). Defaults to
    ``"reflection"``, which continues a patch's background. Differentiable in ``x`` and ``angle``.
    """
    if x.dim() != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"rotate: expected square images (B, C, H, H), got {tuple(x.shape)}")
    angle = torch.as_tensor(angle, dtype=x.dtype, device=x.device).expand(x.shape[0])
    cos, sin, zero = torch.cos(angle), torch.sin(angle), torch.zeros_like(angle)
    # affine_grid maps output to input coordinates (x right, y down): the inverse rotation R_t^-1.
    theta = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode=padding_mode, align_corners=False)
