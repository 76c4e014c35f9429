"""Tiled segmentation (equipath.wsi.segment): equal to one whole-image forward pass, exact under the group."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from equipath.groups import get_group
from equipath.models import create_model
from equipath.wsi.reader import SlideView, open_slide
from equipath.wsi.segment import plan_segmentation, segment_view

CMU = Path(__file__).parent / "data" / "CMU-1-Small-Region.svs"


def _region(model, extra_rows: int, extra_cols: int, x: int = 700, y: int = 900) -> np.ndarray:
    """An admissible, non-square region of the CMU slide, about ``2 r + 200`` pixels on a side."""
    rule, r = model.size_rule, model.receptive_radius
    h = rule.first + rule.step * ((2 * r + 200) // rule.step + extra_rows)
    w = rule.first + rule.step * ((2 * r + 200) // rule.step + extra_cols)
    return SlideView.at(open_slide(CMU)).read(x, y, w, h)


def _calibrated(model, pixels: np.ndarray):
    """``model`` in eval mode with batch-norm statistics of ``pixels``, so no untrained unit is dead."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = 1.0
    with torch.no_grad():
        model.train()(torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255)
    return model.eval()


def _whole(model, pixels: np.ndarray) -> np.ndarray:
    """Logits ``(C, H, W)`` of one forward pass over the whole region."""
    with torch.no_grad():
        return model(torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255)[0].numpy()


def _error(a: np.ndarray, b: np.ndarray) -> float:
    """Largest difference relative to the largest logit (the logits of an untrained model are not O(1))."""
    return float(np.nanmax(np.abs(a - b)) / np.nanmax(np.abs(b)))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["p4m_unet", "p4m_gerunet", "iso_unet"])
def test_tiled_prediction_equals_one_whole_region_pass(name):
    model = create_model(name, width=2)
    pixels = _region(model, 0, 3)
    model = _calibrated(model, pixels)
    tile = 2 * model.receptive_radius + model.total_stride + 64
    plan = plan_segmentation(model, pixels.shape[:2], tile)
    # many windows per axis, cores far smaller than the region, corners and uneven cores included
    assert plan.exact and len(plan.rows.starts) >= 3 and len(plan.cols.starts) >= 4
    assert min(e - b for b, e in plan.cols.cores) * 4 < pixels.shape[1]
    assert len({e - b for b, e in plan.cols.cores}) > 1
    tiled = segment_view(model, SlideView.at(open_slide(pixels)), tile=tile, tissue=None, progress=False,
                         batch_size=3, logits=True)
    whole = _whole(model, pixels)
    assert tiled.shape == whole.shape == (2, *pixels.shape[:2]) and np.isfinite(tiled).all()
    assert whole.std() > 1e-3 * np.abs(whole).max() and _error(tiled, whole) <= 1e-4


def test_a_small_margin_is_approximate_and_says_so(caplog):
    model = create_model("p4m_gerunet", width=2)
    pixels = _region(model, 0, 0)
    model = _calibrated(model, pixels)
    tile = model.receptive_radius + 3 * model.total_stride
    with caplog.at_level("WARNING"):
        tiled = segment_view(model, SlideView.at(open_slide(pixels)), tile=tile, margin=model.receptive_radius // 4,
                             tissue=None, progress=False, logits=True)
    assert "margin" in caplog.text and "differ" in caplog.text
    assert _error(tiled, _whole(model, pixels)) > 1e-3


def test_tissue_only_leaves_glass_nan_and_disk_map_matches(tmp_path):
    model = create_model("iso_unet", width=2).eval()
    pixels = np.full((400, 432, 3), 240, np.uint8)  # glass, with tissue in the top-left corner
    pixels[:120, :150] = SlideView.at(open_slide(CMU)).read(800, 800, 150, 120)
    view = SlideView.at(open_slide(pixels, mpp=0.5))
    kw = dict(tile=2 * model.receptive_radius + 64, progress=False)
    on_disk = segment_view(model, view, out=tmp_path / "map.npy", dtype=np.float16, **kw)
    in_memory = segment_view(model, view, **kw)
    assert np.isnan(in_memory[:, -10:, -10:]).all() and np.isfinite(in_memory[:, :120, :150]).mean() > 0.5
    assert np.allclose(np.load(tmp_path / "map.npy"), in_memory, atol=1e-3, equal_nan=True)
    assert isinstance(on_disk, np.memmap)


@pytest.mark.slow
@pytest.mark.parametrize("name, margin, exact", [("p4m_gerunet", None, True), ("p4m_gerunet", 20, True),
                                                 ("resunet", None, False)])
def test_roto_reflected_slide_files_give_roto_reflected_maps(tmp_path, name, margin, exact):
    group = get_group("p4m")
    pixels = SlideView.at(open_slide(CMU)).read(650, 1900, 233, 209)
    model = _calibrated(create_model(name, width=2), pixels[:201, :201])
    image = torch.from_numpy(pixels).permute(2, 0, 1)  # (3, H, W)
    maps = []
    for g in range(group.order):
        path = tmp_path / f"g{g}.png"
        Image.fromarray(group.transform(image, g).permute(1, 2, 0).numpy()).save(path)
        view = SlideView.at(open_slide(path, mpp=0.5))
        logits = segment_view(model, view, tile=193, margin=margin, progress=False, logits=True)  # (C, H', W')
        maps.append(group.transform(torch.from_numpy(logits), int(group.inverse[g])).numpy())
    nan = np.isnan(maps[0])
    errors = [_error(m, maps[0]) for m in maps[1:]]
    assert nan.mean() < 0.95 and (margin is not None or nan.mean() > 0.05)  # glass left out, alike in every orientation
    if exact:
        assert all(np.array_equal(np.isnan(m), nan) for m in maps) and max(errors) <= 1e-4
    else:
        assert max(errors) > 1e-3
