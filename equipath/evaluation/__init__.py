"""Metrics (accumulating classes with a pure function beside each), bootstrap intervals, and evaluation of a
checkpoint on a dataset."""

from equipath.evaluation.base import Metric, bootstrap_ci
from equipath.evaluation.cells import CellDetectionMetric, cell_detection_f1, match_cells
from equipath.evaluation.classification import ClassificationMetric, classification_metrics
from equipath.evaluation.evaluate import EVAL_DATASETS, evaluate_checkpoint, evaluate_model, open_dataset
from equipath.evaluation.segmentation import (SegmentationMetric, confusion_counts, hausdorff_distance,
                                              segmentation_metrics)

__all__ = [
    "Metric", "bootstrap_ci",
    "ClassificationMetric", "classification_metrics",
    "SegmentationMetric", "segmentation_metrics", "confusion_counts", "hausdorff_distance",
    "CellDetectionMetric", "cell_detection_f1", "match_cells",
    "evaluate_model", "evaluate_checkpoint", "open_dataset", "EVAL_DATASETS",
]
