"""Every metric against hand-computed cases, and against MONAI / scikit-learn where the definitions match."""

import math

import numpy as np
import pytest
import torch

from equipath.evaluation import (CellDetectionMetric, ClassificationMetric, SegmentationMetric, bootstrap_ci,
                                 cell_detection_f1, classification_metrics, confusion_counts, hausdorff_distance,
                                 match_cells, segmentation_metrics)


# ----------------------------------------------------------------------------------------------- classification
def test_classification_hand_computed():
    out = classification_metrics(torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1.0, 0.0, 0.0]))
    # -log sigmoid(2), -log(1 - sigmoid(-1)), -log(1 - sigmoid(0.5)) = softplus(-2), softplus(-1), softplus(0.5)
    nll = (math.log1p(math.exp(-2)) + math.log1p(math.exp(-1)) + math.log1p(math.exp(0.5))) / 3
    assert out["nll"] == pytest.approx(nll, abs=1e-12)
    assert out["nll"] == pytest.approx(0.471422, abs=1e-6)
    assert out["accuracy"] == pytest.approx(2 / 3)
    assert out["auc"] == pytest.approx(1.0)


def test_auc_with_ties_hand_computed():
    # positive/negative pairs: (0.1, 0.1) tie = 1/2, (0.1, -0.2) = 1, (0.3, 0.1) = 1, (0.3, -0.2) = 1 -> 3.5 / 4
    out = classification_metrics(np.array([0.1, 0.1, 0.3, -0.2]), np.array([1, 0, 1, 0]))
    assert out["auc"] == pytest.approx(0.875)


def test_auc_matches_scikit_learn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    logits = np.round(rng.normal(labels, 1.0), 1)  # rounded: many ties
    assert classification_metrics(logits, labels)["auc"] == pytest.approx(roc_auc_score(labels, logits), abs=1e-12)


def test_nll_is_stable_for_large_logits():
    out = classification_metrics(np.array([1000.0, -1000.0]), np.array([0.0, 0.0]))
    assert out["nll"] == pytest.approx(500.0)  # (1000 + 0) / 2


def test_auc_undefined_for_one_class():
    assert math.isnan(classification_metrics([0.3, 0.2], [1, 1])["auc"])


def test_classification_metric_accumulates_like_the_pure_function():
    logits, labels = torch.randn(50, 1), (torch.rand(50) > 0.5).float()
    metric = ClassificationMetric()
    for i in range(0, 50, 16):
        metric(logits[i:i + 16], labels[i:i + 16])
    assert metric.aggregate() == pytest.approx(classification_metrics(logits, labels))
    metric.reset()
    with pytest.raises(ValueError, match="nothing recorded"):
        metric.aggregate()


def test_classification_rejects_bad_input():
    with pytest.raises(ValueError, match="3 logits but 2 labels"):
        classification_metrics([1.0, 2.0, 3.0], [0, 1])
    with pytest.raises(ValueError, match="0 or 1"):
        classification_metrics([1.0, 2.0], [0, 2])


# ------------------------------------------------------------------------------------------------- segmentation
def _square_case():
    target = np.zeros((1, 6, 6), dtype=np.int64)
    target[0, 1:4, 1:4] = 1  # 9 pixels
    pred = np.zeros((1, 6, 6), dtype=np.int64)
    pred[0, 1:4, 1:3] = 1  # 6 pixels, all inside the target
    return pred, target


def test_segmentation_hand_computed():
    pred, target = _square_case()
    np.testing.assert_array_equal(confusion_counts(pred, target, 2)[0, 1], [6, 0, 3, 27])
    out = segmentation_metrics(pred, target)
    assert out["dice"] == pytest.approx(12 / 15)
    assert out["jaccard"] == pytest.approx(6 / 9)
    assert out["precision"] == pytest.approx(1.0)
    assert out["recall"] == pytest.approx(6 / 9)
    assert out["specificity"] == pytest.approx(1.0)
    assert out["f1"] == pytest.approx(2 * (6 / 9) / (1 + 6 / 9))
    # background IoU 27 / 30, foreground 6 / 9
    assert out["miou"] == pytest.approx((27 / 30 + 6 / 9) / 2)
    # edges: the target's 8-pixel ring, all 6 predicted pixels; farthest edge pixels are 1 px apart
    assert out["hausdorff"] == pytest.approx(1.0)
    assert out["hd95"] == pytest.approx(1.0)


def test_hausdorff_and_hd95_hand_computed():
    target = np.zeros((12, 12), dtype=bool)
    target[0, 0] = True
    pred = np.zeros((12, 12), dtype=bool)
    pred[0, 0] = pred[0, 10] = True
    # pred -> target: [0, 10]; target -> pred: [0]
    assert hausdorff_distance(pred, target) == pytest.approx(10.0)
    assert hausdorff_distance(pred, target, 95) == pytest.approx(9.5)  # 0 + 0.95 * (10 - 0)
    assert hausdorff_distance(pred, target, spacing=0.5) == pytest.approx(5.0)
    pred2 = np.zeros((12, 12), dtype=bool)
    pred2[3, 4] = True
    assert hausdorff_distance(pred2, target) == pytest.approx(5.0)  # 3-4-5 triangle
    assert math.isnan(hausdorff_distance(np.zeros((4, 4)), target[:4, :4]))


def test_empty_ground_truth_is_skipped_in_per_image_means():
    pred, target = _square_case()
    empty = np.zeros_like(target)
    fp = np.zeros_like(pred)
    fp[0, 0, 0] = 1
    out = segmentation_metrics(np.concatenate([pred, fp]), np.concatenate([target, empty]))
    assert out["dice"] == pytest.approx(12 / 15)  # the empty-target image is undefined, not 0 or 1
    assert out["hausdorff"] == pytest.approx(1.0)
    assert out["precision"] == pytest.approx(6 / 7)  # but the false positive counts in the pooled scores


def test_multiclass_per_class_values():
    target = np.zeros((1, 5, 5), dtype=np.int64)
    target[0, :2, :2] = 1
    target[0, 3:, 3:] = 2
    pred = target.copy()
    pred[0, 0, 0] = 2  # one class-1 pixel predicted as class 2
    out = segmentation_metrics(pred, target, num_classes=3)
    assert out["dice_1"] == pytest.approx(2 * 3 / (2 * 3 + 0 + 1))
    assert out["dice_2"] == pytest.approx(2 * 4 / (2 * 4 + 1 + 0))
    assert out["dice"] == pytest.approx((out["dice_1"] + out["dice_2"]) / 2)
    assert out["miou"] == pytest.approx((1.0 + 3 / 4 + 4 / 5) / 3)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\]"):
        segmentation_metrics(pred, target, num_classes=2)


def _blobs(rng, n, size):
    """Random label maps made of a few rectangles, so every image has foreground in both maps."""
    maps = np.zeros((n, size, size), dtype=np.int64)
    for b in range(n):
        for _ in range(3):
            y, x = rng.integers(0, size - 6, 2)
            h, w = rng.integers(2, 8, 2)
            maps[b, y:y + h, x:x + w] = 1
    return maps


def test_segmentation_matches_monai():
    monai_metrics = pytest.importorskip("monai.metrics")
    rng = np.random.default_rng(0)
    pred, target = _blobs(rng, 6, 24), _blobs(rng, 6, 24)
    out = segmentation_metrics(pred, target)
    onehot = lambda m: torch.nn.functional.one_hot(torch.from_numpy(m), 2).permute(0, 3, 1, 2).float()
    p, t = onehot(pred), onehot(target)
    dice = monai_metrics.DiceMetric(include_background=False)(p, t)
    iou = monai_metrics.MeanIoU(include_background=False)(p, t)
    hd = monai_metrics.compute_hausdorff_distance(p, t)
    hd95 = monai_metrics.compute_hausdorff_distance(p, t, percentile=95)
    assert out["dice"] == pytest.approx(float(dice.mean()), abs=1e-6)
    assert out["jaccard"] == pytest.approx(float(iou.mean()), abs=1e-6)
    assert out["hausdorff"] == pytest.approx(float(hd.mean()), abs=1e-5)
    assert out["hd95"] == pytest.approx(float(hd95.mean()), abs=1e-5)
    cm = monai_metrics.ConfusionMatrixMetric(include_background=False, compute_sample=False, reduction="sum",
                                             metric_name=("precision", "recall", "specificity", "f1 score"))
    cm(p, t)
    precision, recall, specificity, f1 = (float(v) for v in cm.aggregate())
    assert (out["precision"], out["recall"], out["specificity"], out["f1"]) == pytest.approx(
        (precision, recall, specificity, f1), abs=1e-6)


def test_segmentation_metric_accumulates_like_the_pure_function():
    rng = np.random.default_rng(1)
    pred, target = _blobs(rng, 5, 16), _blobs(rng, 5, 16)
    metric = SegmentationMetric(2)
    metric(torch.from_numpy(pred[:2]), torch.from_numpy(target[:2]))
    metric(pred[2:], target[2:])
    assert metric.aggregate() == pytest.approx(segmentation_metrics(pred, target))


# ---------------------------------------------------------------------------------------------------- cells
def test_cell_matching_is_greedy_by_confidence_and_takes_the_nearest():
    gt = [[0, 0], [20, 0]]
    # the confident prediction at x=11 takes the nearer cell (x=20, 9 px); the other then matches x=0
    assert match_cells([[11, 0], [1, 0]], [0.9, 0.5], gt) == (2, 0, 2)
    # at x=10 both cells are 10 px away: the first (x=0) is taken, and x=1 is 19 px from x=20 -> false positive
    assert match_cells([[10, 0], [1, 0]], [0.9, 0.5], gt) == (1, 1, 2)
    # the order is by confidence, not by position in the list
    assert match_cells([[1, 0], [10, 0]], [0.5, 0.9], gt) == (1, 1, 2)


def test_cell_matching_radius_is_inclusive():
    assert match_cells([[15, 0]], [1.0], [[0, 0]]) == (1, 0, 1)
    assert match_cells([[15.01, 0]], [1.0], [[0, 0]]) == (0, 1, 1)
    assert match_cells(np.zeros((0, 2)), [], [[0, 0]]) == (0, 0, 1)


def test_cell_f1_hand_computed_over_two_images():
    gts = [np.array([[10, 10, 1], [50, 50, 2], [90, 90, 2]]), np.array([[5, 5, 1]])]
    preds = [np.array([[12, 11, 1, 0.9], [52, 50, 2, 0.8], [200, 200, 2, 0.7]]),
             np.array([[60, 60, 1, 0.4]])]
    out = cell_detection_f1(preds, gts)
    # class 1: TP 1, FP 1, N_gt 2 -> P = R = 1/2; class 2: TP 1, FP 1, N_gt 2 -> P = R = 1/2
    assert out["precision_1"] == pytest.approx(0.5) and out["recall_1"] == pytest.approx(0.5)
    assert out["f1_1"] == pytest.approx(0.5) and out["f1_2"] == pytest.approx(0.5)
    assert out["mf1"] == pytest.approx(0.5)
    metric = CellDetectionMetric()
    metric(preds[0], gts[0])
    metric(np.zeros((0, 4)), gts[1])  # an image without predictions
    assert metric.aggregate()["recall_1"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        metric(np.zeros((2, 3)), gts[1])


# ------------------------------------------------------------------------------------------------ bootstrap
def test_bootstrap_interval_of_a_mean_matches_the_normal_approximation():
    x = np.random.default_rng(0).integers(0, 2, 400).astype(float)
    ci = bootstrap_ci(lambda r: {"mean": float(r["x"].mean())}, {"x": x}, n=2000, seed=1)
    lo, hi = ci["mean"]
    half = 1.96 * math.sqrt(x.mean() * (1 - x.mean()) / len(x))
    assert lo < x.mean() < hi
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.1)
    assert bootstrap_ci(lambda r: {"mean": float(r["x"].mean())}, {"x": x}, n=50, seed=1) == \
        bootstrap_ci(lambda r: {"mean": float(r["x"].mean())}, {"x": x}, n=50, seed=1)


def test_bootstrap_of_constant_data_is_degenerate_and_skips_nan():
    metric = ClassificationMetric()
    metric(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 1.0, 1.0]))
    ci = metric.bootstrap(n=100)
    assert ci["accuracy"] == (1.0, 1.0)
    assert all(math.isnan(v) for v in ci["auc"])  # every resample has one class
    with pytest.raises(ValueError, match="confidence"):
        metric.bootstrap(confidence=1.5)
