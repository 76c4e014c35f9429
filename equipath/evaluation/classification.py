"""Binary patch classification metrics of seed 000 (PCam Table 1): NLL, accuracy and AUC.

For a logit ``z_i`` (probability ``p_i = sigmoid(z_i)``) and a label ``y_i`` in {0, 1}:

    NLL      = -1/N sum_i [y_i log p_i + (1 - y_i) log(1 - p_i)]   (computed from z, stable for any z)
    accuracy = 1/N sum_i [ (p_i > 0.5) == y_i ]
    AUC      = area under the ROC curve of p against y, by the Mann-Whitney rank formula
               (R_pos - P (P + 1) / 2) / (P N) with tied scores sharing their mean rank, which equals
               scikit-learn's ``roc_auc_score`` and is fast enough for 2000 bootstrap resamples; NaN for one class

Example:
    >>> import torch
    >>> metric = ClassificationMetric()
    >>> _ = metric(torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1.0, 0.0, 0.0]))
    >>> round(metric.aggregate()["accuracy"], 4)
    0.6667
"""

import math

import numpy as np
import torch
from scipy.stats import rankdata

from equipath.evaluation.base import Metric

__all__ = ["ClassificationMetric", "classification_metrics"]


def _as_vector(name: str, x) -> np.ndarray:
    x = x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 1:
        raise ValueError(f"classification metrics: {name} must have shape (N,) or (N, 1), got {x.shape}")
    return x.astype(np.float64)


def classification_metrics(logits, labels) -> dict[str, float]:
    """NLL, accuracy and AUC of binary logits ``(N,)`` (or ``(N, 1)``) against labels ``(N,)`` in {0, 1}."""
    z, y = _as_vector("logits", logits), _as_vector("labels", labels)
    if z.shape != y.shape:
        raise ValueError(f"classification metrics: {len(z)} logits but {len(y)} labels")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("classification metrics: labels must be 0 or 1")
    nll = np.maximum(z, 0.0) - z * y + np.log1p(np.exp(-np.abs(z)))  # -log p(y | z)
    accuracy = ((z > 0.0) == (y == 1.0)).mean()
    positives = int(y.sum())
    negatives = len(y) - positives
    auc = math.nan
    if positives and negatives:
        rank_sum = rankdata(z)[y == 1.0].sum()
        auc = (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)
    return {"nll": float(nll.mean()), "accuracy": float(accuracy), "auc": float(auc)}


class ClassificationMetric(Metric):
    """Accumulates ``(logits, labels)`` batch by batch; ``aggregate()`` gives :func:`classification_metrics`
    over all patches, ``bootstrap()`` their confidence intervals (patches resampled).

    Call with logits ``(B,)`` or ``(B, 1)`` and labels ``(B,)``.
    """

    def records(self, logits, labels):
        z, y = _as_vector("logits", logits), _as_vector("labels", labels)
        if z.shape != y.shape:
            raise ValueError(f"classification metrics: {len(z)} logits but {len(y)} labels")
        return {"logit": z, "label": y}

    @staticmethod
    def compute(records):
        return classification_metrics(records["logit"], records["label"])
