"""Normalisation, pooling and resampling of group feature maps ``(B, C, |G|, H, W)``.

All of these treat the orientation axis as data and act identically on every orientation plane, so they
commute with the regular action ``L_g`` (spatial pooling exactly when its grid is symmetric:
``(H + 2 * padding - kernel_size) % stride == 0``).
"""

import torch.nn.functional as F
from torch import nn

from equipath.groups import get_group
from equipath.nn.conv import check_input
from equipath.nn.shapes import check_shape

__all__ = ["GroupBatchNorm", "GroupPool", "GroupMaxPool2d", "GroupAvgPool2d", "GroupUpsample"]


def _check_group_map(layer, x, group_order):
    check_shape(layer, x, ("C", group_order, "H", "W"))


class GroupBatchNorm(nn.BatchNorm3d):
    """Batch normalisation with moments per group feature map (seed 000): one mean and variance per
    channel over batch, orientations and space, one affine pair per channel, so ``BN(L_g f) = L_g BN(f)``.

    Shapes: ``(B, C, |G|, H, W) -> (B, C, |G|, H, W)``. Extra keyword arguments go to ``nn.BatchNorm3d``.

    Example:
        >>> import torch
        >>> GroupBatchNorm(4, "p4m")(torch.randn(2, 4, 8, 5, 5)).shape
        torch.Size([2, 4, 8, 5, 5])
    """

    def __init__(self, channels: int, group, **kwargs):
        super().__init__(channels, **kwargs)
        self.group = get_group(group)

    def forward(self, x):
        check_input(type(self).__name__, x, self.num_features, self.group.order)
        return super().forward(x)


class GroupPool(nn.Module):
    """G -> Z2 pooling over orientations (seed 000, seed 004 eq. 9): ``mean`` or ``max`` over ``|G|``,
    an invariant of the orientation permutation, so ``P(L_g f) = T_g P(f)``.

    Shapes: ``(B, C, |G|, H, W) -> (B, C, H, W)``.

    Example:
        >>> import torch
        >>> GroupPool("p4", "max")(torch.randn(2, 3, 4, 5, 5)).shape
        torch.Size([2, 3, 5, 5])
    """

    def __init__(self, group, mode: str = "mean"):
        super().__init__()
        if mode not in ("mean", "max"):
            raise ValueError(f"GroupPool: mode must be 'mean' or 'max', got {mode!r}")
        self.group, self.mode = get_group(group), mode

    def forward(self, x):
        _check_group_map(type(self).__name__, x, self.group.order)
        return x.mean(2) if self.mode == "mean" else x.amax(2)

    def extra_repr(self):
        return f"group={self.group.name}, mode={self.mode}"


class _SpatialPool(nn.Module):
    def __init__(self, kernel_size: int, group, stride: int | None = None, padding: int = 0):
        super().__init__()
        self.group = get_group(group)
        self.kernel_size, self.stride, self.padding = kernel_size, stride or kernel_size, padding

    def forward(self, x):
        _check_group_map(type(self).__name__, x, self.group.order)
        B, C, G = x.shape[:3]
        y = self._pool(x.flatten(1, 2))  # (B, C * |G|, H', W')
        return y.view(B, C, G, *y.shape[-2:])

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, group={self.group.name}, stride={self.stride}, padding={self.padding}"


class GroupMaxPool2d(_SpatialPool):
    """Spatial max pooling of every orientation plane. ``(B, C, |G|, H, W) -> (B, C, |G|, H', W')``.

    Example:
        >>> import torch
        >>> GroupMaxPool2d(2, "p4m")(torch.randn(1, 2, 8, 6, 6)).shape
        torch.Size([1, 2, 8, 3, 3])
    """

    def _pool(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)


class GroupAvgPool2d(_SpatialPool):
    """Spatial average pooling of every orientation plane. ``(B, C, |G|, H, W) -> (B, C, |G|, H', W')``.

    Example:
        >>> import torch
        >>> GroupAvgPool2d(2, "p4")(torch.randn(1, 2, 4, 6, 6)).shape
        torch.Size([1, 2, 4, 3, 3])
    """

    def _pool(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class GroupUpsample(nn.Module):
    """Group up-sample layer (seed 004): nearest or bilinear (``align_corners=False``) up-sampling of every
    orientation plane by an integer factor; both grids are symmetric, so it is exact at every size.

    Shapes: ``(B, C, |G|, H, W) -> (B, C, |G|, s * H, s * W)``.

    Example:
        >>> import torch
        >>> GroupUpsample("p4m", 2, "bilinear")(torch.randn(1, 2, 8, 3, 3)).shape
        torch.Size([1, 2, 8, 6, 6])
    """

    def __init__(self, group, scale_factor: int = 2, mode: str = "nearest"):
        super().__init__()
        if mode not in ("nearest", "bilinear"):
            raise ValueError(f"GroupUpsample: mode must be 'nearest' or 'bilinear', got {mode!r}")
        self.group, self.scale_factor, self.mode = get_group(group), scale_factor, mode

    def forward(self, x):
        _check_group_map(type(self).__name__, x, self.group.order)
        B, C, G = x.shape[:3]
        kwargs = {"align_corners": False} if self.mode == "bilinear" else {}
        y = F.interpolate(x.flatten(1, 2), scale_factor=self.scale_factor, mode=self.mode, **kwargs)
        return y.view(B, C, G, *y.shape[-2:])

    def extra_repr(self):
        return f"group={self.group.name}, scale_factor={self.scale_factor}, mode={self.mode}"
