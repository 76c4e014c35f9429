"""G-CNN DenseNet patch classifier (seed 000 section 2.2, Table 1), one implementation for z2 / p4 / p4m.

Architecture (no zero-padding anywhere; sizes for a 96 x 96 patch):

    lifting 3x3 conv, 3 -> c0 group channels                                  96 -> 94
    5 x [dense block: one layer BN-ReLU-3x3 conv (+ g channels, concatenated
         onto the input cropped by the convolution's 1-pixel border)          -2
         transition: BN-ReLU-1x1 conv (channels kept) -> 2x2 average pool]   /2
                                                 94 -> 92 -> 46 -> 44 -> 22 -> 20 -> 10 -> 8 -> 4 -> 2 -> 1
    head: BN-ReLU -> mean over orientations (G -> Z2) -> 1x1 conv -> tumour logit (sigmoid: probability)

``g = K / |G|`` where ``K`` is the number of planar maps a layer adds (Table 1), so a p4m layer with
K = 64 adds 8 group channels. The receptive field is exactly the 96 x 96 patch and the output stride is
2^5 = 32: on a larger input of side ``96 + 32k`` the same network, evaluated fully convolutionally, gives
a (k + 1)-sided logit map whose entry ``[i, j]`` is the logit of the patch at ``(32 i, 32 j)``, because the
valid convolutions and the aligned pooling grids compute exactly what they compute on each patch.

Design choices the paper leaves open, fixed so that every Table 1 count is matched within 10 %:
no bottleneck and no compression (the transition's 1x1 conv keeps the channel count, as in the Keras
DenseNet it builds on), bias-free convolutions before batch-norm, and a stem of ``c0 = K / |G| + 1`` group
channels: with ``c0 = K / |G|`` P4M-DenseNet M falls 13 % short of 19K, and the Keras default
``c0 = 2 K / |G|`` overshoots every model, by 22-47 %. ``tests/test_models.py`` checks the table.
"""

import torch
import torch.nn.functional as F
from torch import nn

from equipath.models.base import ModelBase, SizeRule
from equipath.models.registry import register_model
from equipath.nn import GroupAvgPool2d, GroupBatchNorm, GroupConv2d, GroupPool, LiftingConv2d

__all__ = ["DenseLayer", "Transition", "DenseNet"]


class DenseLayer(nn.Module):
    """One dense-block layer: ``BN-ReLU-conv3x3`` without padding; its output is concatenated onto the
    input cropped by one pixel on every side, so both are aligned. Equivariant: every part commutes with
    ``L_g``, and a symmetric crop does too.

    Shapes: ``(B, C, |G|, H, W) -> (B, C + growth, |G|, H - 2, W - 2)``.

    Example:
        >>> import torch
        >>> DenseLayer(4, 2, "p4m")(torch.randn(2, 4, 8, 10, 10)).shape
        torch.Size([2, 6, 8, 8, 8])
    """

    def __init__(self, in_channels: int, growth: int, group):
        super().__init__()
        self.norm = GroupBatchNorm(in_channels, group)
        self.conv = GroupConv2d(in_channels, growth, 3, group, bias=False)

    def forward(self, x):
        y = self.conv(F.relu(self.norm(x), inplace=True))  # in place on the norm's fresh output
        return torch.cat([x[..., 1:-1, 1:-1], y], dim=1)  # (B, C + growth, |G|, H - 2, W - 2)


class Transition(nn.Module):
    """Transition block: ``BN-ReLU-conv1x1`` then 2x2 average pooling with stride 2, exact on even sides;
    computed pooling first, which gives the same map (both are linear, the 1x1 conv acts per pixel).

    Shapes: ``(B, C, |G|, H, W) -> (B, C, |G|, H / 2, W / 2)``.

    Example:
        >>> import torch
        >>> Transition(4, "p4")(torch.randn(2, 4, 4, 10, 10)).shape
        torch.Size([2, 4, 4, 5, 5])
    """

    def __init__(self, channels: int, group):
        super().__init__()
        self.norm = GroupBatchNorm(channels, group)
        self.conv = GroupConv2d(channels, channels, 1, group, bias=False)
        self.pool = GroupAvgPool2d(2, group)

    def forward(self, x):
        # pool(conv1x1(z)) = conv1x1(pool(z)): both are linear and the 1x1 conv acts per pixel, so pooling
        # first gives the same map with a quarter of the 1x1 conv's multiply-accumulates.
        return self.conv(self.pool(F.relu(self.norm(x), inplace=True)))


class DenseNet(ModelBase):
    """Fully-convolutional G-CNN DenseNet patch classifier (seed 000), invariant under ``group``:
    ``forward(T_g x) = forward(x)`` for every ``g``, and ``forward_dense(T_g x) = T_g forward_dense(x)``.

    Admissible input sides: ``96 + 32k``. ``forward`` takes the 96 x 96 patch, ``forward_dense`` any
    admissible size.

    Args:
        group: ``"z2"``, ``"p4"`` or ``"p4m"``.
        growth: K, planar maps added per layer; must be a multiple of ``|G|``.
        stem: group channels of the lifting layer. Defaults to ``K / |G| + 1``.

    Attributes:
        output_stride: 32, pixels between neighbouring entries of the dense logit map.
        receptive_field: 96, the side of the patch each logit sees.

    Shapes: ``forward``: ``(B, 3, 96, 96) -> (B, 1)``; ``forward_dense``: ``(B, 3, H, W) -> (B, 1, h, w)``
    with ``(h, w) = dense_output_size(H, W)``.

    Example:
        >>> import torch
        >>> model = DenseNet("p4m", growth=16).eval()
        >>> model(torch.rand(2, 3, 96, 96)).shape
        torch.Size([2, 1])
        >>> model.forward_dense(torch.rand(1, 3, 160, 128)).shape
        torch.Size([1, 1, 3, 2])
    """

    task = "classification"
    size_rule = SizeRule(first=96, step=32)
    output_stride = 32
    receptive_field = 96

    def __init__(self, group, growth: int, stem: int | None = None):
        super().__init__(group, num_classes=1, input_size=(96, 96))
        order = self.group.order
        if growth < order or growth % order:
            raise ValueError(f"DenseNet: growth K must be a positive multiple of |G| = {order} "
                             f"for group {self.group.name}, got {growth}")
        g = growth // order
        channels = g + 1 if stem is None else stem
        if channels < 1:
            raise ValueError(f"DenseNet: stem must be a positive number of group channels, got {stem}")
        self.growth = growth
        self.stem = LiftingConv2d(3, channels, 3, group, bias=False)
        blocks = []
        for _ in range(5):
            blocks += [DenseLayer(channels, g, group), Transition(channels + g, group)]
            channels += g
        self.blocks = nn.Sequential(*blocks)
        self.norm = GroupBatchNorm(channels, group)
        self.pool = GroupPool(group, "mean")
        self.classifier = nn.Conv2d(channels, 1, 1)

    def dense_output_size(self, h: int, w: int) -> tuple[int, int]:
        """Side lengths of the logit map for an admissible ``(h, w)`` input."""
        self.check_input_size(h, w)
        return ((h - self.receptive_field) // self.output_stride + 1,
                (w - self.receptive_field) // self.output_stride + 1)

    def forward_dense(self, x: torch.Tensor) -> torch.Tensor:
        """Logit map ``(B, 1, h, w)``: entry ``[i, j]`` is ``forward`` of the patch
        ``x[..., 32 i : 32 i + 96, 32 j : 32 j + 96]``."""
        self.check_input(x)
        return self._logit_map(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tumour logit ``(B, 1)`` of each 96 x 96 patch."""
        self.check_input(x)
        if tuple(x.shape[-2:]) != self.input_size:
            raise ValueError(f"DenseNet.forward: expected patches of shape (B, 3, 96, 96), got {tuple(x.shape)}; "
                             f"use forward_dense for larger inputs")
        return self._logit_map(x).flatten(1)

    def _logit_map(self, x):
        y = self.blocks(self.stem(x))  # (B, C, |G|, h, w)
        return self.classifier(self.pool(F.relu(self.norm(y), inplace=True)))  # (B, 1, h, w)


def _create_densenet(group: str, growth: int, stem: int | None) -> DenseNet:
    return DenseNet(group, growth=growth, stem=stem)


@register_model
def p4m_densenet(growth: int = 64, stem: int | None = None) -> DenseNet:
    """P4M-DenseNet (seed 000 Table 1: K = 64, 119K weights). Input sides ``96 + 32k``."""
    return _create_densenet("p4m", growth, stem)


@register_model
def p4m_densenet_m(growth: int = 24, stem: int | None = None) -> DenseNet:
    """P4M-DenseNet M, as many planar maps as the baseline (Table 1: K = 24, 19K). Input sides ``96 + 32k``."""
    return _create_densenet("p4m", growth, stem)


@register_model
def p4_densenet(growth: int = 48, stem: int | None = None) -> DenseNet:
    """P4-DenseNet (Table 1: K = 48, 125K weights). Input sides ``96 + 32k``."""
    return _create_densenet("p4", growth, stem)


@register_model
def densenet(growth: int = 24, stem: int | None = None) -> DenseNet:
    """The parameter-matched planar baseline (Table 1: K = 24, 128K weights). Input sides ``96 + 32k``."""
    return _create_densenet("z2", growth, stem)


@register_model
def densenet_m(growth: int = 64, stem: int | None = None) -> DenseNet:
    """The baseline with as many planar maps as P4M-DenseNet (Table 1: K = 64, 902K). Input sides ``96 + 32k``."""
    return _create_densenet("z2", growth, stem)
