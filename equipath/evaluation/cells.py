"""Per-cell detection F1 of the OCELOT 2023 challenge (seed 002's planned cell metric).

For each class separately and each image, predicted cells are visited in order of decreasing confidence;
a prediction is a true positive when an unmatched ground-truth cell of the same class lies within
``radius`` pixels (distance <= radius, default 15), and it takes the nearest such cell; otherwise it is a
false positive. Counts are pooled over all images:

    precision_c = TP_c / (TP_c + FP_c),  recall_c = TP_c / N_gt_c,  F1_c = 2 P R / (P + R),
    mF1 = mean of F1_c over the classes (OCELOT: 1 = background cell, 2 = tumour cell).

This is the greedy matching of the official OCELOT evaluation code (``evaluation/eval.py``,
``_calc_scores``). Ties (``ties``):

- ``official`` (the default) reproduces that code exactly, quirks included: positions and confidences are
  cast to float32 (``np.array(..., np.float32)``), distances computed in float32, the predictions visited in
  the order of numpy's default ``np.argsort(-confidence)`` (quicksort/introsort, *not* stable: predictions
  with equal float32 confidences are visited in an order numpy chooses, which can change which of them
  takes a shared cell), the nearest cell the first of equally near ones; precision, recall and F1 add 1e-7
  to their denominators and are rounded to 4 decimals, and mF1 is the mean of the rounded F1s.
- ``strict``: float64 throughout, a stable sort (equal confidences in input order), exact quotients (0 for a
  zero denominator), no rounding.

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

__all__ = ["CellDetectionMetric", "match_cells", "cell_detection_f1", "TIE_RULES"]

TIE_RULES = ("official", "strict")


def _check_ties(ties: str) -> None:
    if ties not in TIE_RULES:
        raise ValueError(f"ties must be one of {', '.join(TIE_RULES)}, got {ties!r}")


def match_cells(pred_xy, scores, gt_xy, radius: float = 15.0, ties: str = "official") -> tuple[int, int, int]:
    """Greedy matching of one class in one image: ``(TP, FP, N_gt)``.

    Args:
        pred_xy: ``(K, 2)`` predicted positions. scores: ``(K,)`` confidences (higher is matched first).
        gt_xy: ``(M, 2)`` true positions. radius: largest matching distance in pixels. Defaults to 15.
        ties: ``official`` (float32, numpy's default unstable argsort) or ``strict`` (float64, stable sort);
            see the module docstring. Defaults to ``official``.
    """
    _check_ties(ties)
    dtype = np.float32 if ties == "official" else np.float64
    pred_xy = np.asarray(pred_xy, dtype=dtype).reshape(-1, 2)
    gt_xy = np.asarray(gt_xy, dtype=dtype).reshape(-1, 2)
    scores = np.asarray(scores, dtype=dtype).reshape(-1)
    if len(scores) != len(pred_xy):
        raise ValueError(f"match_cells: {len(pred_xy)} predicted cells but {len(scores)} scores")
    distance = np.linalg.norm(pred_xy[:, None, :] - gt_xy[None, :, :], axis=2)  # (K, M)
    free = distance <= radius
    order = np.argsort(-scores) if ties == "official" else np.argsort(-scores, kind="stable")
    tp = 0
    for k in order:
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


def _compute(counts: np.ndarray, classes: tuple, ties: str) -> dict[str, float]:
    tp, fp, n_gt = (counts[..., i].sum(0).astype(np.int64) for i in range(3))  # (n_classes,)
    if ties == "official":  # the official arithmetic, in Python floats, rounded to 4 decimals
        precision = [int(t) / (int(t) + int(f) + 1e-7) for t, f in zip(tp, fp)]
        recall = [int(t) / (int(n) + 1e-7) for t, n in zip(tp, n_gt)]
        f1 = [round(2 * p * r / (p + r + 1e-7), 4) for p, r in zip(precision, recall)]
        precision, recall = [round(p, 4) for p in precision], [round(r, 4) for r in recall]
        out = {"mf1": float(sum(f1) / len(f1))}
    else:
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
        ties: ``official`` or ``strict`` (module docstring). Defaults to ``official``.
    """

    def __init__(self, classes: tuple = (1, 2), radius: float = 15.0, ties: str = "official"):
        super().__init__()
        _check_ties(ties)
        self.classes, self.radius, self.ties = tuple(classes), float(radius), ties

    def records(self, pred, gt):
        pred, gt = _check_points("pred", pred, 4), _check_points("gt", gt, 3)
        counts = np.array([match_cells(pred[pred[:, 2] == c, :2], pred[pred[:, 2] == c, 3],
                                       gt[gt[:, 2] == c, :2], self.radius, self.ties) for c in self.classes])
        return {"counts": counts[None]}  # (1 image, n_classes, [TP, FP, N_gt])

    def compute(self, records):
        return _compute(records["counts"], self.classes, self.ties)


def cell_detection_f1(preds, gts, classes: tuple = (1, 2), radius: float = 15.0,
                      ties: str = "official") -> dict[str, float]:
    """OCELOT mF1 over images: ``preds`` and ``gts`` are lists (one entry per image) of the arrays that
    :class:`CellDetectionMetric` takes; ``ties`` as there."""
    if len(preds) != len(gts):
        raise ValueError(f"cell_detection_f1: {len(preds)} predicted images but {len(gts)} ground-truth images")
    metric = CellDetectionMetric(classes, radius, ties)
    for pred, gt in zip(preds, gts):
        metric(pred, gt)
    return metric.aggregate()
