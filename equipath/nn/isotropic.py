"""Isotropic convolution (seed 002): planar kernels that depend only on the distance to their centre."""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from equipath.nn.conv import CachedFilter, check_input

__all__ = ["IsotropicConv2d"]


def _ring_index(k: int) -> tuple[torch.Tensor, int]:
    """``(k, k)`` index of each kernel position's ring (positions of equal squared radius), and the ring count."""
    c = np.arange(k) * 2 - (k - 1)  # doubled offsets from the centre: integers for odd and even k
    radii, index = np.unique(c[:, None] ** 2 + c[None, :] ** 2, return_inverse=True)
    return torch.from_numpy(index.reshape(k, k)), len(radii)


class IsotropicConv2d(CachedFilter):
    """Planar convolution with radial kernels ``K(x) = f(|x|)`` (seed 002): one learned value per ring of
    equal radius. The kernel is invariant under every grid symmetry, so for every element of p4m (hence
    of p4 and z2), ``kappa(T_g f) = T_g kappa(f)`` at symmetric grids.

    Args: as ``nn.Conv2d`` (square kernels, no groups).

    Shapes: ``(B, C_in, H, W) -> (B, C_out, H', W')``; ``weight`` is ``(C_out, C_in, n_rings)``
    (n_rings = 3 for k = 3, 6 for k = 5).

    Example:
        >>> import torch
        >>> conv = IsotropicConv2d(3, 8, 3, padding=1)
        >>> conv.weight.shape, conv(torch.randn(2, 3, 10, 10)).shape
        (torch.Size([8, 3, 3]), torch.Size([2, 8, 10, 10]))
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, bias=True):
        super().__init__()
        index, rings = _ring_index(kernel_size)
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.register_buffer("_index", index, persistent=False)
        fan_in = in_channels * kernel_size**2
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, rings) * math.sqrt(2.0 / fan_in))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def _expand(self) -> torch.Tensor:
        return self.weight[:, :, self._index]  # (C_out, C_in, k, k)

    def forward(self, x):
        check_input(type(self).__name__, x, self.in_channels, None)
        return F.conv2d(self._planar(x), self.filter(), self.bias, self.stride, self.padding, self.dilation)

    @torch.no_grad()
    def fold(self) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` with the same outputs."""
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                         self.dilation, bias=self.bias is not None)
        conv = conv.to(device=self.weight.device, dtype=self.weight.dtype)
        conv.weight.copy_(self._expand())
        if self.bias is not None:
            conv.bias.copy_(self.bias)
        return conv

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}")
