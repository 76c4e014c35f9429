"""Harmonic convolutions (Worrall et al., Harmonic Networks, as used in seed 003): complex feature maps
with a rotation order per stream, magnitude nonlinearity, harmonic batch-norm, average pooling, residual
blocks.

A harmonic feature map stores, for each of ``C`` channels, one complex map per rotation order ``m`` in a
tuple ``orders`` (``M = len(orders)``), as a real tensor ``(B, C, M, 2, H, W)`` whose axis ``3`` holds
(real, imaginary). ``.flatten(1, 3)`` gives the planar view ``(B, C * M * 2, H, W)`` one ``conv2d`` takes.

Transformation law. Let ``R_t`` rotate the plane counter-clockwise by ``t`` (for ``t = 90 deg`` this is
``equipath.groups`` element ``(1, 0)``, ``torch.rot90(x, 1, (-2, -1))``). A stream of order ``m``
transforms as

    F_m[R_t x](p) = exp(i m t) F_m[x](R_t^-1 p),

so the magnitude ``|F_m|`` of every stream is a rotation-invariant scalar field (order ``0``: the complex
value itself is invariant) and the phase of an order-``m`` stream turns by ``m t``. A filter of order
``k``, ``W_k(r, phi) = R(r) exp(i (k phi + beta))`` with a learned radial profile ``R`` and phase
``beta``, maps an order-``m`` stream to an order ``m + k`` stream. Every layer here keeps the law: exactly
(to float rounding) for quarter turns on symmetric sampling grids, approximately for other angles, where
the filters are sampled on the pixel grid. Polar coordinates of a filter tap at row offset ``di`` and
column offset ``dj`` are ``r = |(dj, -di)|``, ``phi = atan2(-di, dj)`` (x to the right, y up).

Example:
    >>> import torch
    >>> from equipath.nn.harmonic import HarmonicConv2d, magnitude
    >>> conv = HarmonicConv2d(3, 4, 5, in_orders=0, out_orders=(0, 2), padding=2)
    >>> y = conv(torch.randn(2, 3, 16, 16))       # a real image is an order-0 stream: (B, C, M, 2, H, W)
    >>> y.shape, magnitude(y).shape
    (torch.Size([2, 4, 2, 2, 16, 16]), torch.Size([2, 4, 2, 16, 16]))
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from equipath.nn.shapes import check_shape

__all__ = [
    "check_harmonic", "magnitude", "as_complex", "HarmonicConv2d", "MagnitudeReLU", "HarmonicBatchNorm",
    "HarmonicAvgPool2d", "HarmonicResBlock",
]

_EPS = 1e-12


def _orders(orders, name: str) -> tuple[int, ...]:
    orders = (orders,) if isinstance(orders, int) else tuple(orders)
    if not orders or not all(isinstance(m, int) for m in orders) or len(set(orders)) != len(orders):
        raise ValueError(f"{name}: expected an int or a sequence of distinct ints, got {orders!r}")
    return orders


def check_harmonic(layer: str, x: torch.Tensor, channels: int, n_orders: int) -> None:
    """Raise ``ValueError`` unless ``x`` is ``(B, channels, n_orders, 2, H, W)``."""
    check_shape(layer, x, (channels, n_orders, 2, "H", "W"), "a harmonic feature map")


def magnitude(x: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """``|F|`` per channel and order: ``(B, C, M, 2, H, W) -> (B, C, M, H, W)``; ``sqrt(re^2 + im^2 + eps)``."""
    return (x.square().sum(3) + eps).sqrt()


def as_complex(x: torch.Tensor) -> torch.Tensor:
    """The complex tensor ``(B, C, M, H, W)`` of a harmonic map ``(B, C, M, 2, H, W)``."""
    return torch.complex(x[:, :, :, 0], x[:, :, :, 1])


def _polar(k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Radius and angle ``(k, k)`` of every filter tap, x to the right and y up (float64)."""
    c = (k - 1) / 2
    i, j = torch.meshgrid(torch.arange(k, dtype=torch.float64), torch.arange(k, dtype=torch.float64), indexing="ij")
    u, v = j - c, c - i
    return torch.hypot(u, v), torch.atan2(v, u)


class HarmonicConv2d(nn.Module):
    """Harmonic convolution between streams of given rotation orders (Worrall et al.; seed 003).

    The filter from input stream ``m_in`` to output stream ``m_out`` has rotation order
    ``k = m_out - m_in``: ``W(r, phi) = R(r) exp(i (k phi + beta))``, with ``R(r) = sum_n a_n
    exp(-(r - n)^2 / (2 sigma^2))`` (``n = 0 .. kernel_size // 2``, ``sigma = 0.5``, support the disk
    ``r <= kernel_size / 2``, ``W(0) = 0`` when ``k != 0``) and one learned ``a`` and ``beta`` per
    (output channel, output order, input channel, input order). The output is the complex
    cross-correlation ``sum_{m_in} W * F_{m_in}``, computed as one real ``conv2d`` on the planar view, and

        HarmonicConv2d(F[R_t x])_{m_out}(p) = exp(i m_out t) HarmonicConv2d(F[x])_{m_out}(R_t^-1 p).

    There is no bias (it would break the law for ``m != 0``); :class:`MagnitudeReLU` carries it.

    Args:
        in_channels, out_channels: complex channels C_in, C_out.
        kernel_size: odd k (an even k has no centre tap and breaks the quarter-turn symmetry).
        in_orders, out_orders: rotation order(s) of the input and output streams, an int or a tuple of
            distinct ints (0 = invariant). Defaults to 0 and 0.
        padding: zero padding on every side (``k // 2`` keeps the size). Defaults to 0.
        pool: average-pool the output over ``pool x pool`` windows at stride ``pool`` (seed 003's
            downsampling), fused into one ``(k + pool - 1)`` filter at stride ``pool``: the same numbers as
            :class:`HarmonicAvgPool2d` after the convolution, without computing the full-resolution map.
            Exact for quarter turns when ``(H + 2 * padding - k + 1) % pool == 0``. Defaults to 1.

    Shapes: ``(B, C_in, M_in, 2, H, W) -> (B, C_out, M_out, 2, H', W')``; with ``in_orders == (0,)`` a
    real planar map ``(B, C_in, H, W)`` is accepted as the order-0 stream (e.g. an image); ``weight`` is
    ``(C_out, M_out, C_in, M_in, k // 2 + 1)``, ``phase`` is ``(C_out, M_out, C_in, M_in)``.

    Example:
        >>> import torch
        >>> conv = HarmonicConv2d(2, 3, 3, in_orders=(0, 2), out_orders=2, padding=1)
        >>> conv(torch.randn(1, 2, 2, 2, 9, 9)).shape
        torch.Size([1, 3, 1, 2, 9, 9])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, in_orders=0, out_orders=0,
                 padding: int = 0, pool: int = 1):
        super().__init__()
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"HarmonicConv2d: kernel_size must be a positive odd int, got {kernel_size!r}")
        if not isinstance(pool, int) or pool < 1:
            raise ValueError(f"HarmonicConv2d: pool must be a positive int, got {pool!r}")
        self.in_channels, self.out_channels, self.kernel_size, self.padding, self.pool = (
            in_channels, out_channels, kernel_size, padding, pool)
        self.in_orders = _orders(in_orders, "HarmonicConv2d in_orders")
        self.out_orders = _orders(out_orders, "HarmonicConv2d out_orders")
        n_rings = kernel_size // 2 + 1
        r, phi = _polar(kernel_size)
        rings = torch.arange(n_rings, dtype=torch.float64).view(-1, 1, 1)
        profile = torch.exp(-(r - rings) ** 2 / (2 * 0.5**2)) * (r <= kernel_size / 2)  # (n_rings, k, k)
        k = torch.tensor([[mo - mi for mi in self.in_orders] for mo in self.out_orders], dtype=torch.float64)
        angle = k.view(*k.shape, 1, 1, 1) * phi  # (M_out, M_in, 1, k, k)
        centre = ((k != 0).view(*k.shape, 1, 1, 1) & (r == 0)).to(torch.float64)
        basis = profile * (1 - centre)  # (M_out, M_in, n_rings, k, k)
        self.register_buffer("_basis_re", (basis * torch.cos(angle)).float(), persistent=False)
        self.register_buffer("_basis_im", (basis * torch.sin(angle)).float(), persistent=False)
        M_out, M_in = len(self.out_orders), len(self.in_orders)
        fan_in = in_channels * M_in * kernel_size**2
        self.weight = nn.Parameter(torch.randn(out_channels, M_out, in_channels, M_in, n_rings) * math.sqrt(2 / fan_in))
        self.phase = nn.Parameter(torch.rand(out_channels, M_out, in_channels, M_in) * 2 * math.pi)

    def filter(self) -> torch.Tensor:
        """The real filter bank ``(C_out * M_out * 2, C_in * M_in * 2, k', k')`` of the planar view
        (``k' = k + pool - 1``)."""
        dtype = self.weight.dtype
        r_re = torch.einsum("oacbn,abnhw->oacbhw", self.weight, self._basis_re.to(dtype))
        r_im = torch.einsum("oacbn,abnhw->oacbhw", self.weight, self._basis_im.to(dtype))
        cos, sin = torch.cos(self.phase)[..., None, None], torch.sin(self.phase)[..., None, None]
        w_re, w_im = r_re * cos - r_im * sin, r_re * sin + r_im * cos  # (C_out, M_out, C_in, M_in, k, k)
        rows = [torch.stack([w_re, -w_im], 4), torch.stack([w_im, w_re], 4)]  # each (o, a, c, b, 2, k, k)
        w = torch.stack(rows, 2)  # (C_out, M_out, 2, C_in, M_in, 2, k, k): real block of a complex product
        k, s = self.kernel_size, self.pool
        w = w.reshape(self.out_channels * len(self.out_orders) * 2, self.in_channels * len(self.in_orders) * 2, k, k)
        if s == 1:
            return w
        pooled = w.new_zeros(*w.shape[:2], k + s - 1, k + s - 1)  # W'[u] = mean over the window of W[u - a]
        for a in range(s):
            for b in range(s):
                pooled[..., a:a + k, b:b + k] += w / s**2
        return pooled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and self.in_orders == (0,) and x.shape[1] == self.in_channels:
            # a real planar map (B, C_in, H, W) is an order-0 stream with imaginary part 0: real columns only
            y = F.conv2d(x, self.filter()[:, 0::2], None, self.pool, self.padding)
        else:
            check_harmonic(type(self).__name__, x, self.in_channels, len(self.in_orders))
            y = F.conv2d(x.flatten(1, 3), self.filter(), None, self.pool, self.padding)  # (B, C_out * M_out * 2, H', W')
        return y.view(x.shape[0], self.out_channels, len(self.out_orders), 2, *y.shape[-2:])

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"in_orders={self.in_orders}, out_orders={self.out_orders}, padding={self.padding}, pool={self.pool}")


class MagnitudeReLU(nn.Module):
    """Magnitude nonlinearity: ``F -> ReLU(|F| + b) F / |F|`` with a learned bias ``b`` per channel and
    order (initialised to -0.5, below the unit RMS magnitude :class:`HarmonicBatchNorm` gives). The phase
    is kept and the new magnitude is a function of the old one, so the transformation law holds.

    Args:
        channels: complex channels C. orders: the rotation orders of the streams (int or tuple).

    Shapes: ``(B, C, M, 2, H, W) -> (B, C, M, 2, H, W)``; ``bias`` is ``(C, M)``.

    Example:
        >>> import torch
        >>> MagnitudeReLU(4, (0, 2))(torch.randn(2, 4, 2, 2, 5, 5)).shape
        torch.Size([2, 4, 2, 2, 5, 5])
    """

    def __init__(self, channels: int, orders):
        super().__init__()
        self.orders = _orders(orders, "MagnitudeReLU orders")
        self.channels = channels
        self.bias = nn.Parameter(torch.full((channels, len(self.orders)), -0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_harmonic(type(self).__name__, x, self.channels, len(self.orders))
        mag = magnitude(x, _EPS)  # (B, C, M, H, W)
        scale = F.relu(mag + self.bias[..., None, None]) / mag
        return x * scale.unsqueeze(3)

    def extra_repr(self) -> str:
        return f"{self.channels}, orders={self.orders}"


class HarmonicBatchNorm(nn.Module):
    """Harmonic batch normalisation: order-0 streams are centred (their batch mean is a rotation-invariant
    constant), and every stream is divided by the root mean square of its magnitude over batch and space
    and multiplied by a learned ``gamma`` per channel and order,

        BN(F)_{c,m} = gamma_{c,m} (F_{c,m} - [m = 0] E_{B,H,W} F_{c,m}) / sqrt(E_{B,H,W} |F_{c,m} - ...|^2 + eps).

    The statistics are rotation invariant and the scale is real and positive, so phases of order ``m != 0``
    and the transformation law are kept (subtracting a constant from an order ``m != 0`` stream would break
    it); the shift of the magnitudes is the bias of :class:`MagnitudeReLU`. Running statistics as
    ``nn.BatchNorm2d``: an exponential average with ``momentum``, or with ``momentum=None`` the plain
    average of every batch since ``reset_running_stats()``.

    Args:
        channels: complex channels C. orders: the rotation orders of the streams (int or tuple).

    Shapes: ``(B, C, M, 2, H, W) -> (B, C, M, 2, H, W)``.

    Example:
        >>> import torch
        >>> HarmonicBatchNorm(4, (0, 2))(torch.randn(8, 4, 2, 2, 5, 5)).shape
        torch.Size([8, 4, 2, 2, 5, 5])
    """

    def __init__(self, channels: int, orders, eps: float = 1e-5, momentum: float | None = 0.1):
        super().__init__()
        self.orders = _orders(orders, "HarmonicBatchNorm orders")
        self.channels, self.eps, self.momentum = channels, eps, momentum
        M = len(self.orders)
        self.weight = nn.Parameter(torch.ones(channels, M))
        self.register_buffer("_centred", torch.tensor([m == 0 for m in self.orders]).view(1, M, 1), persistent=False)
        self.register_buffer("running_mean", torch.zeros(channels, M, 2))
        self.register_buffer("running_power", torch.ones(channels, M))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def reset_running_stats(self) -> None:
        self.running_mean.zero_()
        self.running_power.fill_(1.0)
        self.num_batches_tracked.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_harmonic(type(self).__name__, x, self.channels, len(self.orders))
        if self.training:
            mean = x.mean((0, 4, 5)) * self._centred  # (C, M, 2): mean of the order-0 streams, 0 elsewhere
            x = x - mean[..., None, None]
            power = x.square().sum(3).mean((0, 3, 4))  # (C, M): E |F - mean|^2
            with torch.no_grad():
                self.num_batches_tracked += 1
                weight = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach(), weight)
                self.running_power.lerp_(power.detach(), weight)
        else:
            x = x - self.running_mean[..., None, None]
            power = self.running_power
        scale = self.weight / (power + self.eps).sqrt()
        return x * scale[..., None, None, None]

    def extra_repr(self) -> str:
        return f"{self.channels}, orders={self.orders}"


class HarmonicAvgPool2d(nn.Module):
    """Average pooling of the real and imaginary part of every stream (seed 003: the harmonic network
    downsamples by average pooling, not by stride or max pooling). Linear and the same for every plane,
    so it keeps the law; exactly for quarter turns when ``(H - kernel_size) % stride == 0``.

    Shapes: ``(B, C, M, 2, H, W) -> (B, C, M, 2, H', W')``.

    Example:
        >>> import torch
        >>> HarmonicAvgPool2d(2)(torch.randn(1, 3, 2, 2, 8, 8)).shape
        torch.Size([1, 3, 2, 2, 4, 4])
    """

    def __init__(self, kernel_size: int = 2, stride: int | None = None):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride or kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 6 or x.shape[3] != 2:
            raise ValueError(f"HarmonicAvgPool2d: expected a harmonic feature map (B, C, M, 2, H, W), got {tuple(x.shape)}")
        y = F.avg_pool2d(x.flatten(1, 3), self.kernel_size, self.stride)  # (B, C * M * 2, H', W')
        return y.view(*x.shape[:4], *y.shape[-2:])

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class HarmonicResBlock(nn.Module):
    """Pre-activation residual block ``F + conv(act(bn(conv(act(bn(F))))))`` (seed 003). Both convolutions
    map the block's streams onto the same orders, so the skipped sub-network has total rotation order 0
    (output stream ``m`` has order ``m`` along every path) and the sum keeps the transformation law.

    Args:
        channels: complex channels C. orders: the rotation orders of the streams (int or tuple).
        kernel_size: odd k, padded to keep the size. Defaults to 3.

    Shapes: ``(B, C, M, 2, H, W) -> (B, C, M, 2, H, W)``.

    Example:
        >>> import torch
        >>> block = HarmonicResBlock(4, (0, 2))
        >>> block(torch.randn(2, 4, 2, 2, 8, 8)).shape
        torch.Size([2, 4, 2, 2, 8, 8])
    """

    def __init__(self, channels: int, orders, kernel_size: int = 3):
        super().__init__()
        orders = _orders(orders, "HarmonicResBlock orders")
        self.body = nn.Sequential(
            HarmonicBatchNorm(channels, orders), MagnitudeReLU(channels, orders),
            HarmonicConv2d(channels, channels, kernel_size, orders, orders, padding=kernel_size // 2),
            HarmonicBatchNorm(channels, orders), MagnitudeReLU(channels, orders),
            HarmonicConv2d(channels, channels, kernel_size, orders, orders, padding=kernel_size // 2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)
