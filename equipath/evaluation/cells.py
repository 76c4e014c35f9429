"""Per-cell detection F1 of the OCELOT 2023 challenge (seed 002's planned cell metric).

For each class separately and each image, predicted cells are visited in order of decreasing confidence;
a prediction is a true positive when an unmatched ground-truth cell of the same class lies within
``radius`` pixels (distance <= radius, default 15), and it takes the nearest such cell; otherwise it is a
false positive. Counts are pooled over all images:

    precision_c = TP_c / (TP_c + FP_c),  recall_c = TP_c / N_gt_c,  F1_c = 2 P R / (P + R),
    mF1 = mean of F1_c over the classes (OCELOT: 1 = background cell, 2 = tumour cell).

This is the greedy matching of the official OCELOT evaluation code (``_calc_scores``); a quotient with a
zero denominator is 0 here (the official code adds 1e-7 to each denominator).

Example:
    >>> import numpy as np
    >>> gt = np.array([[10, 10, 1], [50, 50, 2]])
    >>> pred = np.array([[12, 11, 1, 0.9], [80, 80, 2, 0.8]])
    >>> metric = CellDetectionMetric()
    >>> _ = metric(pred, gt)
    >>> metric.aggregate()["f1_1"], metric.aggregate()["f1_2"]
    (1.0, 0.0)
"""

import numpy as np

from equipath.evaluation.base import Metric

__all__ = ["CellDetectionMetric", "match_cells", "cell_detection_f1"]


def match_cells(pred_xy, scores, gt_xy, radius: float = 15.0) -> tuple[int, int, int]:
    """Greedy matching of one class in one image: ``(TP, FP, N_gt)``.

    Args:
        pred_xy: ``(K, 2)`` predicted positions. scores: ``(K,)`` confidences (higher is matched first).
        gt_xy: ``(M, 2)`` true positions. radius: largest matching distance in pixels. Defaults to 15.
    """
    pred_xy = np.asarray(pred_xy, dtype=np.float64).reshape(-1, 2)
    gt_xy = np.asarray(gt_xy, dtype=np.float64).reshape(-1, 2)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(scores) != len(pred_xy):
        raise ValueError(f"match_cells: {len(pred_xy)} predicted cells but {len(scores)} scores")
    distance = np.linalg.norm(pred_xy[:, None, :] - gt_xy[None, :, :], axis=2)  # (K, M)
    free = distance <= radius
    tp = 0
    for k in np.argsort(-scores, kind="stable"):
        candidates = np.flatnonzero(free[k])
        if len(candidates):
            nearest = candidates[np.argmin(distance[k, candidates])]
            free[:, nearest] = False
            tp += 1
    return tp, len(pred_xy) - tp, len(gt_xy)


def _check_points(name: str, points, columns: int) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.size == 0:
        return np.zeros((0, columns))
    if points.ndim != 2 or points.shape[1] != columns:
        raise ValueError(f"cell metric: {name} must have shape (N, {columns}), got {points.shape}")
    return points


def _ratio(num, den):
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def _compute(counts: np.ndarray, classes: tuple) -> dict[str, float]:
    tp, fp, n_gt = (counts[..., i].sum(0).astype(np.float64) for i in range(3))  # (n_classes,)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, n_gt)
    f1 = _ratio(2 * precision * recall, precision + recall)
    out = {"mf1": float(f1.mean())}
    for i, c in enumerate(classes):
        out.update({f"f1_{c}": float(f1[i]), f"precision_{c}": float(precision[i]), f"recall_{c}": float(recall[i])})
    return out


class CellDetectionMetric(Metric):
    """Accumulates one image at a time: ``metric(pred, gt)`` with ``pred`` ``(K, 4)`` rows ``x, y, class,
    confidence`` and ``gt`` ``(M, 3)`` rows ``x, y, class``; ``aggregate()`` gives ``mf1`` and per class
    ``f1_c``, ``precision_c``, ``recall_c``; ``bootstrap()`` resamples images.

    Args:
        classes: the class labels scored. Defaults to (1, 2) (OCELOT background and tumour cells).
        radius: matching distance in pixels. Defaults to 15 (OCELOT).
    """

    def __init__(self, classes: tuple = (1, 2), radius: float = 15.0):
        super().__init__()
        self.classes, self.radius = tuple(classes), float(radius)

    def records(self, pred, gt):
        pred, gt = _check_points("pred", pred, 4), _check_points("gt", gt, 3)
        counts = np.array([match_cells(pred[pred[:, 2] == c, :2], pred[pred[:, 2] == c, 3],
                                       gt[gt[:, 2] == c, :2], self.radius) for c in self.classes])
        return {"counts": counts[None]}  # (1 image, n_classes, [TP, FP, N_gt])

    def compute(self, records):
        return _compute(records["counts"], self.classes)


def cell_detection_f1(preds, gts, classes: tuple = (1, 2), radius: float = 15.0) -> dict[str, float]:
    """OCELOT mF1 over images: ``preds`` and ``gts`` are lists (one entry per image) of the arrays that
    :class:`CellDetectionMetric` takes."""
    if len(preds) != len(gts):
        raise ValueError(f"cell_detection_f1: {len(preds)} predicted images but {len(gts)} ground-truth images")
    metric = CellDetectionMetric(classes, radius)
    for pred, gt in zip(preds, gts):
        metric(pred, gt)
    return metric.aggregate()
