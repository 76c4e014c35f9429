"""Slide outputs (GeoJSON, pyramidal TIFF, PNG) and detections (square NMS against MONAI, the CSV)."""

import json

import numpy as np
import pytest
from monai.transforms.post.array import ProbNMS
from PIL import Image

from equipath.wsi.detection import read_detections_csv, square_nms, write_detections_csv
from equipath.atomic import atomic_path
from equipath.wsi.outputs import write_geojson, write_heatmap_png, write_pyramidal_tiff
from equipath.wsi.reader import open_slide

pytestmark = pytest.mark.wsi


def test_geojson_regions_with_a_hole_in_level0_pixels(tmp_path):
    prob = np.zeros((12, 14), np.float32)
    prob[2:9, 3:10] = 0.9
    prob[4:7, 5:8] = 0.1  # a hole
    prob[10, 12] = 0.7  # a second, one-cell region
    write_geojson(tmp_path / "r.geojson", prob, threshold=0.5, cell_size=100.0)
    data = json.loads((tmp_path / "r.geojson").read_text())
    assert data["type"] == "FeatureCollection" and len(data["features"]) == 2
    big, small = data["features"]
    assert big["properties"]["objectType"] == "annotation"
    assert big["properties"]["classification"]["name"] == "Tumor"
    outer, hole = (np.array(ring) for ring in big["geometry"]["coordinates"])
    assert len(big["geometry"]["coordinates"]) == 2
    for ring in (outer, hole):
        np.testing.assert_array_equal(ring[0], ring[-1])  # closed rings
    # The outer ring runs half-way between boundary cell centres: cells 3..9 have centres 350..950.
    assert outer[:, 0].min() == pytest.approx(300) and outer[:, 0].max() == pytest.approx(1000)
    assert outer[:, 1].min() == pytest.approx(200) and outer[:, 1].max() == pytest.approx(900)
    assert hole[:, 0].min() == pytest.approx(500) and hole[:, 0].max() == pytest.approx(800)
    m = big["properties"]["measurements"]
    assert m["max_probability"] == pytest.approx(0.9) and m["area_px"] == pytest.approx((49 - 9) * 100.0**2)
    centre = np.array(small["geometry"]["coordinates"][0]).mean(axis=0)
    np.testing.assert_allclose(centre, [1250, 1050], atol=15)


def test_pyramidal_tiff_heatmap_is_multilevel_with_resolution(tmp_path):
    prob = np.linspace(0, 1, 600 * 300, dtype=np.float32).reshape(300, 600)
    write_pyramidal_tiff(tmp_path / "h.tif", prob, cell_mpp=31.1, tile=128)
    for backend in ("openslide", "tiffslide"):
        with open_slide(tmp_path / "h.tif", backend) as slide:
            assert slide.level_dimensions == ((600, 300), (300, 150), (150, 75), (75, 38))
            assert slide.mpp == pytest.approx(31.1, rel=1e-3)
            left, right = slide.read_region(0, 0, 4, 4, 1), slide.read_region(290, 146, 4, 4, 1)
            assert left[..., 2].mean() > left[..., 0].mean() and right[..., 0].mean() > right[..., 2].mean()


def test_heatmap_png_blends_only_the_given_cells(tmp_path):
    thumb = np.full((40, 60, 3), 200, np.uint8)
    prob = np.ones((4, 6), np.float32)
    cells = np.zeros((4, 6), bool)
    cells[0, 0] = True
    write_heatmap_png(tmp_path / "h.png", thumb, prob, cells)
    out = np.asarray(Image.open(tmp_path / "h.png"))
    assert out.shape == (40, 60, 3)
    assert (out[10:, 10:] == 200).all() and (out[:10, :10] != 200).any()


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "x.json") as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("window", [1, 3, 5, 8])
def test_square_nms_matches_monai_prob_nms(window):
    rng = np.random.default_rng(window)
    prob = rng.random((23, 31)).astype(np.float32) ** 3
    prob[5, 5] = prob[5, 6] = 0.99  # a tie: the first in row-major order wins in both
    ours = square_nms(prob, window, threshold=0.3)
    theirs = np.array(ProbNMS(prob_threshold=0.3, box_size=window)(prob.copy()), dtype=np.float64)
    np.testing.assert_allclose(ours, theirs)
    assert len(ours) > 3


def test_square_nms_keeps_the_window_apart():
    prob = np.zeros((9, 9), np.float32)
    prob[4, 4], prob[4, 6], prob[4, 8] = 0.9, 0.8, 0.7
    assert square_nms(prob, 5, 0.5)[:, 2].tolist() == [4.0, 8.0]  # (4, 6) is inside the first window
    assert square_nms(prob, 3, 0.5)[:, 2].tolist() == [4.0, 6.0, 8.0]
    assert square_nms(prob, 3, 0.75)[:, 0].tolist() == pytest.approx([0.9, 0.8])
    with pytest.raises(ValueError, match="window"):
        square_nms(prob, 0)


def test_detection_csv_roundtrip_and_errors(tmp_path):
    path = write_detections_csv(tmp_path / "d.csv", [0.9, 0.25], [1000.4, 20], [30, 4000.6])
    assert path.read_text() == "0.900000,1000,30\n0.250000,20,4001\n"  # Camelyon16: no header, integer level-0
    probs, xs, ys = read_detections_csv(path)
    assert probs.tolist() == [0.9, 0.25] and xs.tolist() == [1000, 20] and ys.tolist() == [30, 4001]
    (tmp_path / "h.csv").write_text("prob,X,Y\n0.5,1,2\n")
    assert read_detections_csv(tmp_path / "h.csv")[0].tolist() == [0.5]
    (tmp_path / "bad.csv").write_text("0.5,1,2\n0.5,one,2\n")
    with pytest.raises(ValueError, match=r"bad.csv, line 2: expected 'prob,X,Y'"):
        read_detections_csv(tmp_path / "bad.csv")
    (tmp_path / "p.csv").write_text("1.5,1,2\n")
    with pytest.raises(ValueError, match="not in"):
        read_detections_csv(tmp_path / "p.csv")
    with pytest.raises(FileNotFoundError):
        read_detections_csv(tmp_path / "none.csv")
