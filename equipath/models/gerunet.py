"""GER-UNet, the group-equivariant Res-UNet (seed 004 section 3, Figure 4), and its regular Res-UNet baseline.

    group input layer: lifting 3x3 conv (pad 1) -> BN -> ReLU                               level 0
    encoder: 4 group residual blocks; the first keeps level 0, the next three halve the size
        with a stride-2 group hidden layer (seed 004 replaces pooling by strided convolutions)  levels 1-3
    bridge: 1 group residual block at level 3
    decoder, levels 2..0: group up-sample layer (bilinear, h -> 2h - 1) -> 3x3 conv -> BN -> ReLU,
        group skip connection (add, or concatenate) with the encoder's level, group residual block
    group output layer: 1x1 group conv to ``num_classes`` channels, then the average over orientations
        (seed 004 eq. 9)

8 residual blocks and 3 up-sample layers, as in seed 004. A residual block is
``conv3x3 (stride s) -> BN -> ReLU -> conv3x3 -> BN``, plus the input (through a 1x1 stride-s conv and BN when
the shape changes), then ReLU. Level ``l`` has ``round(width * 2^l / sqrt(|G|))`` group channels: seed 004
scales the filters by ``1 / sqrt(8)`` for p4m, which keeps the parameter count of the regular Res-UNet
(``resunet``) of the same ``width``; at ``width=64`` that is 12.7M, against 12.75M / 12.78M in seed 004.

Exactness: a 3x3 stride-2 convolution with padding 1 samples a symmetric grid on odd sides,
``H -> (H + 1) / 2``, and bilinear up-sampling with aligned corners to ``2h - 1`` (the original samples plus
the midpoints between them) maps it back, so the admissible sides are ``9 + 8k``.
"""

import torch
import torch.nn.functional as F
from torch import nn

from equipath.models.base import SegmentationModel, SizeRule
from equipath.models.registry import register_model
from equipath.models.unet import level_channels
from equipath.nn import GroupBatchNorm, GroupConv2d, GroupPool, LiftingConv2d

__all__ = ["ResidualBlock", "MidpointUpsample", "UpStage", "GERUNet"]


class ResidualBlock(nn.Module):
    """Group residual block: ``relu(BN(conv3x3(relu(BN(conv3x3_s(x))))) + shortcut(x))``; the shortcut is
    the identity, or a 1x1 stride-``s`` conv and BN when the channels or the size change. Equivariant
    (``L_g`` commutes with each part) wherever the stride-``s`` grid is symmetric: odd sides for ``s = 2``.

    Shapes: ``(B, C_in, |G|, H, W) -> (B, C_out, |G|, H', W')`` with ``H' = (H - 1) // s + 1``.

    Example:
        >>> import torch
        >>> ResidualBlock(4, 8, "p4", stride=2)(torch.randn(2, 4, 4, 9, 9)).shape
        torch.Size([2, 8, 4, 5, 5])
    """

    def __init__(self, in_channels: int, out_channels: int, group, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            GroupConv2d(in_channels, out_channels, 3, group, stride=stride, padding=1, bias=False),
            GroupBatchNorm(out_channels, group), nn.ReLU(inplace=True),
            GroupConv2d(out_channels, out_channels, 3, group, padding=1, bias=False),
            GroupBatchNorm(out_channels, group),
        )
        self.shortcut = nn.Identity() if in_channels == out_channels and stride == 1 else nn.Sequential(
            GroupConv2d(in_channels, out_channels, 1, group, stride=stride, bias=False),
            GroupBatchNorm(out_channels, group),
        )

    def forward(self, x):
        return F.relu(self.body(x) + self.shortcut(x))


class MidpointUpsample(nn.Module):
    """Group up-sample layer on odd grids: bilinear interpolation with aligned corners from ``h`` to
    ``2h - 1`` of every orientation plane, i.e. the original samples and the midpoints between them. Both
    grids are symmetric, so it commutes with every ``L_g``; it inverts the size change of a 3x3 stride-2
    convolution with padding 1 (``2h - 1 -> h``).

    Shapes: ``(B, C, |G|, h, w) -> (B, C, |G|, 2h - 1, 2w - 1)``.

    Example:
        >>> import torch
        >>> MidpointUpsample()(torch.randn(1, 2, 8, 5, 3)).shape
        torch.Size([1, 2, 8, 9, 5])
    """

    def forward(self, x):
        B, C, G, h, w = x.shape
        y = F.interpolate(x.flatten(1, 2), size=(2 * h - 1, 2 * w - 1), mode="bilinear", align_corners=True)
        return y.view(B, C, G, 2 * h - 1, 2 * w - 1)


class UpStage(nn.Module):
    """Decoder level: :class:`MidpointUpsample` -> 3x3 conv -> BN -> ReLU, the group skip connection
    (``skip="add"``: ``x + e``; ``"concat"``: ``[e, x]`` on dim 1), then a :class:`ResidualBlock`.

    Shapes: ``(B, C_in, |G|, h, w), skip (B, C_out, |G|, 2h - 1, 2w - 1) -> (B, C_out, |G|, 2h - 1, 2w - 1)``.

    Example:
        >>> import torch
        >>> UpStage(8, 4, "p4m", "concat")(torch.randn(1, 8, 8, 5, 5), torch.randn(1, 4, 8, 9, 9)).shape
        torch.Size([1, 4, 8, 9, 9])
    """

    def __init__(self, in_channels: int, out_channels: int, group, skip: str):
        super().__init__()
        self.up = nn.Sequential(
            MidpointUpsample(),
            GroupConv2d(in_channels, out_channels, 3, group, padding=1, bias=False),
            GroupBatchNorm(out_channels, group), nn.ReLU(inplace=True),
        )
        self.skip = skip
        self.block = ResidualBlock(out_channels * (2 if skip == "concat" else 1), out_channels, group)

    def forward(self, x, skip):
        x = self.up(x)
        x = x + skip if self.skip == "add" else torch.cat([skip, x], dim=1)
        return self.block(x)


class GERUNet(SegmentationModel):
    """GER-UNet (seed 004): equivariant segmentation, ``model(T_g x) = T_g model(x)`` for every ``g`` in
    ``group``. Admissible input sides: ``9 + 8k``.

    Args:
        group: ``"z2"`` (the regular Res-UNet), ``"p4"`` or ``"p4m"``.
        width: channels at level 0 of the parameter-matched regular Res-UNet. Defaults to 64.
        skip: group skip connections, ``"add"`` or ``"concat"``. Defaults to ``"add"``.
        num_classes: output logits per pixel. Defaults to 2.

    Shapes: ``(B, 3, H, W) -> (B, num_classes, H, W)``.

    Example:
        >>> import torch
        >>> model = GERUNet("p4m", width=8).eval()
        >>> model(torch.rand(1, 3, 17, 17)).shape
        torch.Size([1, 2, 17, 17])
    """

    size_rule = SizeRule(first=9, step=8)
    depth = 3

    def __init__(self, group, width: int = 64, skip: str = "add", num_classes: int = 2):
        super().__init__(group, num_classes=num_classes, input_size=(33, 33))
        if skip not in ("add", "concat"):
            raise ValueError(f"GERUNet: skip must be 'add' or 'concat', got {skip!r}")
        if width < 1 or num_classes < 1:
            raise ValueError(f"GERUNet: width and num_classes must be positive, got {width} and {num_classes}")
        self.width, self.skip = width, skip
        ch = [level_channels(width, level, self.group) for level in range(self.depth + 1)]
        self.input_layer = nn.Sequential(
            LiftingConv2d(3, ch[0], 3, group, padding=1, bias=False),
            GroupBatchNorm(ch[0], group), nn.ReLU(inplace=True),
        )
        self.encoder = nn.ModuleList([ResidualBlock(ch[0], ch[0], group)] + [
            ResidualBlock(ch[level - 1], ch[level], group, stride=2) for level in range(1, self.depth + 1)
        ])
        self.bridge = ResidualBlock(ch[-1], ch[-1], group)
        self.decoder = nn.ModuleList([UpStage(ch[level + 1], ch[level], group, skip)
                                      for level in reversed(range(self.depth))])
        self.output_layer = GroupConv2d(ch[0], num_classes, 1, group)
        self.pool = GroupPool(group, "mean")

    def probe_copy(self) -> "GERUNet":
        return GERUNet(self.group, width=1, skip=self.skip, num_classes=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.input_layer(x)
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        x = self.bridge(skips.pop())
        for stage in self.decoder:
            x = stage(x, skips.pop())
        return self.pool(self.output_layer(x))  # (B, num_classes, H, W)


def _create_gerunet(group: str, width: int, skip: str, num_classes: int) -> GERUNet:
    return GERUNet(group, width=width, skip=skip, num_classes=num_classes)


@register_model
def p4m_gerunet(width: int = 64, num_classes: int = 2) -> GERUNet:
    """GER-UNet with additive group skip connections (seed 004, ours-w.-add). Input sides ``9 + 8k``."""
    return _create_gerunet("p4m", width, "add", num_classes)


@register_model
def p4m_gerunet_concat(width: int = 64, num_classes: int = 2) -> GERUNet:
    """GER-UNet with concatenated group skip connections (seed 004, ours-w.-concat). Input sides ``9 + 8k``."""
    return _create_gerunet("p4m", width, "concat", num_classes)


@register_model
def resunet(width: int = 64, num_classes: int = 2) -> GERUNet:
    """The regular Res-UNet baseline of seed 004: the same code with the trivial group. Input sides ``9 + 8k``."""
    return _create_gerunet("z2", width, "add", num_classes)
