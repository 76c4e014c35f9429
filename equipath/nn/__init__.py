"""Equivariant layers for planar ``(B, C, H, W)`` and group ``(B, C, |G|, H, W)`` feature maps, and the
harmonic layers (seed 003) for complex streams ``(B, C, M, 2, H, W)``. The input-shape check
(:mod:`equipath.nn.shapes`) and the filter cache (:class:`equipath.nn.conv.CachedFilter`) are internals."""

from equipath.nn.conv import GroupConv2d, GroupConvTranspose2d, LiftingConv2d, ProjectionConv2d
from equipath.nn.fold import Folded, fold_model
from equipath.nn.harmonic import (HarmonicAvgPool2d, HarmonicBatchNorm, HarmonicConv2d, HarmonicResBlock,
                                  MagnitudeReLU)
from equipath.nn.isotropic import IsotropicConv2d
from equipath.nn.pooling import GroupAvgPool2d, GroupBatchNorm, GroupMaxPool2d, GroupPool, GroupUpsample

__all__ = [
    "LiftingConv2d", "GroupConv2d", "ProjectionConv2d", "GroupConvTranspose2d", "IsotropicConv2d",
    "GroupBatchNorm", "GroupPool", "GroupMaxPool2d", "GroupAvgPool2d", "GroupUpsample",
    "HarmonicConv2d", "MagnitudeReLU", "HarmonicBatchNorm", "HarmonicAvgPool2d", "HarmonicResBlock",
    "Folded", "fold_model",
]
