"""Scores identical to the official evaluators, ties included (issue 16).

Camelyon16 (``Evaluation_FROC.py``): false-positive probabilities stay float64 (as read from the CSV), lesion
probabilities are float32. OCELOT (``evaluation/eval.py``): float32 confidences and positions, numpy's default
(unstable) argsort, 1e-7 in the denominators, 4-decimal rounding. The expected values are the official
numbers (Camelyon16, quoted in the issue) or come from a line-by-line re-implementation of the official loop
written here (OCELOT)."""

import numpy as np
import pytest

from equipath.evaluation.cells import cell_detection_f1, match_cells
from equipath.wsi.annotations import Annotation, write_asap_xml
from equipath.wsi.camelyon import CAMELYON16_EXCLUDED, collect_hits
from equipath.wsi.detection import write_detections_csv
from equipath.wsi.froc import GroundTruth, evaluate_froc, evaluate_slide

MASK_MPP = 0.243 * 32


def two_lesions() -> np.ndarray:
    """A level-5 tumour mask (100 x 100) with two 30 x 30 px lesions."""
    tumour = np.zeros((100, 100), bool)
    tumour[0:30, 0:30] = True
    tumour[60:90, 60:90] = True
    return tumour


def test_camelyon16_fp_float64_tp_float32_in_memory():
    truth = GroundTruth.from_tumour_mask(two_lesions(), downsample=32, mask_mpp=MASK_MPP)
    assert truth.n_lesions == 2
    probs, xs, ys = [0.1, 0.1], [480, 3040], [480, 64]  # inside lesion 1; outside both
    official = evaluate_froc([evaluate_slide(probs, xs, ys, truth)], n_bootstrap=0)
    assert official.froc == 0.5  # the official Evaluation_FROC.py's score
    strict = evaluate_froc([evaluate_slide(probs, xs, ys, truth, ties="strict")], n_bootstrap=0)
    assert strict.froc == pytest.approx(19 / 48)  # 0.3958: the FP and the TP tie


def test_camelyon16_tie_case_from_files(tmp_path):
    """The same case through the submission files: an ASAP annotation and a ``prob,X,Y`` CSV; a slide named
    like an excluded test slide is left out."""
    square = np.array([[0, 0], [960, 0], [960, 960], [0, 960]], float)  # 30 x 30 px at level 5
    gt, det, slides = tmp_path / "gt", tmp_path / "det", tmp_path / "slides"
    gt.mkdir(), det.mkdir(), slides.mkdir()
    write_asap_xml(gt / "tumor_001.xml", [Annotation("a", "_0", square), Annotation("b", "_0", square + 1920)])
    write_detections_csv(det / "tumor_001.csv", [0.1, 0.1], [480, 3040], [480, 64])
    write_detections_csv(det / "Test_049.csv", [0.9], [100], [100])  # excluded: would be a false positive
    from PIL import Image
    Image.new("RGB", (3200, 3200), "white").save(slides / "tumor_001.png")
    hits = collect_hits(det, gt, slides, mpp=0.243, exclude=CAMELYON16_EXCLUDED)
    assert [h.name for h in hits] == ["tumor_001"] and hits[0].n_lesions == 2
    assert evaluate_froc(hits, n_bootstrap=0).froc == 0.5
    assert len(collect_hits(det, gt, slides, mpp=0.243)) == 2


# ------------------------------------------------------------------------------------------ OCELOT
def official_ocelot(preds, gts, cutoff=15):
    """The official ``_preprocess_distance_and_confidence`` + ``_calc_scores`` + mF1, re-implemented line by
    line; ``preds`` rows ``(x, y, cls, prob)``, ``gts`` rows ``(x, y, cls)``, one list per image."""
    f1s = []
    for cls in (1, 2):
        n_gt = n_tp = n_fp = 0
        for pred, gt in zip(preds, gts):
            pred_cls = np.array([p for p in pred if p[2] == cls], np.float32)
            gt_cls = np.array([g for g in gt if g[2] == cls], np.float32)
            if len(gt_cls) == 0:
                gt_cls = np.zeros(shape=(0, 3))
            if len(pred_cls) == 0:
                distance, confidence = np.zeros([0, len(gt_cls)]), np.zeros([0, len(gt_cls)])
            else:
                distance = np.linalg.norm(pred_cls[:, :2].reshape([-1, 1, 2]) - gt_cls[:, :2].reshape([1, -1, 2]),
                                          axis=2)
                confidence = pred_cls[:, 3]
            mask = distance <= cutoff
            tp = fp = 0
            for k in np.argsort(-confidence):
                neighbours = mask[k].nonzero()[0]
                if len(neighbours) == 0:
                    fp += 1
                else:
                    j = min(neighbours, key=lambda j: distance[k, j])
                    tp += 1
                    mask[:, j] = False
            n_gt, n_tp, n_fp = n_gt + distance.shape[1], n_tp + tp, n_fp + fp
        precision = n_tp / (n_tp + n_fp + 1e-7)
        recall = n_tp / (n_gt + 1e-7)
        f1s.append(round(2 * precision * recall / (precision + recall + 1e-7), 4))
    return sum(f1s) / len(f1s)


def test_ocelot_float32_tie_changes_the_matching():
    """Two predictions whose confidences differ in float64 but not in float32: the official code visits them
    in input order (the sort sees a tie), the strict rule visits the higher first, and the counts differ."""
    gt = np.array([[100, 100, 1], [120, 100, 1]])
    a = [90, 100, 1, 0.5]              # near the first cell only (10 px)
    b = [108, 100, 1, 0.5 + 1e-9]      # near both (8 and 12 px); higher in float64, equal in float32
    pred = np.array([a, b])
    assert np.float32(a[3]) == np.float32(b[3]) and b[3] > a[3]
    assert match_cells(pred[:, :2], pred[:, 3], gt[:, :2]) == (2, 0, 2)  # a takes cell 1, b cell 2
    assert match_cells(pred[:, :2], pred[:, 3], gt[:, :2], ties="strict") == (1, 1, 2)  # b takes cell 1
    expected = official_ocelot([pred.tolist()], [gt.tolist()])
    assert expected == 0.5  # class 1: F1 1.0; class 2 has no cell: 0
    assert cell_detection_f1([pred], [gt])["mf1"] == expected
    assert cell_detection_f1([pred], [gt], ties="strict")["mf1"] != expected


def test_ocelot_equals_the_official_loop_on_random_tied_cases():
    """Many tied confidences (more than numpy's 16-element insertion-sort cut-off, so its unstable sort
    decides their order): equal to the official loop in every case."""
    rng = np.random.default_rng(3)
    differs = 0
    for case in range(40):
        preds, gts = [], []
        for _ in range(3):
            n, m = rng.integers(15, 40), rng.integers(10, 30)
            gt = np.column_stack([rng.integers(0, 120, (m, 2)), rng.integers(1, 3, m)])
            pred = np.column_stack([rng.integers(0, 120, (n, 2)), rng.integers(1, 3, n),
                                    rng.choice([0.3, 0.5, 0.5 + 1e-9, 0.9], n)])
            preds.append(pred), gts.append(gt)
        expected = official_ocelot([p.tolist() for p in preds], [g.tolist() for g in gts])
        assert cell_detection_f1(preds, gts)["mf1"] == expected, case
        differs += cell_detection_f1(preds, gts, ties="strict")["mf1"] != expected
    assert differs > 0  # the rule matters on these cases


def test_froc_command_ties_and_exclusions(tmp_path, capsys):
    from equipath.cli import main

    truth = tmp_path / "gt"
    truth.mkdir()
    square = np.array([[0, 0], [960, 0], [960, 960], [0, 960]], float)
    write_asap_xml(truth / "tumor_001.xml", [Annotation("a", "_0", square), Annotation("b", "_0", square + 1920)])
    det = tmp_path / "det"
    det.mkdir()
    write_detections_csv(det / "tumor_001.csv", [0.1, 0.1], [480, 3040], [480, 64])
    write_detections_csv(det / "test_114.csv", [0.9], [100], [100])
    from PIL import Image
    (tmp_path / "slides").mkdir()
    Image.new("RGB", (3200, 3200), "white").save(tmp_path / "slides" / "tumor_001.png")
    base = ["froc", str(det), "--ground-truth", str(truth), "--slides", str(tmp_path / "slides"), "--bootstrap", "0"]
    assert main(base + ["--exclude", "camelyon16"]) == 0
    assert "FROC score 0.5000" in capsys.readouterr().out
    assert main(base + ["--exclude", "camelyon16", "--ties", "strict"]) == 0
    assert "FROC score 0.3958" in capsys.readouterr().out
