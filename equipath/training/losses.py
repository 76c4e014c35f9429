"""Training losses: binary cross-entropy (seed 000), cross-entropy (seeds 001, 004), Dice-CE (seed 002) and
the heatmap MSE of the Gaussian cell target (``data.cell_target: gaussian``).

All take raw logits. Shapes:

    bce      logits (B, 1) or (B,), target (B,) or (B, 1) in {0, 1} (float)
    ce       logits (B, C) or (B, C, H, W), target (B,) or (B, H, W) class indices (int64)
    dice_ce  logits (B, C, H, W), target (B, H, W) class indices (int64)
    heatmap_mse  logits (B, C, H, W), target (B, C - 1, H, W) float heatmaps in [0, 1]

The heatmap MSE keeps the segmentation model as it is (C classes, class 0 no cell) and compares its class
probabilities ``P = softmax(logits)`` of the cell classes with the Gaussian heatmaps ``G`` of the target
(:func:`equipath.data.ocelot.points_to_heatmap`, channel ``c - 1`` for class ``c``):

    heatmap_mse = 1/(B (C-1) H W) sum_{b, c >= 1, i} (P_bci - G_b(c-1)i)^2

so inference is unchanged: the cell probability maps' peaks are the detected cells (``mask_to_points``).

Dice-CE is ``dice_weight * Dice + ce_weight * CE`` with the soft Dice loss of seed 002,

    Dice = 1 - 1/(B C) sum_{b,c} (2 sum_i P_bci G_bci + eps) / (sum_i P_bci + sum_i G_bci + eps),

``P = softmax(logits)`` over classes, ``G`` the one-hot target, ``eps = 1e-5``: MONAI's ``DiceCELoss``
with ``softmax=True, to_onehot_y=True``, computed per sample (so the loss of a batch is the mean of the
losses of its samples, whatever the batch split).

Example:
    >>> import torch
    >>> loss = build_loss("dice_ce")
    >>> logits, target = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))
    >>> loss(logits, target).shape
    torch.Size([])
"""

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BinaryCrossEntropy", "CrossEntropy", "DiceCELoss", "HeatmapMSE", "build_loss", "LOSSES"]


def _check(loss: str, condition: bool, expected: str, logits: torch.Tensor, target: torch.Tensor) -> None:
    if not condition:
        raise ValueError(f"{loss}: expected {expected}, got logits {tuple(logits.shape)} "
                         f"and target {tuple(target.shape)}")


class BinaryCrossEntropy(nn.Module):
    """``-[y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))]``, averaged over the batch."""

    def forward(self, logits, target):
        z, y = logits.reshape(-1), target.reshape(-1)
        _check("bce", z.shape == y.shape and logits.shape[0] == target.shape[0],
               "logits (B, 1) and target (B,)", logits, target)
        return F.binary_cross_entropy_with_logits(z.float(), y.float())


class CrossEntropy(nn.Module):
    """``-log softmax(z)_y``, averaged over the batch (and pixels)."""

    def forward(self, logits, target):
        _check("ce", logits.dim() == target.dim() + 1 and logits.shape[0] == target.shape[0]
               and logits.shape[2:] == target.shape[1:], "logits (B, C, ...) and target (B, ...)", logits, target)
        return F.cross_entropy(logits.float(), target.long())


class DiceCELoss(nn.Module):
    """Weighted sum of the soft Dice loss and cross-entropy (seed 002); see the module docstring.

    Args:
        dice_weight: weight of the Dice term. Defaults to 1.
        ce_weight: weight of the cross-entropy term. Defaults to 1.
        include_background: whether class 0 enters the Dice mean. Defaults to True (MONAI's default).
        eps: smoothing of numerator and denominator. Defaults to 1e-5.
    """

    def __init__(self, dice_weight: float = 1.0, ce_weight: float = 1.0, include_background: bool = True,
                 eps: float = 1e-5):
        super().__init__()
        self.dice_weight, self.ce_weight = dice_weight, ce_weight
        self.include_background, self.eps = include_background, eps

    def forward(self, logits, target):
        _check("dice_ce", logits.dim() == 4 and target.shape == (logits.shape[0], *logits.shape[2:]),
               "logits (B, C, H, W) and target (B, H, W)", logits, target)
        logits, target = logits.float(), target.long()
        prob = logits.softmax(1)  # (B, C, H, W)
        onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(prob.dtype)  # (B, C, H, W)
        if not self.include_background:
            prob, onehot = prob[:, 1:], onehot[:, 1:]
        inter = (prob * onehot).sum((2, 3))
        dice = 1.0 - (2.0 * inter + self.eps) / (prob.sum((2, 3)) + onehot.sum((2, 3)) + self.eps)  # (B, C)
        return self.dice_weight * dice.mean() + self.ce_weight * F.cross_entropy(logits, target)


class HeatmapMSE(nn.Module):
    """Mean squared error between the cell-class probabilities and the Gaussian heatmaps (module docstring).

    ``labels(target)`` turns a heatmap target into the class mask the validation metrics compare with: the
    class of the largest heatmap where it reaches ``label_threshold`` (0.5: within ``1.18 sigma`` of a
    cell), else 0."""

    label_threshold = 0.5

    def forward(self, logits, target):
        _check("heatmap_mse", logits.dim() == 4 and target.shape == (logits.shape[0], logits.shape[1] - 1,
                                                                       *logits.shape[2:]),
               "logits (B, C, H, W) and a heatmap target (B, C - 1, H, W)", logits, target)
        prob = logits.float().softmax(1)[:, 1:]
        return ((prob - target.float()) ** 2).mean()

    def labels(self, target):
        peak, cls = target.max(1)
        return torch.where(peak >= self.label_threshold, cls + 1, torch.zeros_like(cls))


LOSSES = {"bce": BinaryCrossEntropy, "ce": CrossEntropy, "dice_ce": DiceCELoss, "heatmap_mse": HeatmapMSE}


def build_loss(name: str, dice_weight: float = 1.0, ce_weight: float = 1.0) -> nn.Module:
    """The loss named ``"bce"``, ``"ce"``, ``"dice_ce"`` or ``"heatmap_mse"`` (the weights apply to Dice-CE
    only)."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}: expected one of {', '.join(LOSSES)}")
    if name == "dice_ce":
        return DiceCELoss(dice_weight, ce_weight)
    return LOSSES[name]()
