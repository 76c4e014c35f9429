"""``equipath view``: DeepZoom tiles, the local server (127.0.0.1, ephemeral port, shut down after each
test), the layers of an output folder, and the page in a real headless Chromium: a screenshot's pixels show
the heatmap over the tissue where the map says, and nothing where it is NaN."""

import json
import shutil
import subprocess
import urllib.error
import urllib.request
from io import BytesIO

import numpy as np
import pytest
from PIL import Image

from equipath.cli import main
from equipath.viewer.deepzoom import DeepZoom
from equipath.viewer.layers import Run, find_runs
from equipath.viewer.server import STATIC, ViewerServer
from equipath.wsi.outputs import colorize, write_geojson
from equipath.wsi.reader import open_slide

PINK = (200, 120, 190)


def _get(url: str) -> tuple[bytes, str]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read(), response.headers["Content-Type"]


def _run_folder(tmp_path, H=700, W=900, cell=64.0, predicted_rows=7):
    """A pink (all tissue) slide whose size is not a multiple of the cell; the map is 1.0 on the first
    ``predicted_rows`` rows and NaN (not predicted) below."""
    slide = tmp_path / "slide.png"
    Image.fromarray(np.tile(np.array(PINK, np.uint8), (H, W, 1))).save(slide)
    folder = tmp_path / "out" / "slide"
    folder.mkdir(parents=True)
    rows, cols = int(np.ceil(H / cell)), int(np.ceil(W / cell))
    prob = np.full((rows, cols), np.nan, np.float32)
    prob[:predicted_rows] = 1.0
    np.save(folder / "probability.npy", prob)
    (folder / "slide.json").write_text(json.dumps({
        "slide": str(slide), "level0_dimensions": [W, H], "level0_mpp": 0.5, "synthetic": True,
        "grid": {"cell_size_level0": cell}, "model": {"name": "p4m_densenet", "kwargs": {"growth": 8}},
        "options": {"cmap": "viridis", "alpha": 0.5, "threshold": 0.5}, "warnings": []}))
    return folder, prob


def test_deepzoom_levels_and_tiles_rebuild_the_slide():
    y, x = np.mgrid[:300, :517]
    image = np.stack([127 + 100 * np.sin(x / 23), 127 + 100 * np.cos(y / 17), (x + y) % 256], -1).astype(np.uint8)
    dz = DeepZoom(open_slide(image), tile_size=128, overlap=2, format="png")
    assert dz.max_level == 10 and dz.level_dimensions[10] == (517, 300) and dz.level_dimensions[0] == (1, 1)
    assert dz.level_dimensions[9] == (259, 150) and dz.tile_grid(10) == (5, 3)
    rebuilt = np.zeros_like(image)
    for col in range(5):
        for row in range(3):
            x0, y0, x1, y1 = dz.tile_box(10, col, row)
            tile = np.asarray(Image.open(BytesIO(dz.tile_bytes(10, col, row))))
            assert tile.shape == (y1 - y0, x1 - x0, 3)
            rebuilt[y0:y1, x0:x1] = tile
    np.testing.assert_array_equal(rebuilt, image)  # the full-resolution level is the slide itself
    half = np.asarray(dz.read_tile(9, 0, 0), np.float32)[:128, :128, :2]
    expected = image[:256, :256, :2].reshape(128, 2, 128, 2, 2).mean(axis=(1, 3))
    assert np.abs(half - expected).mean() < 2  # a coarser level is the slide shrunk
    with pytest.raises(ValueError, match="outside level"):
        dz.tile_box(10, 5, 0)


def test_server_serves_tiles_layers_and_only_its_own_files(tmp_path):
    folder, prob = _run_folder(tmp_path)
    write_geojson(folder / "regions.geojson", np.nan_to_num(prob), 0.5, 64.0, bounds=(900, 700))
    (folder / "detections.csv").write_text("0.9,100,120\n0.7,400,300\n")
    with pytest.raises(ValueError, match="127.0.0.1"):
        ViewerServer([], host="0.0.0.0")
    server = ViewerServer([Run(f) for f in find_runs(tmp_path / "out")], port=0)
    server.start()
    try:
        assert server.url.startswith("http://127.0.0.1:")
        page, kind = _get(server.url)
        assert kind.startswith("text/html") and b"openseadragon.min.js" in page and b"http" not in page.split(b"<body>")[0]
        (run,) = json.loads(_get(server.url + "api/runs.json")[0])
        assert run["slide"]["width"] == 900 and run["synthetic"] and run["model"]["name"] == "p4m_densenet"
        layers = {layer["id"]: layer for layer in run["layers"]}
        assert set(layers) == {"heatmap", "regions", "detections"}
        assert layers["heatmap"]["width_level0"] == 15 * 64.0 and layers["detections"]["count"] == 2
        tile, kind = _get(server.url + "runs/0/tiles/10/0_0.jpeg")
        assert kind == "image/jpeg" and Image.open(BytesIO(tile)).size == (255, 255)
        heat = np.asarray(Image.open(BytesIO(_get(server.url + "runs/0/layers/heatmap")[0])))
        assert heat.shape == prob.shape + (4,)
        assert (heat[:7, :, 3] == 255).all() and (heat[7:, :, 3] == 0).all()  # NaN: transparent
        np.testing.assert_array_equal(heat[0, 0, :3], colorize(np.array([1.0]))[0])
        regions = json.loads(_get(server.url + "runs/0/layers/regions")[0])
        assert regions["features"][0]["properties"]["_colour"] == "#c80000"
        for bad in ("static/../layers.py", "static/%2e%2e/layers.py", "runs/1/layers/heatmap", "runs/0/layers/nope",
                    "runs/0/tiles/99/0_0.jpeg", "runs/0/tiles/10/0_0.png"):
            with pytest.raises(urllib.error.HTTPError, match="404"):
                _get(server.url + bad)
        assert (STATIC / "openseadragon" / "LICENSE.txt").is_file()
    finally:
        server.stop()


def test_view_cli_names_the_flag_when_the_slide_has_moved(tmp_path, capsys):
    folder, _ = _run_folder(tmp_path)
    (tmp_path / "slide.png").rename(tmp_path / "moved.png")
    assert main(["view", str(folder), "--port", "0"]) == 2
    assert "--slide" in capsys.readouterr().err
    assert main(["view", str(tmp_path / "nothing-here"), "--port", "0"]) == 2
    assert "does not exist" in capsys.readouterr().err


def _browser():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        if path := shutil.which(name):
            return path
    return None


@pytest.mark.slow
@pytest.mark.skipif(_browser() is None, reason="no Chromium/Chrome on PATH (.ci/run installs the Debian package)")
def test_browser_shows_the_heatmap_over_the_tissue(tmp_path):
    """Headless Chromium loads the page; in its screenshot the slide's predicted rows are pink blended with
    the colour map's top colour (alpha 0.5) and the NaN rows below stay pink, with the boundary where the
    map puts it (7 rows of 64 px on a 700 px high slide)."""
    folder, _ = _run_folder(tmp_path)
    server = ViewerServer([Run(folder)], port=0)
    server.start()
    shot = tmp_path / "shot.png"
    try:
        subprocess.run([_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,800",
                        "--virtual-time-budget=15000", f"--screenshot={shot}", server.url],
                       check=True, timeout=120, capture_output=True)
    finally:
        server.stop()
    pixels = np.asarray(Image.open(shot).convert("RGB"), np.float32)[:, 301:]  # right of the side panel
    blended = 0.5 * np.array(PINK) + 0.5 * colorize(np.array([1.0]))[0]

    def near(colour):
        return np.abs(pixels - colour).max(axis=-1) <= 14

    over, tissue = near(blended), near(PINK)
    assert over.sum() > 20_000 and tissue.sum() > 10_000, (over.sum(), tissue.sum())
    over_rows, tissue_rows = np.flatnonzero(over.mean(axis=1) > 0.3), np.flatnonzero(tissue.mean(axis=1) > 0.3)
    top, boundary, bottom = over_rows.min(), tissue_rows.min(), tissue_rows.max() + 1
    assert over_rows.max() < boundary  # the heatmap is above the not-predicted rows, nowhere below
    # (headless Chromium may stretch the page's canvas vertically when it sizes the window for the screenshot:
    # fractions of the slide's height are checked, not pixel counts; measured 513 / 800 = 0.641)
    assert (boundary - top) / (bottom - top) == pytest.approx(7 * 64 / 700, abs=0.01)
    over_cols, tissue_cols = np.flatnonzero(over.any(axis=0)), np.flatnonzero(tissue.any(axis=0))
    assert abs(over_cols.min() - tissue_cols.min()) <= 2 and abs(over_cols.max() - tissue_cols.max()) <= 2


def test_every_viewer_and_config_file_is_package_data():
    """A wheel holds what the viewer serves and the configs (pyproject's package-data globs cover each file)."""
    import fnmatch
    import tomllib
    from pathlib import Path

    root = Path(__file__).parents[1]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for package in ("equipath.viewer", "equipath.configs"):
        base = root.joinpath(*package.split("."))
        files = [p.relative_to(base).as_posix() for p in base.rglob("*")
                 if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts]
        assert files
        missing = [f for f in files if not any(fnmatch.fnmatch(f, g) for g in globs[package])]
        assert not missing, f"{package}: not in [tool.setuptools.package-data]: {missing}"


def test_predict_segmentation_outputs_are_layers(tmp_path):
    """``predict``'s folder for a segmentation model: the label TIFF becomes a class-coloured layer over
    the level-0 pixels it covers (255 and background transparent), cell points a GeoJSON layer."""
    from equipath.wsi.geojson import class_color
    from equipath.wsi.segment_outputs import write_label_tiff

    slide = tmp_path / "slide.png"
    Image.fromarray(np.full((300, 500, 3), 200, np.uint8)).save(slide)
    folder = tmp_path / "out" / "slide"
    folder.mkdir(parents=True)
    labels = np.zeros((150, 250), np.uint8)  # the model ran at half resolution
    labels[:, 100:] = 2
    labels[:10] = 255
    write_label_tiff(folder / "labels.tif", labels, mpp=1.0, tile=64)
    (folder / "segment.json").write_text(json.dumps({
        "source": str(slide), "classes": {"0": "Background", "1": "Stroma", "2": "Tumor"},
        "view": {"downsample": 2.0, "mpp": 1.0, "shape": [150, 250]}, "model": {"name": "p4m_unet"}}))
    (folder / "cells.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [10, 20]},
         "properties": {"classification": {"name": "Tumor", "color": [200, 0, 0]}}}]}))
    (run_dir,) = find_runs(tmp_path / "out")
    run = Run(run_dir)
    manifest = run.manifest(0)
    layers = {layer["id"]: layer for layer in manifest["layers"]}
    assert manifest["slide"]["mpp"] == 0.5 and layers["cells"]["count"] == 1
    segmentation = layers["segmentation"]
    assert (segmentation["width_level0"], segmentation["height_level0"]) == (500, 300)
    assert segmentation["legend"]["swatches"] == [["Stroma", "#%02x%02x%02x" % tuple(class_color(1))],
                                                  ["Tumor", "#%02x%02x%02x" % tuple(class_color(2))]]
    body, kind = run.layer_bytes("segmentation")
    rgba = np.asarray(Image.open(BytesIO(body)))
    step = 250 // rgba.shape[1]  # the coarsest page of at most 4096 px is the full one here
    assert step == 1 and kind == "image/png"
    assert (rgba[20:, 100:, :3] == class_color(2)[:3]).all() and (rgba[20:, 100:, 3] == 255).all()
    assert (rgba[:10, :, 3] == 0).all() and (rgba[20:, :100, 3] == 0).all()  # not predicted, background
    coarse = run._labels_layer(folder / "labels.tif", 500, max_side=64)  # a page of every 4th pixel: 38 x 63
    assert coarse["width_level0"] == 63 * 4 * 2.0 and coarse["height_level0"] == 38 * 4 * 2.0
    run.close()
