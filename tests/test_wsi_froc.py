"""Camelyon16 FROC: hand-computed cases, MONAI's FROC functions where they overlap, ASAP XML and mask TIFF
ground truth, mismatching annotations, and the ``equipath froc`` command."""

import json

import numpy as np
import pytest
from monai.apps.pathology.utils import compute_isolated_tumor_cells, compute_multi_instance_mask
from monai.metrics import compute_fp_tp_probs, compute_froc_curve_data, compute_froc_score

from equipath.cli import main
from equipath.wsi.annotations import Annotation, rasterize, read_asap_xml, write_asap_xml
from equipath.wsi.detection import write_detections_csv
from equipath.wsi.froc import (GroundTruth, SlideHits, evaluate_froc, evaluate_slide, froc_curve, froc_score,
                               load_ground_truth)

pytestmark = pytest.mark.wsi

MPP = 0.243
MASK_MPP = MPP * 32  # level 5: growth 75 / (2 * 7.776) = 4.82 px, ITC below 275 / 7.776 = 35.4 px


def hits(fp, tp, n_lesions, tumour=True, max_prob=None):
    fp, tp = np.array(fp, np.float32), np.array(tp, np.float32)
    top = max([*fp, *tp, 0.0]) if max_prob is None else max_prob
    return SlideHits(fp, tp, n_lesions, float(top), tumour)


def test_froc_hand_computed():
    slides = [hits([0.9, 0.6], [0.5, 0.35], 2), hits([0.3], [0.8], 1), hits([0.7, 0.2, 0.1], [], 0, tumour=False)]
    fps, sens = froc_curve(slides)
    # thresholds 0.2 0.3 0.35 0.5 0.6 0.7 0.8 0.9 (the lowest probability, 0.1, is skipped as officially), then 0
    np.testing.assert_allclose(fps, np.array([5, 4, 3, 3, 3, 2, 1, 1, 0]) / 3)
    np.testing.assert_allclose(sens, np.array([3, 3, 3, 2, 1, 1, 1, 0, 0]) / 3)
    at, score = froc_score(fps, sens)
    np.testing.assert_allclose(at, [0, 1 / 3, 1, 1, 1, 1])
    assert score == pytest.approx(13 / 18)
    assert compute_froc_score(*compute_froc_curve_data(np.concatenate([s.fp_probs for s in slides]),
                                                       np.concatenate([s.tp_probs for s in slides]), 3, 3)) \
        == pytest.approx(score)
    report = evaluate_froc(slides, n_bootstrap=200, seed=0)
    assert report.froc == pytest.approx(13 / 18) and report.n_lesions == 3 and report.n_tumour_slides == 2
    assert report.auc == pytest.approx(1.0)  # both tumour slides' maxima (0.9, 0.8) beat the normal one (0.7)
    lo, hi = report.froc_ci
    assert 0.0 <= lo <= report.froc <= hi <= 1.0
    assert evaluate_froc(slides, n_bootstrap=200, seed=0).froc_ci == report.froc_ci


def test_slide_auc_hand_computed():
    slides = [hits([0.9], [0.0], 1), hits([], [0.4], 1), hits([0.6], [], 0, False), hits([0.3], [], 0, False)]
    # tumour maxima 0.9, 0.4; normal 0.6, 0.3: pairs won 0.9>0.6, 0.9>0.3, 0.4>0.3, lost 0.4<0.6 -> 3/4
    assert evaluate_froc(slides, n_bootstrap=0).auc == pytest.approx(0.75)


def test_growth_merges_close_lesions_and_isolated_tumour_cells_are_excluded():
    tumour = np.zeros((120, 160), bool)
    tumour[20:30, 10:50] = True  # A: 40 px long -> about 50 px after growth, a lesion
    tumour[20:30, 58:70] = True  # B: 8 px gap to A, closed by 2 x 4.82 px of growth -> merged with A
    tumour[80:90, 10:20] = True  # C: 10 px -> about 20 px: an isolated tumour cell cluster
    tumour[80:90, 80:130] = True  # D: 12 px from nothing else, its own lesion
    truth = GroundTruth.from_tumour_mask(tumour, downsample=32, mask_mpp=MASK_MPP)
    assert truth.labels.max() == 3 and truth.n_lesions == 2
    itc_label = truth.labels[85, 15]
    assert truth.itc == (itc_label,)
    assert truth.labels[25, 12] == truth.labels[25, 65] != truth.labels[85, 100]
    # grown by < 4.82 px: 4 px outside A is inside, 5 px is not
    assert truth.labels[16, 30] > 0 and truth.labels[15, 30] == 0

    def at(row, col):
        return (col + 0.5) * 32, (row + 0.5) * 32

    points = [at(25, 12), at(25, 65), at(85, 15), at(60, 140), at(16, 30)]
    xs, ys = np.array(points).T
    result = evaluate_slide(np.array([0.6, 0.8, 0.95, 0.5, 0.7]), xs, ys, truth)
    lesion_ab, lesion_d = truth.labels[25, 12], truth.labels[85, 100]
    assert result.tp_probs[lesion_ab - 1] == pytest.approx(0.8)  # one true positive per lesion: the maximum
    assert result.tp_probs[lesion_d - 1] == 0 and result.tp_probs[itc_label - 1] == 0
    assert result.fp_probs.tolist() == [0.5]  # the ITC hit (0.95) is neither TP nor FP


@pytest.mark.filterwarnings("ignore:`RegionProperties.major_axis_length`:FutureWarning")  # inside MONAI
def test_matches_monai_on_random_slides():
    rng = np.random.default_rng(7)
    slides, fp_all, tp_all, targets = [], [], [], 0
    for k in range(5):
        tumour = np.zeros((90, 110), bool)
        for _ in range(k):
            r, c = rng.integers(5, 80), rng.integers(5, 100)
            tumour[r:r + rng.integers(2, 25), c:c + rng.integers(2, 40)] = True
        truth = GroundTruth.from_tumour_mask(tumour, downsample=32, mask_mpp=MASK_MPP)
        probs = np.round(rng.random(30), 3).astype(np.float32)  # MONAI casts to float32; so do the lesions
        xs, ys = rng.integers(0, 110 * 32, 30), rng.integers(0, 90 * 32, 30)
        ours = evaluate_slide(probs, xs, ys, truth)
        slides.append(ours)
        if truth.labels is None:
            fp_all.append(probs.astype(np.float32))
            continue
        labels = compute_multi_instance_mask(tumour.astype(np.uint8), 75 / (2 * MASK_MPP))
        np.testing.assert_array_equal(truth.labels, labels)
        itc = compute_isolated_tumor_cells(labels, 275 / MASK_MPP)
        assert list(truth.itc) == itc
        fp, tp, n = compute_fp_tp_probs(probs.astype(np.float32), ys, xs, labels, itc, resolution_level=5)
        np.testing.assert_array_equal(np.sort(ours.fp_probs), np.sort(fp))
        np.testing.assert_array_equal(ours.tp_probs, tp)
        assert ours.n_lesions == n
        fp_all.append(fp)
        tp_all.append(tp)
        targets += n
    assert sum(int((s.tp_probs > 0).sum()) for s in slides) >= 2  # lesions were hit: the comparison bites
    fps, sens = froc_curve(slides)
    monai_fps, monai_sens = compute_froc_curve_data(np.concatenate(fp_all), np.concatenate(tp_all), targets, 5)
    np.testing.assert_allclose(fps, monai_fps)
    np.testing.assert_allclose(sens, monai_sens)
    assert froc_score(fps, sens)[1] == pytest.approx(compute_froc_score(monai_fps, monai_sens))


def write_case(tmp_path):
    """A 4096 x 3072 slide (level 5: 128 x 96) with two tumour polygons and an exclusion inside one."""
    annotations = [
        Annotation("t0", "_0", np.array([[320, 320], [1600, 320], [1600, 960], [320, 960]], float)),
        Annotation("hole", "_2", np.array([[800, 500], [1100, 500], [1100, 800], [800, 800]], float)),
        Annotation("t1", "Tumor", np.array([[2560, 1920], [3840, 1920], [3200, 2880]], float)),
    ]
    write_asap_xml(tmp_path / "tumor_001.xml", annotations)
    return annotations


def test_asap_xml_and_mask_tiff_give_the_same_ground_truth(tmp_path):
    import tifffile

    annotations = write_case(tmp_path)
    read = read_asap_xml(tmp_path / "tumor_001.xml")
    assert [(a.name, a.group, a.excluded) for a in read] == [("t0", "_0", False), ("hole", "_2", True),
                                                               ("t1", "Tumor", False)]
    np.testing.assert_allclose(read[2].coords, annotations[2].coords)
    from_xml = load_ground_truth(tmp_path / "tumor_001.xml", (4096, 3072), MPP)
    full = rasterize(read, (3072 // 8, 4096 // 8), 8).astype(np.uint8) * 255  # a mask at downsample 8
    with tifffile.TiffWriter(tmp_path / "tumor_001_mask.tif") as tif:  # pyramid 8, 16, 32 as in mask TIFFs
        for k, level in enumerate([full, full[::2, ::2], full[::4, ::4]]):
            tif.write(np.ascontiguousarray(level), tile=(32, 32), photometric="minisblack",
                      subfiletype=1 if k else 0, compression="zlib")
    mask_dims = (4096 // 8, 3072 // 8)
    from_mask = load_ground_truth(tmp_path / "tumor_001_mask.tif", mask_dims, MPP * 8, level=2)
    assert from_xml.labels.shape == (96, 128) == from_mask.labels.shape
    assert from_xml.n_lesions == from_mask.n_lesions == 2
    agree = (from_xml.labels > 0) == (from_mask.labels > 0)
    assert agree.mean() > 0.99
    assert from_xml.labels[20, 30] > 0  # the 75 um growth closes the small exclusion inside t0


def test_mismatching_annotations_are_clear_errors(tmp_path, caplog):
    write_case(tmp_path)
    with pytest.raises(ValueError, match="lies outside its slide.*another slide"):
        load_ground_truth(tmp_path / "tumor_001.xml", (1000, 200), MPP)
    load_ground_truth(tmp_path / "tumor_001.xml", (3000, 2000), MPP)
    assert "extends beyond its slide" in caplog.text
    (tmp_path / "bad.xml").write_text("<ASAP_Annotations><Annotations><Annotation Name='a'><Coordinates>"
                                      "<Coordinate Order='0' X='1'/></Coordinates></Annotation></Annotations>"
                                      "</ASAP_Annotations>")
    with pytest.raises(ValueError, match="without numeric X, Y and Order"):
        read_asap_xml(tmp_path / "bad.xml")
    (tmp_path / "other.xml").write_text("<Root/>")
    with pytest.raises(ValueError, match="expected an <ASAP_Annotations> root"):
        read_asap_xml(tmp_path / "other.xml")
    (tmp_path / "broken.xml").write_text("<ASAP_Annotations>")
    with pytest.raises(ValueError, match="not valid XML"):
        read_asap_xml(tmp_path / "broken.xml")
    truth = load_ground_truth(tmp_path / "tumor_001.xml", (4096, 3072), MPP)
    with pytest.raises(ValueError, match="X=5000, Y=10 lies outside the evaluation mask"):
        evaluate_slide([0.5], [5000], [10], truth, "tumor_001")
    with pytest.raises(ValueError, match="at least one tumour slide"):
        froc_curve([hits([0.5], [], 0, tumour=False)])


def test_froc_command_on_a_folder(tmp_path, capsys):
    from PIL import Image

    write_case(tmp_path)
    det, slides = tmp_path / "detections", tmp_path / "slides"
    write_detections_csv(det / "tumor_001.csv", [0.9, 0.4, 0.3], [1000, 3200, 100], [400, 2400, 2900])
    write_detections_csv(det / "normal_001.csv", [0.35], [10], [10])
    args = ["froc", str(det), "--ground-truth", str(tmp_path), "--bootstrap", "100", "--out", str(tmp_path / "r.json")]
    assert main(args) == 2  # the slide's size is unknown: one clear line
    assert "size of the slide is needed" in capsys.readouterr().err
    slides.mkdir()
    Image.fromarray(np.zeros((3072 // 4, 4096 // 4, 3), np.uint8)).save(slides / "tumor_001.png")
    assert main(args + ["--slides", str(slides)]) == 2  # a slide 4x smaller than its annotation
    assert "lies outside its slide" in capsys.readouterr().err
    Image.fromarray(np.zeros((3072, 4096, 3), np.uint8)).save(slides / "tumor_001.png")
    assert main(args + ["--slides", str(slides)]) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "r.json").read_text())
    # both lesions hit (0.9, 0.4); false positives 0.3 and 0.35 on 2 slides
    assert report["n_lesions"] == 2 and report["n_slides"] == 2 and report["n_tumour_slides"] == 1
    assert report["sensitivities"] == pytest.approx([1.0] * 6)
    assert report["auc"] == pytest.approx(1.0)
    assert "FROC score 1.0000" in out and "slide AUC" in out
    # predict-slide's layout: {slide}/detections.csv with slide.json (size, resolution, maximum probability)
    (det / "tumor_001").mkdir()
    (det / "tumor_001.csv").rename(det / "tumor_001" / "detections.csv")
    (det / "tumor_001" / "slide.json").write_text(json.dumps({"level0_dimensions": [4096, 3072],
                                                              "level0_mpp": MPP, "max_probability": 0.2}))
    assert main(args) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["froc"] == pytest.approx(1.0) and report["auc"] == pytest.approx(0.0)
