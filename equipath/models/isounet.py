"""Isotropic U-Net (seed 002) and its parameter-matched plain baseline.

    encoder, levels l = 0..4: one 3x3 conv (pad 1) -> BN -> ReLU, with a 2x2 max pool before levels 1-4
    decoder, levels 3..0: nearest-neighbour up-sampling x2, concatenation with the encoder's level,
        one 3x3 conv -> BN -> ReLU
    head: 1x1 conv to ``num_classes`` logits

Level ``l`` has ``width * 2^l`` channels. In ``iso_unet`` every convolution is an
:class:`~equipath.nn.IsotropicConv2d` (``K(x) = f(|x|)``: 3 free values per 3x3 kernel instead of 9), so
seed 002 widens it to 110 first-layer channels against 64 for the plain baseline ``iso_unet_baseline``
(``110^2 * 3`` is within 2 % of ``64^2 * 9``). Seed 002 names the symmetry C4; a radial kernel is also
mirror-symmetric, and max pooling, nearest up-sampling, batch-norm and ReLU commute with every grid
symmetry, so the isotropic network is exactly p4m-equivariant, and it is tested as such.

Exactness: a 2x2 max pool samples a symmetric grid on even sides and nearest up-sampling doubles it back,
so the admissible sides are ``16 + 16k``.
"""

import torch
import torch.nn.functional as F
from torch import nn

from equipath.models.base import SegmentationModel, SizeRule
from equipath.models.registry import register_model
from equipath.nn import IsotropicConv2d

__all__ = ["IsoUNet"]


def _conv_bn_relu(in_channels: int, out_channels: int, isotropic: bool) -> nn.Sequential:
    conv = IsotropicConv2d if isotropic else nn.Conv2d
    return nn.Sequential(conv(in_channels, out_channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class IsoUNet(SegmentationModel):
    """U-Net with one convolution per level and nearest-neighbour up-sampling (seed 002). With
    ``isotropic=True``, ``model(T_g x) = T_g model(x)`` for every ``g`` in p4m; otherwise it is the plain
    baseline (group z2). Admissible input sides: ``16 + 16k``.

    Args:
        width: channels at level 0 (seed 002: 110 isotropic, 64 plain).
        isotropic: radial kernels everywhere (True) or plain ``nn.Conv2d`` (False).
        num_classes: output logits per pixel. Defaults to 2.

    Shapes: ``(B, 3, H, W) -> (B, num_classes, H, W)``.

    Example:
        >>> import torch
        >>> model = IsoUNet(width=8, isotropic=True).eval()
        >>> model(torch.rand(1, 3, 32, 32)).shape
        torch.Size([1, 2, 32, 32])
    """

    size_rule = SizeRule(first=16, step=16)
    depth = 4

    def __init__(self, width: int, isotropic: bool, num_classes: int = 2):
        super().__init__("p4m" if isotropic else "z2", num_classes=num_classes, input_size=(32, 32))
        if width < 1 or num_classes < 1:
            raise ValueError(f"IsoUNet: width and num_classes must be positive, got {width} and {num_classes}")
        self.width, self.isotropic = width, isotropic
        ch = [width * 2**level for level in range(self.depth + 1)]
        self.encoder = nn.ModuleList([_conv_bn_relu(3, ch[0], isotropic)] + [
            _conv_bn_relu(ch[level - 1], ch[level], isotropic) for level in range(1, self.depth + 1)
        ])
        self.decoder = nn.ModuleList([
            _conv_bn_relu(ch[level + 1] + ch[level], ch[level], isotropic) for level in reversed(range(self.depth))
        ])
        self.head = (IsotropicConv2d if isotropic else nn.Conv2d)(ch[0], num_classes, 1)

    def probe_copy(self) -> "IsoUNet":
        return IsoUNet(width=1, isotropic=self.isotropic, num_classes=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        skips = []
        for level, conv in enumerate(self.encoder):
            x = conv(F.max_pool2d(x, 2) if level else x)
            skips.append(x)
        x = skips.pop()
        for conv in self.decoder:
            x = conv(torch.cat([skips.pop(), F.interpolate(x, scale_factor=2, mode="nearest")], dim=1))
        return self.head(x)  # (B, num_classes, H, W)


@register_model
def iso_unet(width: int = 110, num_classes: int = 2) -> IsoUNet:
    """Isotropic-kernel U-Net (seed 002), exactly p4m-equivariant. Input sides ``16 + 16k``."""
    return IsoUNet(width, isotropic=True, num_classes=num_classes)


@register_model
def iso_unet_baseline(width: int = 64, num_classes: int = 2) -> IsoUNet:
    """The parameter-matched plain U-Net of seed 002 (64 first-layer channels). Input sides ``16 + 16k``."""
    return IsoUNet(width, isotropic=False, num_classes=num_classes)
