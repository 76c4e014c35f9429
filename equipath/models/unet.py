"""GU-Net / P4M U-Net (seed 001 section 2.2), one implementation for z2 / p4 / p4m.

The U-Net of Ronneberger et al. with every (transposed) convolution replaced by its group counterpart:

    encoder, levels l = 0..4: two-conv block [3x3 conv, pad 1 -> BN -> ReLU] x 2, then a 3x3 max pool
        (stride 2, pad 1) down to the next level (none after level 4)
    decoder, levels l = 3..0: 3x3 transposed conv (stride 2, pad 1) -> BN -> ReLU, concatenated with the
        encoder's level-l output (orientations stay aligned on dim 2), two-conv block
    head: k x k G -> Z2 convolution (seed 001 eq. 3, ``head_kernel`` k, padding k // 2) to ``num_classes``
        logits: 3 x 3 for ``p4m_unet`` / ``p4_unet``, 1 x 1 for the planar ``unet``

Group batch-norm follows every convolution, transposed ones included. Level ``l`` has
``round(width * 2^l / sqrt(|G|))`` group channels: dividing by ``sqrt(|G|)`` keeps the parameter count of
every G -> G layer that of the planar U-Net of the same ``width`` (seed 001: "the amount of filters used by
the G-CNN model is divided by the square root of the group size"), so ``unet`` is the parameter-matched
baseline, widened by ``sqrt(|G|)``.

The head: a 1 x 1 ``ProjectionConv2d`` is exactly orientation pooling (the sum over ``|G|``) followed by a
1 x 1 planar convolution, because a 1 x 1 filter is unchanged by every rotation and mirror. A 3 x 3 head
correlates each orientation channel with its own rotated / mirrored copy of one planar filter, so it can
tell orientations apart (seed 001's "more expressive than pooling"); it is still exactly equivariant. It
adds ``(9 - 1) * C_0 * num_classes`` weights (368 for p4m at width 64, 0.001 % of the model).

Exactness: the pool's grid is symmetric on odd sides, ``H -> (H + 1) / 2``, and the transposed convolution
maps ``h -> 2h - 1`` back onto it at any size, so the admissible sides are ``17 + 16k`` (seed 001's 320 x 320
patches become 321 x 321, or 305).
"""

import math

import torch
from torch import nn

from equipath.models.base import SegmentationModel, SizeRule
from equipath.models.registry import register_model
from equipath.nn import (GroupBatchNorm, GroupConv2d, GroupConvTranspose2d, GroupMaxPool2d, LiftingConv2d,
                         ProjectionConv2d)

__all__ = ["ConvBlock", "UpBlock", "UNet", "level_channels"]


def level_channels(width: int, level: int, group) -> int:
    """Group channels at ``level`` of a network whose planar counterpart has ``width * 2^level`` channels:
    ``round(width * 2^level / sqrt(|G|))``, at least 1."""
    return max(1, round(width * 2**level / math.sqrt(group.order)))


class ConvBlock(nn.Sequential):
    """Two-conv block: ``[3x3 conv (pad 1) -> group BN -> ReLU] x 2``. The first convolution lifts a planar
    input (``lift=True``: ``(B, C_in, H, W)``) or takes a group feature map ``(B, C_in, |G|, H, W)``.

    Shapes: ``-> (B, C_out, |G|, H, W)``.

    Example:
        >>> import torch
        >>> ConvBlock(3, 4, "p4m", lift=True)(torch.randn(2, 3, 9, 9)).shape
        torch.Size([2, 4, 8, 9, 9])
    """

    def __init__(self, in_channels: int, out_channels: int, group, lift: bool = False):
        first = LiftingConv2d if lift else GroupConv2d
        super().__init__(
            first(in_channels, out_channels, 3, group, padding=1, bias=False),
            GroupBatchNorm(out_channels, group), nn.ReLU(inplace=True),
            GroupConv2d(out_channels, out_channels, 3, group, padding=1, bias=False),
            GroupBatchNorm(out_channels, group), nn.ReLU(inplace=True),
        )


class UpBlock(nn.Module):
    """Decoder level: ``3x3 transposed conv (stride 2, pad 1) -> BN -> ReLU``, ``h -> 2h - 1``, then
    concatenation with the skip connection and a :class:`ConvBlock`.

    Shapes: ``(B, C_in, |G|, h, w), skip (B, C_out, |G|, 2h - 1, 2w - 1) -> (B, C_out, |G|, 2h - 1, 2w - 1)``.

    Example:
        >>> import torch
        >>> UpBlock(8, 4, "p4")(torch.randn(1, 8, 4, 5, 5), torch.randn(1, 4, 4, 9, 9)).shape
        torch.Size([1, 4, 4, 9, 9])
    """

    def __init__(self, in_channels: int, out_channels: int, group):
        super().__init__()
        self.up = nn.Sequential(
            GroupConvTranspose2d(in_channels, out_channels, 3, group, stride=2, padding=1, bias=False),
            GroupBatchNorm(out_channels, group), nn.ReLU(inplace=True),
        )
        self.block = ConvBlock(2 * out_channels, out_channels, group)

    def forward(self, x, skip):
        return self.block(torch.cat([skip, self.up(x)], dim=1))  # (B, 2 C_out, |G|, H, W) into the block


class UNet(SegmentationModel):
    """GU-Net (seed 001): equivariant segmentation, ``model(T_g x) = T_g model(x)`` for every ``g`` in
    ``group``. Admissible input sides: ``17 + 16k``.

    Args:
        group: ``"z2"`` (the plain U-Net), ``"p4"`` or ``"p4m"``.
        width: channels at level 0 of the parameter-matched planar U-Net (64 in Ronneberger et al.); the
            group model has ``round(width * 2^l / sqrt(|G|))`` group channels at level ``l``.
        num_classes: output logits per pixel. Defaults to 2.
        head_kernel: odd side of the G -> Z2 projection head (padding ``head_kernel // 2``). Defaults to 1.

    Shapes: ``(B, 3, H, W) -> (B, num_classes, H, W)``.

    Example:
        >>> import torch
        >>> model = UNet("p4m", width=8, head_kernel=3).eval()
        >>> model(torch.rand(1, 3, 33, 33)).shape
        torch.Size([1, 2, 33, 33])
    """

    size_rule = SizeRule(first=17, step=16)
    depth = 4

    def __init__(self, group, width: int = 64, num_classes: int = 2, head_kernel: int = 1):
        super().__init__(group, num_classes=num_classes, input_size=(33, 33))
        if width < 1 or num_classes < 1:
            raise ValueError(f"UNet: width and num_classes must be positive, got {width} and {num_classes}")
        if head_kernel < 1 or head_kernel % 2 == 0:
            raise ValueError(f"UNet: head_kernel must be a positive odd int, got {head_kernel}")
        self.width, self.head_kernel = width, head_kernel
        ch = [level_channels(width, level, self.group) for level in range(self.depth + 1)]
        self.encoder = nn.ModuleList([ConvBlock(3, ch[0], group, lift=True)] + [
            nn.Sequential(GroupMaxPool2d(3, group, stride=2, padding=1), ConvBlock(ch[level - 1], ch[level], group))
            for level in range(1, self.depth + 1)
        ])
        self.decoder = nn.ModuleList([UpBlock(ch[level + 1], ch[level], group)
                                      for level in reversed(range(self.depth))])
        self.head = ProjectionConv2d(ch[0], num_classes, head_kernel, group, padding=head_kernel // 2)

    def probe_copy(self) -> "UNet":
        return UNet(self.group, width=1, num_classes=1, head_kernel=self.head_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        for up in self.decoder:
            x = up(x, skips.pop())
        return self.head(x)  # (B, num_classes, H, W)


def _create_unet(group: str, width: int, num_classes: int, head_kernel: int) -> UNet:
    return UNet(group, width=width, num_classes=num_classes, head_kernel=head_kernel)


@register_model
def p4m_unet(width: int = 64, num_classes: int = 2, head_kernel: int = 3) -> UNet:
    """P4M U-Net / GU-Net (seed 001), parameter-matched to ``unet``, 3x3 G -> Z2 head. Input sides ``17 + 16k``."""
    return _create_unet("p4m", width, num_classes, head_kernel)


@register_model
def p4_unet(width: int = 64, num_classes: int = 2, head_kernel: int = 3) -> UNet:
    """P4 U-Net (seed 001, rotations only), parameter-matched to ``unet``, 3x3 G -> Z2 head. Input sides
    ``17 + 16k``."""
    return _create_unet("p4", width, num_classes, head_kernel)


@register_model
def unet(width: int = 64, num_classes: int = 2, head_kernel: int = 1) -> UNet:
    """The planar U-Net baseline (seed 001), the same code with the trivial group. Input sides ``17 + 16k``."""
    return _create_unet("z2", width, num_classes, head_kernel)
