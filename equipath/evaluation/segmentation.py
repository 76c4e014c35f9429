"""Segmentation metrics of seeds 001, 002 and 004: Dice, Jaccard, Hausdorff and HD95, Precision, Recall,
Specificity, F1 and mIoU.

Per image ``b`` and class ``c`` with one-vs-rest counts ``TP, FP, FN, TN`` of the label maps:

    Dice_bc    = 2 TP / (2 TP + FP + FN)       Jaccard_bc = TP / (TP + FP + FN)
    (both undefined, NaN, when class c is absent from the ground truth of image b: MONAI's ``ignore_empty``)
    HD_bc      = max(max_{p in dP} d(p, dG), max_{q in dG} d(q, dP))        (symmetric Hausdorff, pixels)
    HD95_bc    = max(q95_{p in dP} d(p, dG), q95_{q in dG} d(q, dP))        (95th percentile, linear)
    where dP, dG are the edge pixels of the predicted and true masks (mask XOR its binary erosion, the
    image border counting as background, as MONAI); undefined when either mask is empty.

Reported values (``c`` runs over the foreground classes 1..C-1 and is averaged last):

    dice, jaccard, hausdorff, hd95   mean over images of the per-image values (undefined ones skipped)
    precision = TP / (TP + FP), recall = TP / (TP + FN), specificity = TN / (TN + FP),
    f1 = 2 precision recall / (precision + recall)    from counts pooled over all images
    miou = mean over ALL classes (background included) of pooled TP / (TP + FP + FN)

Dice and F1 therefore differ as in seed 004 Table 1: Dice is a per-image mean, F1 a pooled score.
With more than one foreground class, per-class values are added as ``dice_c`` etc.

Example:
    >>> import torch
    >>> target = torch.zeros(1, 6, 6, dtype=torch.long); target[0, 1:4, 1:4] = 1
    >>> pred = torch.zeros(1, 6, 6, dtype=torch.long); pred[0, 1:4, 1:3] = 1
    >>> metric = SegmentationMetric(num_classes=2)
    >>> _ = metric(pred, target)
    >>> round(metric.aggregate()["dice"], 4)   # 2*6 / (6 + 9)
    0.8
"""

import math

import numpy as np
import torch
from scipy.ndimage import binary_erosion
from scipy.spatial import KDTree

from equipath.evaluation.base import Metric

__all__ = ["SegmentationMetric", "segmentation_metrics", "confusion_counts", "hausdorff_distance"]


def _labels(name: str, x) -> np.ndarray:
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"segmentation metrics: {name} must be a label map of shape (B, H, W), got {x.shape}")
    return x.astype(np.int64)


def confusion_counts(pred, target, num_classes: int) -> np.ndarray:
    """One-vs-rest ``[TP, FP, FN, TN]`` per image and class: ``(B, C, 4)`` from label maps ``(B, H, W)``."""
    pred, target = _labels("pred", pred), _labels("target", target)
    if pred.shape != target.shape:
        raise ValueError(f"segmentation metrics: pred {pred.shape} and target {target.shape} differ in shape")
    for name, x in (("pred", pred), ("target", target)):
        if x.size and (x.min() < 0 or x.max() >= num_classes):
            raise ValueError(f"segmentation metrics: {name} labels must lie in [0, {num_classes - 1}], "
                             f"got [{x.min()}, {x.max()}]")
    counts = np.empty((pred.shape[0], num_classes, 4), dtype=np.int64)
    n = pred.shape[1] * pred.shape[2]
    for c in range(num_classes):
        p, t = (pred == c).reshape(len(pred), -1), (target == c).reshape(len(target), -1)
        tp = (p & t).sum(1)
        fp, fn = p.sum(1) - tp, t.sum(1) - tp
        counts[:, c] = np.stack([tp, fp, fn, n - tp - fp - fn], axis=1)
    return counts


def _edges(mask: np.ndarray) -> np.ndarray:
    return np.argwhere(mask ^ binary_erosion(mask, border_value=0)).astype(np.float64)


def hausdorff_distance(pred_mask, target_mask, percentile: float | None = None, spacing: float = 1.0) -> float:
    """Symmetric Hausdorff distance between the edges of two binary masks ``(H, W)``, in pixels times
    ``spacing``; with ``percentile`` (e.g. 95) the larger of the two directed percentiles. NaN when either
    mask is empty."""
    pred_mask, target_mask = np.asarray(pred_mask, dtype=bool), np.asarray(target_mask, dtype=bool)
    if pred_mask.shape != target_mask.shape or pred_mask.ndim != 2:
        raise ValueError(f"hausdorff_distance: expected two masks of one shape (H, W), got {pred_mask.shape} "
                         f"and {target_mask.shape}")
    if not pred_mask.any() or not target_mask.any():
        return math.nan
    ep, et = _edges(pred_mask) * spacing, _edges(target_mask) * spacing
    directed = (KDTree(et).query(ep, k=1)[0], KDTree(ep).query(et, k=1)[0])
    if percentile is None:
        return float(max(d.max() for d in directed))
    if not 0 <= percentile <= 100:
        raise ValueError(f"hausdorff_distance: percentile must lie in [0, 100], got {percentile}")
    return float(max(np.percentile(d, percentile) for d in directed))


def _ratio(num, den):
    den = np.asarray(den, dtype=np.float64)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _nanmean(x, axis=None):
    x = np.asarray(x, dtype=np.float64)
    finite = ~np.isnan(x)
    total = np.where(finite, x, 0.0).sum(axis=axis)
    count = finite.sum(axis=axis)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _compute(counts: np.ndarray, hd: np.ndarray, hd95: np.ndarray) -> dict[str, float]:
    """Every reported value from per-image counts ``(N, C, 4)`` and distances ``(N, C - 1)``."""
    tp, fp, fn, tn = (counts[..., i].astype(np.float64) for i in range(4))
    per_class = {
        "dice": _nanmean(np.where(tp + fn > 0, _ratio(2 * tp, 2 * tp + fp + fn), np.nan), axis=0)[1:],
        "jaccard": _nanmean(np.where(tp + fn > 0, _ratio(tp, tp + fp + fn), np.nan), axis=0)[1:],
        "hausdorff": _nanmean(hd, axis=0),
        "hd95": _nanmean(hd95, axis=0),
    }
    TP, FP, FN, TN = tp.sum(0)[1:], fp.sum(0)[1:], fn.sum(0)[1:], tn.sum(0)[1:]
    precision, recall = _ratio(TP, TP + FP), _ratio(TP, TP + FN)
    per_class.update(precision=precision, recall=recall, specificity=_ratio(TN, TN + FP),
                     f1=_ratio(2 * precision * recall, precision + recall))
    out = {name: float(_nanmean(values)) for name, values in per_class.items()}
    out["miou"] = float(_nanmean(_ratio(tp.sum(0), (tp + fp + fn).sum(0))))
    if counts.shape[1] > 2:
        for name, values in per_class.items():
            out.update({f"{name}_{c + 1}": float(v) for c, v in enumerate(values)})
    return out


class SegmentationMetric(Metric):
    """Accumulates label maps ``(pred, target)``, each ``(B, H, W)`` with values in ``[0, num_classes)``;
    ``aggregate()`` gives the values in the module docstring, ``bootstrap()`` their intervals (images resampled).

    Args:
        num_classes: C, background being class 0. Defaults to 2.
        spacing: size of a pixel for the distances (e.g. microns). Defaults to 1 (pixel units, seed 004).
        distances: compute the Hausdorff distances (the slow part); without them ``hausdorff`` and ``hd95``
            are NaN, e.g. for validation during training. Defaults to True.
    """

    def __init__(self, num_classes: int = 2, spacing: float = 1.0, distances: bool = True):
        if num_classes < 2:
            raise ValueError(f"SegmentationMetric: num_classes must be at least 2, got {num_classes}")
        super().__init__()
        self.num_classes, self.spacing, self.distances = num_classes, spacing, distances

    def records(self, pred, target):
        counts = confusion_counts(pred, target, self.num_classes)
        pred, target = _labels("pred", pred), _labels("target", target)
        shape = (len(pred), self.num_classes - 1)
        hd, hd95 = np.full(shape, np.nan), np.full(shape, np.nan)
        for b in range(len(pred) if self.distances else 0):
            for c in range(1, self.num_classes):
                p, t = pred[b] == c, target[b] == c
                hd[b, c - 1] = hausdorff_distance(p, t, None, self.spacing)
                hd95[b, c - 1] = hausdorff_distance(p, t, 95, self.spacing)
        return {"counts": counts, "hd": hd, "hd95": hd95}

    @staticmethod
    def compute(records):
        return _compute(records["counts"], records["hd"], records["hd95"])


def segmentation_metrics(pred, target, num_classes: int = 2, spacing: float = 1.0) -> dict[str, float]:
    """Every value of the module docstring for label maps ``pred``, ``target`` of shape ``(B, H, W)``."""
    metric = SegmentationMetric(num_classes, spacing)
    metric(pred, target)
    return metric.aggregate()
