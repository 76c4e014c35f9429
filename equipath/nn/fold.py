"""Deployment: replace every equivariant convolution of a model by the plain convolution it computes."""

import copy

from torch import nn

from equipath.nn.conv import _EquivariantConv
from equipath.nn.isotropic import IsotropicConv2d

__all__ = ["Folded", "fold_model"]


class Folded(nn.Module):
    """A plain convolution standing in for a group convolution: it flattens the orientation axis of its
    input, ``(B, C, |G|, H, W) -> (B, C * |G|, H, W)``, and restores it on the output."""

    def __init__(self, conv: nn.Module, in_order: int | None, out_order: int | None):
        super().__init__()
        self.conv, self.in_order, self.out_order = conv, in_order, out_order

    def forward(self, x):
        B = x.shape[0]
        y = self.conv(x.flatten(1, 2) if self.in_order else x)
        return y.view(B, -1, self.out_order, *y.shape[-2:]) if self.out_order else y


def fold_model(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in which every equivariant convolution is a plain ``nn.Conv2d`` /
    ``nn.ConvTranspose2d`` (no index gather at run time); it gives the same outputs.

    Example:
        >>> import torch
        >>> from equipath.nn import LiftingConv2d, GroupConv2d
        >>> net = torch.nn.Sequential(LiftingConv2d(3, 4, 3, "p4m"), GroupConv2d(4, 4, 3, "p4m")).eval()
        >>> x = torch.randn(1, 3, 9, 9)
        >>> bool(torch.allclose(fold_model(net)(x), net(x), atol=1e-5))
        True
    """
    model = copy.deepcopy(model)
    _fold_children(model)
    return model


def _fold_children(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, _EquivariantConv):
            setattr(module, name, Folded(child.fold(), child.in_order, child.out_order))
        elif isinstance(child, IsotropicConv2d):
            setattr(module, name, child.fold())
        else:
            _fold_children(child)
