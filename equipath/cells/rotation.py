"""Rotation of planar images by arbitrary angles (bilinear resampling with ``affine_grid`` /
``grid_sample``). Quarter turns of the pixel grid are group elements and belong to ``equipath.groups``;
this module covers the continuous angles of the rotation loss and of the KL-under-rotation evaluation.

Convention: ``rotate(x, t)`` turns the image counter-clockwise by ``t`` radians about its centre,
``rotate(x, t)(p) = x(R_t^-1 p)``, so ``rotate(x, pi / 2)`` equals ``get_group("p4").transform(x, 1)``
up to interpolation rounding.

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


def rotate(x: torch.Tensor, angle, padding_mode: str = "reflection") -> torch.Tensor:
    """Rotate ``x`` ``(B, C, H, W)`` counter-clockwise by ``angle`` radians (a float or a ``(B,)`` tensor).

    Pixels that come from outside the image are filled by ``padding_mode`` (``"reflection"``,
    ``"border"`` or ``"zeros"``). Defaults to ``"reflection"``, which continues a cell patch's
    background. Differentiable in ``x`` and ``angle``.
    """
    if x.dim() != 4:
        raise ValueError(f"rotate: expected a planar tensor of shape (B, C, H, W), got {tuple(x.shape)}")
    angle = torch.as_tensor(angle, dtype=x.dtype, device=x.device).expand(x.shape[0])
    cos, sin, zero = torch.cos(angle), torch.sin(angle), torch.zeros_like(angle)
    # affine_grid maps output to input coordinates (x right, y down): the inverse rotation R_t^-1.
    theta = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)
