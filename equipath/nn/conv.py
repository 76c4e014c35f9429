"""Group-equivariant convolutions: Z2 -> G (lifting), G -> G, G -> Z2 (projection), transposed G -> G.

Every layer stores a small ``weight`` and expands it into the filter bank of one plain convolution by a
precomputed index gather (the ``_index`` buffer), so the forward pass is a single ``conv2d`` (or
``conv_transpose2d``) on the planar view ``(B, C * |G|, H, W)`` of a group feature map
``(B, C, |G|, H, W)``. In eval mode without autograd the expanded filter is cached until the weight
changes. ``fold()`` returns that plain convolution as an ``nn.Conv2d`` / ``nn.ConvTranspose2d``.

Channels-last: the weights of group layers are 5-D, so ``model.to(memory_format=torch.channels_last)``
cannot convert them; :func:`set_channels_last` instead sets ``channels_last`` on every layer, which then
runs its planar convolution with the expanded filter and the planar input in channels-last memory (and
converts the model's 4-D weights). Under autocast the convolution runs in the autocast dtype like any
``F.conv2d``; the expansion (an index gather) is exact in any dtype.

Exactness: rot90 and flips map the pixel grid onto itself, so every layer is equivariant up to float
rounding whenever its sampling grid is symmetric: ``(H + 2 * padding - dilation * (k - 1) - 1) % stride
== 0`` for the convolutions, and ``output_padding == 0`` for the transposed one (any input size).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from equipath.groups import get_group
from equipath.nn.shapes import check_shape

__all__ = ["LiftingConv2d", "GroupConv2d", "ProjectionConv2d", "GroupConvTranspose2d", "CachedFilter", "check_input",
           "set_channels_last"]


def check_input(layer: str, x: torch.Tensor, channels: int, group_order: int | None) -> None:
    """Raise ``ValueError`` unless ``x`` is ``(B, channels, H, W)`` (``group_order`` None) or
    ``(B, channels, group_order, H, W)`` (:func:`equipath.nn.shapes.check_shape`)."""
    check_shape(layer, x, (channels, "H", "W") if group_order is None else (channels, group_order, "H", "W"))


class CachedFilter(nn.Module):
    """A module whose convolution filter is expanded from ``weight`` by ``_expand()``; the expansion is
    cached in eval mode while autograd is off, and rebuilt whenever the weight changes (in place, as an
    optimizer step does, or by moving device or dtype). With ``channels_last`` set (see
    :func:`set_channels_last`) the filter and the planar input are channels-last."""

    _cache = None
    channels_last = False

    def _planar(self, x: torch.Tensor) -> torch.Tensor:
        """The planar input ``(B, C, H, W)`` in the layer's memory format (a no-op when it already is)."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _expand(self) -> torch.Tensor:
        raise NotImplementedError

    def filter(self) -> torch.Tensor:
        """The expanded planar filter bank."""
        if self.training or torch.is_grad_enabled():
            self._cache = None
            return self._planar(self._expand())
        w = self.weight
        key = (w._version, w.data_ptr(), w.dtype, w.device, torch.is_inference_mode_enabled(), self.channels_last)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self._planar(self._expand()))
        return self._cache[1]


def set_channels_last(model: nn.Module) -> nn.Module:
    """Run ``model``'s convolutions in channels-last memory, in place; returns ``model``.

    What ``model.to(memory_format=torch.channels_last)`` does for plain networks, for networks with group
    layers too: every 4-D parameter and buffer (``nn.Conv2d`` weights) is made channels-last, and every
    :class:`CachedFilter` layer expands its filter and lays out its planar input channels-last. Outputs are
    unchanged up to float rounding (the same sums in another order).

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(LiftingConv2d(3, 4, 3, "p4m"), GroupConv2d(4, 4, 3, "p4m"))
        >>> x = torch.randn(1, 3, 9, 9)
        >>> y = net(x)
        >>> bool(torch.allclose(set_channels_last(net)(x), y, atol=1e-5))
        True
    """
    for module in model.modules():
        if isinstance(module, CachedFilter):
            module.channels_last = True
        for name, tensor in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
            if tensor is not None and tensor.dim() == 4 and tensor.is_floating_point():
                tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)
    return model


class _EquivariantConv(CachedFilter):
    """Shared machinery: the weight, the index gather that expands it, the eval-mode cache, ``fold()``.

    Subclasses set ``weight_shape`` (per output channel), build ``_index`` (which entry of one output
    channel's weight goes where in its block of the expanded filter) and say whether input and output are
    planar (``None``) or carry an orientation axis of size ``|G|``.
    """

    transposed = False

    def __init__(self, in_channels, out_channels, kernel_size, group, stride, padding, dilation, bias,
                 weight_shape, index, in_order, out_order, output_padding=0, fan_in=None):
        super().__init__()
        if not isinstance(kernel_size, int) or kernel_size < 1:
            raise ValueError(f"{type(self).__name__}: kernel_size must be a positive int, got {kernel_size!r}")
        self.group = get_group(group)
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.output_padding = output_padding
        self.in_order, self.out_order = in_order, out_order
        self.weight = nn.Parameter(torch.empty(weight_shape))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.register_buffer("_index", index, persistent=False)
        fan_in = fan_in or in_channels * (in_order or 1) * kernel_size**2  # He initialisation
        with torch.no_grad():
            self.weight.normal_(0.0, math.sqrt(2.0 / fan_in))

    def planar_bias(self) -> torch.Tensor | None:
        if self.bias is None:
            return None
        return self.bias.repeat_interleave(self.out_order) if self.out_order else self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(type(self).__name__, x, self.in_channels, self.in_order)
        B = x.shape[0]
        x = self._planar(x.flatten(1, 2) if self.in_order else x)  # (B, C * |G|, H, W)
        if self.transposed:
            y = F.conv_transpose2d(x, self.filter(), self.planar_bias(), self.stride, self.padding,
                                   self.output_padding, 1, self.dilation)
        else:
            y = F.conv2d(x, self.filter(), self.planar_bias(), self.stride, self.padding, self.dilation)
        if self.out_order:
            y = y.view(B, self.out_channels, self.out_order, *y.shape[-2:])  # (B, C_out, |G|, H', W')
        return y

    @torch.no_grad()
    def fold(self) -> nn.Module:
        """A plain ``nn.Conv2d`` (``nn.ConvTranspose2d``) on the planar view, with the same outputs."""
        w = self._expand().detach().clone(memory_format=torch.contiguous_format)
        bias = self.planar_bias()
        if self.transposed:
            conv = nn.ConvTranspose2d(w.shape[0], w.shape[1], self.kernel_size, self.stride, self.padding,
                                      self.output_padding, bias=bias is not None, dilation=self.dilation)
        else:
            conv = nn.Conv2d(w.shape[1], w.shape[0], self.kernel_size, self.stride, self.padding,
                             self.dilation, bias=bias is not None)
        conv = conv.to(device=w.device, dtype=w.dtype)
        conv.weight.copy_(w)
        if bias is not None:
            conv.bias.copy_(bias)
        return conv

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"group={self.group.name}, stride={self.stride}, padding={self.padding}")
        if self.dilation != 1:
            s += f", dilation={self.dilation}"
        if self.output_padding:
            s += f", output_padding={self.output_padding}"
        return s + f", bias={self.bias is not None}"


def _planar_index(group, channels: int, k: int) -> torch.Tensor:
    """``(|G|, channels, k, k)``: entry ``[g]`` is ``T_g`` applied to the positions of a planar filter."""
    ar = torch.arange(channels * k * k).view(channels, k, k)
    return torch.stack([group.transform(ar, g) for g in range(group.order)])


def _regular_index(group, channels: int, k: int) -> torch.Tensor:
    """``(|G|, channels, |G|, k, k)``: entry ``[g]`` is ``L_g`` applied to the positions of a group filter."""
    ar = torch.arange(channels * group.order * k * k).view(channels, group.order, k, k)
    return torch.stack([group.transform_group(ar, g) for g in range(group.order)])


class LiftingConv2d(_EquivariantConv):
    """Z2 -> G convolution (seed 000 eq. 2): correlate the image with every transformed filter,

        [f * psi](g, x) = sum_y sum_c f_c(y) psi_c(T_g^-1 (y - x)),
        kappa(T_g f) = L_g kappa(f)   for all g in G.

    Args:
        in_channels: planar input channels C_in.
        out_channels: group output channels C_out (``C_out * |G|`` planar maps).
        kernel_size: k. group: ``"z2"``, ``"p4"``, ``"p4m"`` or a :class:`~equipath.groups.Group`.
        stride, padding, dilation: as ``nn.Conv2d``. Defaults to 1, 0, 1.
        bias: one bias per group channel, shared over orientations. Defaults to True.

    Shapes: ``(B, C_in, H, W) -> (B, C_out, |G|, H', W')``; ``weight`` is ``(C_out, C_in, k, k)``.

    Example:
        >>> import torch
        >>> conv = LiftingConv2d(3, 8, 3, "p4m")
        >>> conv(torch.randn(2, 3, 11, 11)).shape
        torch.Size([2, 8, 8, 9, 9])
    """

    def __init__(self, in_channels, out_channels, kernel_size, group, stride=1, padding=0, dilation=1, bias=True):
        G = get_group(group)
        super().__init__(in_channels, out_channels, kernel_size, G, stride, padding, dilation, bias,
                         (out_channels, in_channels, kernel_size, kernel_size),
                         _planar_index(G, in_channels, kernel_size).flatten(), None, G.order)

    def _expand(self):
        k = self.kernel_size
        w = self.weight.flatten(1)[:, self._index]  # (C_out, |G| * C_in * k * k)
        return w.view(self.out_channels * self.group.order, self.in_channels, k, k)


class GroupConv2d(_EquivariantConv):
    """G -> G convolution (seed 000 eq. 3): the filter is itself a function on the group and is moved
    by the regular action for each output orientation,

        [f * psi](g, x) = sum_h sum_y sum_c f_c(h, y) psi_c(g^-1 h, T_g^-1 (y - x)),
        kappa(L_g f) = L_g kappa(f)   for all g in G.

    Args: as :class:`LiftingConv2d`; ``in_channels`` counts group channels.

    Shapes: ``(B, C_in, |G|, H, W) -> (B, C_out, |G|, H', W')``; ``weight`` is ``(C_out, C_in, |G|, k, k)``.

    Example:
        >>> import torch
        >>> conv = GroupConv2d(4, 6, 3, "p4", stride=2, padding=1)
        >>> conv(torch.randn(2, 4, 4, 9, 9)).shape
        torch.Size([2, 6, 4, 5, 5])
    """

    def __init__(self, in_channels, out_channels, kernel_size, group, stride=1, padding=0, dilation=1, bias=True):
        G = get_group(group)
        super().__init__(in_channels, out_channels, kernel_size, G, stride, padding, dilation, bias,
                         (out_channels, in_channels, G.order, kernel_size, kernel_size),
                         _regular_index(G, in_channels, kernel_size).flatten(), G.order, G.order)

    def _expand(self):
        k, n = self.kernel_size, self.group.order
        w = self.weight.flatten(1)[:, self._index]  # (C_out, |G| * C_in * |G| * k * k)
        return w.view(self.out_channels * n, self.in_channels * n, k, k)


class ProjectionConv2d(_EquivariantConv):
    """G -> Z2 convolution (seed 001 eq. 3): one planar filter per (output, input) pair, shared across
    the orientation channels as the group transforms it,

        [f * psi](x) = sum_h sum_y sum_c f_c(h, y) psi_c(T_h^-1 (y - x)),
        kappa(L_g f) = T_g kappa(f)   for all g in G.

    Args: as :class:`LiftingConv2d`; ``in_channels`` counts group channels, ``out_channels`` planar ones.

    Shapes: ``(B, C_in, |G|, H, W) -> (B, C_out, H', W')``; ``weight`` is ``(C_out, C_in, k, k)``.

    Example:
        >>> import torch
        >>> head = ProjectionConv2d(4, 2, 1, "p4m")
        >>> head(torch.randn(2, 4, 8, 7, 7)).shape
        torch.Size([2, 2, 7, 7])
    """

    def __init__(self, in_channels, out_channels, kernel_size, group, stride=1, padding=0, dilation=1, bias=True):
        G = get_group(group)
        index = _planar_index(G, in_channels, kernel_size).transpose(0, 1)  # (C_in, |G|, k, k)
        super().__init__(in_channels, out_channels, kernel_size, G, stride, padding, dilation, bias,
                         (out_channels, in_channels, kernel_size, kernel_size),
                         index.flatten(), G.order, None)

    def _expand(self):
        k = self.kernel_size
        w = self.weight.flatten(1)[:, self._index]  # (C_out, C_in * |G| * k * k)
        return w.view(self.out_channels, self.in_channels * self.group.order, k, k)


class GroupConvTranspose2d(_EquivariantConv):
    """Transposed G -> G convolution (seed 001): the adjoint of a :class:`GroupConv2d` from
    ``out_channels`` to ``in_channels``, hence equivariant, ``kappa(L_g f) = L_g kappa(f)``. With
    ``output_padding=0`` the output grid ``(H - 1) * stride - 2 * padding + dilation * (k - 1) + 1`` is
    symmetric and the layer is exact at every input size and stride.

    Args: as :class:`GroupConv2d`, plus ``output_padding`` (breaks exactness when non-zero). Defaults to 0.

    Shapes: ``(B, C_in, |G|, H, W) -> (B, C_out, |G|, H', W')``; ``weight`` is ``(C_in, C_out, |G|, k, k)``.

    Example:
        >>> import torch
        >>> up = GroupConvTranspose2d(8, 4, 2, "p4m", stride=2)
        >>> up(torch.randn(1, 8, 8, 6, 6)).shape
        torch.Size([1, 4, 8, 12, 12])
    """

    transposed = True

    def __init__(self, in_channels, out_channels, kernel_size, group, stride=1, padding=0, dilation=1,
                 bias=True, output_padding=0):
        G = get_group(group)
        super().__init__(in_channels, out_channels, kernel_size, G, stride, padding, dilation, bias,
                         (in_channels, out_channels, G.order, kernel_size, kernel_size),
                         _regular_index(G, out_channels, kernel_size).flatten(), G.order, G.order,
                         output_padding, fan_in=in_channels * G.order * kernel_size**2 / stride**2)

    def _expand(self):
        k, n = self.kernel_size, self.group.order
        w = self.weight.flatten(1)[:, self._index]  # (C_in, |G| * C_out * |G| * k * k)
        return w.view(self.in_channels * n, self.out_channels * n, k, k)
