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


def test_heatmap_png_colours_only_predicted_cells_and_has_a_legend(tmp_path):
    thumb = np.full((40, 60, 3), 200, np.uint8)
    prob = np.full((4, 6), np.nan, np.float32)
    prob[0, 0] = 1.0
    write_heatmap_png(tmp_path / "h.png", thumb, prob, pixel_size=1.0, cell_size=10.0, title="a slide")
    out = np.asarray(Image.open(tmp_path / "h.png"))
    assert out.shape[0] > 40 and out.shape[1] >= 60  # the legend panel below the picture
    assert (out[10:40, 10:60] == 200).all() and (out[:10, :10] != 200).any()
    legend = out[40:]
    viridis_end = np.array([253, 231, 37])  # the colour bar reaches the colour map's top colour
    assert (np.abs(legend.astype(int) - viridis_end).sum(axis=-1) < 30).any()


def _slide_with_squares(H, W, cell):
    """An image whose every level-0 cell block has its own grey level, and a map holding that level."""
    rows, cols = -(-H // cell), -(-W // cell)
    levels = (np.arange(rows * cols).reshape(rows, cols) * 37 % 200 + 20).astype(np.uint8)
    image = np.repeat(np.repeat(levels, cell, axis=0), cell, axis=1)[:H, :W]
    return image, levels


@pytest.mark.parametrize("H, W, cell, pixel", [(1000, 1000, 32, 1000 / 511), (2967, 2220, 63.9, 2.9),
                                               (333, 250, 32, 1.0)])
def test_heatmap_cells_lie_on_their_own_level0_pixels(tmp_path, H, W, cell, pixel):
    """A slide whose size is not a multiple of the cell: every thumbnail pixel shows the map value of the
    cell its level-0 centre lies in, up to the last row and column (no stretching of the grid)."""
    from equipath.wsi.outputs import cells_to_pixels

    rows, cols = int(np.ceil(H / cell)), int(np.ceil(W / cell))
    values = np.arange(rows * cols, dtype=np.float32).reshape(rows, cols)
    shape = (int(H // pixel), int(W // pixel))
    drawn = cells_to_pixels(values, shape, pixel_size=pixel, cell_size=cell, fill=np.nan)
    ys, xs = ((np.arange(n) + 0.5) * pixel for n in shape)  # level-0 centres of the thumbnail pixels
    expected = values[(ys // cell).astype(int)[:, None], (xs // cell).astype(int)[None, :]]
    np.testing.assert_array_equal(drawn, expected)
    # the coloured area reaches the thumbnail's last row and column (the issue: it stopped one cell short)
    assert drawn[-1, -1] == values[int(ys[-1] // cell), int(xs[-1] // cell)]
    # the PNG: thumbnail pixels of the blended picture change exactly where their cell's value changes
    prob = values / values.max()
    thumb = np.full(shape + (3,), 255, np.uint8)
    write_heatmap_png(tmp_path / "h.png", thumb, prob, pixel_size=pixel, cell_size=cell, alpha=1.0)
    picture = np.asarray(Image.open(tmp_path / "h.png"))[:shape[0], :shape[1]]
    from equipath.wsi.outputs import colorize

    np.testing.assert_array_equal(picture, colorize(expected / values.max()))


@pytest.mark.parametrize("size, cell", [((1000, 1000), 32), ((2967, 2220), 64), ((700, 333), 48)])
def test_heatmap_lines_up_with_the_tissue_in_the_thumbnail(size, cell):
    """The issue's picture: an image of grey blocks, one per grid cell, whose size is not a multiple of the
    cell. Read as the pipeline reads its thumbnail (at most 511 px), every thumbnail pixel inside a block
    gets that block's cell from the map, right up to the last row and column."""
    from scipy import ndimage as ndi

    from equipath.wsi.outputs import cells_to_pixels
    from equipath.wsi.reader import SlideView

    image, levels = _slide_with_squares(*size, cell)
    view = SlideView.at(open_slide(np.repeat(image[..., None], 3, axis=-1)))
    thumb_view = view.coarser(max(view.shape) / 511)
    thumbnail = thumb_view.read_all()[..., 0].astype(int)
    drawn = cells_to_pixels(levels.astype(int), thumbnail.shape, thumb_view.downsample, float(cell), fill=-1)
    # pixels well inside a block (their 3 x 3 neighbourhood has one grey level) show that block
    flat = ndi.maximum_filter(thumbnail, 3) == ndi.minimum_filter(thumbnail, 3)
    assert flat.mean() > 0.3
    np.testing.assert_array_equal(drawn[flat], thumbnail[flat])
    assert (drawn >= 0).all()  # the map reaches the thumbnail's last row and column


def test_probability_map_keeps_background_apart_from_zero(tmp_path):
    """NaN (not predicted) is neither coloured, nor a region, nor a detection; a predicted 0 is coloured."""
    from equipath.wsi.detection import square_nms

    prob = np.full((3, 4), np.nan, np.float32)
    prob[1, 1], prob[1, 2] = 0.0, 0.9
    thumb = np.full((30, 40, 3), 128, np.uint8)
    write_heatmap_png(tmp_path / "h.png", thumb, prob, pixel_size=1.0, cell_size=10.0, alpha=1.0)
    picture = np.asarray(Image.open(tmp_path / "h.png"))[:30, :40]
    assert (picture[:10] == 128).all()  # background: the thumbnail as it is
    from equipath.wsi.outputs import colorize

    np.testing.assert_array_equal(picture[15, 15], colorize(np.array([0.0]))[0])  # a predicted 0: coloured
    assert colorize(prob)[0, 0].tolist() == [255, 255, 255]  # the TIFF's background: white
    write_geojson(tmp_path / "r.geojson", prob, threshold=0.0, cell_size=10.0)
    (feature,) = json.loads((tmp_path / "r.geojson").read_text())["features"]
    assert feature["properties"]["measurements"]["area_px"] == 200.0  # the two predicted cells only
    assert square_nms(prob, 1, threshold=-1.0)[:, 1:].tolist() == [[1, 2], [1, 1]]


def test_geojson_is_clipped_to_the_slide(tmp_path):
    """A region in the last row and column of cells (which reach past a 2220 x 2967 slide) stays inside it."""
    cell = 64.0
    W, H = 2220, 2967  # CMU-1-Small-Region: 35 x 47 cells of 64 px reach 2240 x 3008
    rows, cols = int(np.ceil(H / cell)), int(np.ceil(W / cell))
    prob = np.zeros((rows, cols), np.float32)
    prob[-5:, -4:] = 0.9
    prob[-3, -2] = 0.1  # a hole that stays inside
    write_geojson(tmp_path / "r.geojson", prob, threshold=0.5, cell_size=cell, bounds=(W, H))
    (feature,) = json.loads((tmp_path / "r.geojson").read_text())["features"]
    outer, hole = (np.array(ring) for ring in feature["geometry"]["coordinates"])
    assert outer[:, 0].max() == W and outer[:, 1].max() == H  # clipped exactly at the border
    assert outer[:, 0].min() == pytest.approx((cols - 4) * cell) and outer[:, 1].min() == pytest.approx((rows - 5) * cell)
    np.testing.assert_array_equal(outer[0], outer[-1])
    assert hole[:, 0].max() <= W and hole[:, 1].max() <= H
    area = (W - (cols - 4) * cell) * (H - (rows - 5) * cell) - cell**2
    assert feature["properties"]["measurements"]["area_px"] == pytest.approx(area)
    # unclipped, the same region would have run past the slide
    write_geojson(tmp_path / "u.geojson", prob, threshold=0.5, cell_size=cell)
    unclipped = np.array(json.loads((tmp_path / "u.geojson").read_text())["features"][0]["geometry"]["coordinates"][0])
    assert unclipped[:, 1].max() > H


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
