"""Fully-convolutional tiled inference equals patch-by-patch prediction at the same positions, only tissue
is computed, the map can live on disk, and D4 test-time augmentation behaves as the group says."""

from pathlib import Path

import numpy as np
import pytest
import torch

from equipath.groups import get_group
from equipath.models import Normalized, create_model
from equipath.wsi.inference import Grid, plan_tiles, predict_dense, predict_patches, tissue_cells
from equipath.wsi.reader import SlideView, open_slide
from equipath.wsi.tissue import TissueOptions, tissue_mask

pytestmark = pytest.mark.wsi

CMU = Path(__file__).parent / "data" / "CMU-1-Small-Region.svs"
NORM = {"mean": [0.7, 0.5, 0.7], "std": [0.15, 0.2, 0.15]}


def tiny(name="p4m_densenet"):
    """A small model with its normalisation in front, as ``load_model`` returns a checkpoint's."""
    model = create_model(name, growth=8 if name.startswith("p4m") else 4).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, so the test sees real numbers
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return Normalized(model, **NORM).eval()


@pytest.fixture(scope="module")
def cmu_crop():
    with open_slide(CMU) as slide:
        return slide.read_region(700, 900, 290, 230)  # (230, 290, 3): neither side a multiple of 32


def sample_cells(grid, cells, n, rng):
    """``n`` tissue cells plus every corner cell: edges and partial tiles included."""
    rows, cols = grid.shape
    tissue = np.argwhere(cells)
    picked = tissue[rng.choice(len(tissue), size=min(n, len(tissue)), replace=False)]
    corners = np.array([[0, 0], [0, cols - 1], [rows - 1, 0], [rows - 1, cols - 1]])
    return np.concatenate([picked, corners])


def test_fully_convolutional_equals_patch_by_patch(cmu_crop):
    model = tiny()
    view = SlideView.at(open_slide(cmu_crop))
    grid = Grid.for_view(view, model)
    assert grid.shape == (8, 10) and grid.pad == 32
    _, _, cells = tissue_cells(view, grid, TissueOptions())
    assert 0 < cells.sum() < cells.size
    full = np.ones(grid.shape, bool)
    dense = predict_dense(model, view, grid, full, tile_cells=4, batch_size=3, progress=False)
    positions = sample_cells(grid, cells, 12, np.random.default_rng(0))
    reference = predict_patches(model, view, grid, positions, batch_size=16, progress=False)
    values = dense[positions[:, 0], positions[:, 1]]
    assert np.ptp(values) > 1e-3  # the map is not constant: the comparison means something
    np.testing.assert_allclose(values, reference, rtol=0, atol=1e-4)
    only_tissue = predict_dense(model, view, grid, cells, tile_cells=5, batch_size=2,
                                progress=False)
    np.testing.assert_allclose(only_tissue[cells], dense[cells], atol=1e-5)
    assert (only_tissue[~cells] == 0).all()


def test_resampled_view_and_on_disk_map(tmp_path):
    """On the real slide at half resolution (OpenSlide, resampled by 2) with the map as a memmap."""
    model = tiny()
    with open_slide(CMU) as slide:
        view = SlideView.at(slide, mpp=0.998)
        grid = Grid.for_view(view, model)
        _, _, cells = tissue_cells(view, grid)
        region = np.zeros(grid.shape, bool)
        region[10:16, 8:16] = cells[10:16, 8:16]  # a window of the slide keeps the test fast
        prob = predict_dense(model, view, grid, region, tile_cells=6, batch_size=2,
                             out=tmp_path / "map.npy", progress=False)
        positions = sample_cells(grid, region, 8, np.random.default_rng(1))[:-4]
        reference = predict_patches(model, view, grid, positions, progress=False)
    assert isinstance(prob, np.memmap)
    np.testing.assert_allclose(prob[positions[:, 0], positions[:, 1]], reference, atol=1e-4)
    np.testing.assert_array_equal(np.load(tmp_path / "map.npy"), prob)


def test_tiles_cover_the_tissue_once_and_follow_it():
    rng = np.random.default_rng(3)
    cells = np.zeros((37, 45), bool)
    cells[3:20, 2:9] = True  # a block
    cells[25:27, 5:44] = True  # a long thin strand
    cells[rng.integers(0, 37, 30), rng.integers(0, 45, 30)] = True  # specks
    tiles = plan_tiles(cells, 8)
    cover = np.zeros(cells.shape, int)
    for i, j, h, w in tiles:
        assert 1 <= h <= 8 and 1 <= w <= 8
        cover[i:i + h, j:j + w] += 1
    assert cover.max() == 1 and (cover[cells] == 1).all()
    lattice = sum(cells[i:i + 8, j:j + 8].any() for i in range(0, 37, 8) for j in range(0, 45, 8)) * 64
    assert sum(h * w for _, _, h, w in tiles) < lattice


def test_grid_geometry_maps_cells_to_level0():
    model = tiny()
    view = SlideView.at(open_slide(np.zeros((100, 130, 3), np.uint8)))
    grid = Grid.for_view(view, model)
    assert grid.shape == (4, 5)
    assert grid.patch_origin(1, 2) == (32, 0)
    x, y = grid.cell_centre_level0(np.array([0, 3]), np.array([0, 4]))
    assert x.tolist() == [16.0, 144.0] and y.tolist() == [16.0, 112.0]


def test_no_tissue_means_no_work():
    calls = []
    model = tiny()
    model.forward_dense = lambda x: calls.append(x) or torch.zeros(x.shape[0], 1, 1, 1)
    view = SlideView.at(open_slide(np.full((200, 200, 3), 245, np.uint8)))
    grid = Grid.for_view(view, model)
    _, mask, cells = tissue_cells(view, grid)
    assert not mask.any() and not cells.any()
    prob = predict_dense(model, view, grid, cells, progress=False)
    assert calls == [] and prob.shape == grid.shape and not prob.any()


def test_not_a_dense_classifier_is_rejected():
    view = SlideView.at(open_slide(np.zeros((96, 96, 3), np.uint8)))
    with pytest.raises(ValueError, match="not a fully-convolutional patch classifier"):
        Grid.for_view(view, torch.nn.Conv2d(3, 1, 3))
    model = tiny()
    with pytest.raises(ValueError, match="tile_cells"):
        predict_dense(model, view, Grid.for_view(view, model), tile_cells=0, progress=False)


def test_tissue_detection_thresholds_and_otsu():
    rng = np.random.default_rng(0)
    rgb = np.full((64, 64, 3), 235, np.uint8) + rng.integers(0, 8, (64, 64, 3), dtype=np.uint8)
    rgb[16:48, 16:48] = (190, 110, 180)  # H&E pink-purple
    rgb[0:6, 0:6] = (20, 20, 25)  # a dark, grey mark: fails the saturation test
    hsv = tissue_mask(rgb, TissueOptions(blur_sigma=0))
    assert hsv[16:48, 16:48].all() and hsv.sum() == 32 * 32
    otsu = tissue_mask(rgb, TissueOptions(method="otsu", blur_sigma=0))
    assert otsu[16:48, 16:48].all() and otsu.sum() == 32 * 32
    strict = tissue_mask(rgb, TissueOptions(saturation=0.5, blur_sigma=0))
    assert not strict.any()
    with pytest.raises(ValueError, match="tissue method"):
        TissueOptions(method="kmeans")


def test_tta_is_free_for_p4m_and_makes_a_baseline_invariant(cmu_crop):
    """D4 TTA through equipath.groups: nothing changes for p4m_densenet; a z2 baseline becomes stable."""
    d4 = get_group("p4m")
    image = np.ascontiguousarray(cmu_crop[:128, :128])  # 4 x 4 cells: the grid is symmetric

    def act(img, g):  # the planar action on an (H, W, 3) image
        return np.ascontiguousarray(d4.transform(img.transpose(2, 0, 1), g).transpose(1, 2, 0))

    def run(model, img, tta):
        view = SlideView.at(open_slide(img))
        return predict_dense(model, view, Grid.for_view(view, model), tile_cells=4,
                             batch_size=1, tta=tta, progress=False)

    g = 5  # a quarter turn after a mirror
    p4m = tiny("p4m_densenet")
    plain = run(p4m, image, False)
    np.testing.assert_allclose(run(p4m, image, True), plain, atol=1e-5)
    np.testing.assert_allclose(run(p4m, act(image, g), False), d4.transform(plain, g), atol=1e-5)

    z2 = tiny("densenet")
    before = np.abs(run(z2, act(image, g), False) - d4.transform(run(z2, image, False), g)).max()
    after = np.abs(run(z2, act(image, g), True) - d4.transform(run(z2, image, True), g)).max()
    assert before > 1e-3 and after < 1e-5


# ------------------------------------------------------------------------------ cost model, memory plan, reads
def _conv_macs(model, H, W):
    """Multiply-accumulates of the convolutions of ``forward_dense`` on a ``(1, 3, H, W)`` input, counted by
    PyTorch's own FLOP counter (2 FLOPs per MAC), not by the hooks the planner uses."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.forward_dense(torch.zeros(1, 3, H, W))
    return counter.get_flop_counts()["Global"].get(torch.ops.aten.convolution, 0) / 2


@pytest.mark.parametrize("name", ["p4m_densenet", "densenet"])
def test_tile_cost_is_exact_on_tiles_it_was_not_fitted_on(name):
    """``TileCost.of_model`` is fitted on 1x1, 1x2 and 2x2-cell tiles; ``A h w + B (h + w) + C`` must give the
    convolution MACs of every other tile exactly (every layer's side is affine in the tile side)."""
    from equipath.wsi.inference import TileCost

    model = create_model(name, growth=8 if name.startswith("p4m") else 4).eval()
    cost = TileCost.of_model(model)
    s, rf = model.output_stride, model.receptive_field
    for h, w in [(1, 1), (3, 5), (4, 4), (7, 2)]:
        assert cost(h, w) == pytest.approx(_conv_macs(model, (h - 1) * s + rf, (w - 1) * s + rf), rel=1e-9)
    assert cost.A > 0 and cost.B > 0  # a cell costs, and so does every tile's margin
    # a box cut into a lattice of tiles pays the margin of each tile
    assert cost.lattice(10, 10, 5) == pytest.approx(4 * cost(5, 5))


class _NoLayers(torch.nn.Module):
    """A dense classifier with no parameters and no convolutions: the planner must still plan for it."""

    output_stride, receptive_field = 32, 96

    def forward_dense(self, x):
        return torch.nn.functional.avg_pool2d(x[:, :1], 96, 32)


def test_memory_plan_follows_the_budget_the_cap_and_the_device():
    from equipath.wsi.inference import memory_plan

    model = create_model("p4m_densenet", growth=8).eval()
    cpu, cuda = torch.device("cpu"), torch.device("cuda")  # the CUDA branch needs no GPU when the budget is given
    sides = [memory_plan(model, cpu, budget=b)[0] for b in (2 << 20, 64 << 20, 512 << 20, 4 << 30)]
    assert sides == sorted(sides) and sides[0] >= 1 and sides[-1] == 24  # grows with the budget, capped at 24
    assert memory_plan(model, cpu, budget=4 << 30, largest_tile=10) == (10, 1)  # the CPU runs one tile per pass
    small, big = memory_plan(model, cuda, budget=1 << 30), memory_plan(model, cuda, budget=64 << 30)
    assert big[0] >= small[0] and big[1] > small[1] >= 1  # a GPU batches as many tiles as fit
    assert memory_plan(_NoLayers(), cpu, budget=1 << 30)[0] >= 1


def test_read_ahead_keeps_order_and_at_most_depth_reads_in_flight():
    import threading
    import time

    from equipath.wsi.inference import read_ahead

    lock, state = threading.Lock(), {"now": 0, "most": 0}

    def read(job):
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        time.sleep(0.01 * (job % 3))  # out-of-order completion
        with lock:
            state["now"] -= 1
        return job * job

    out = []
    for job, value in read_ahead(range(20), read, workers=4, depth=3):
        out.append((job, value))
    assert out == [(j, j * j) for j in range(20)]
    assert 1 <= state["most"] <= 3


def test_saturation_and_value_are_skimages_hsv_bit_for_bit(cmu_crop):
    """Tissue detection computes HSV saturation and value without the float64 image and the hue (a third
    of the memory on a whole-slide thumbnail); they must be exactly ``skimage.color.rgb2hsv``'s."""
    from skimage.color import rgb2hsv

    from equipath.data.tissue import saturation_value

    rng = np.random.default_rng(4)
    special = np.array([[0, 0, 0], [255, 255, 255], [128, 128, 128], [255, 0, 0], [1, 0, 0], [0, 0, 1], [7, 7, 8]],
                       np.uint8)
    images = [rng.integers(0, 256, (31, 17, 3), dtype=np.uint8), special[None], cmu_crop]
    for rgb in images:
        sat, val = saturation_value(rgb)
        hsv = rgb2hsv(rgb)
        assert sat.dtype == val.dtype == np.float64
        np.testing.assert_array_equal(sat, hsv[..., 1])
        np.testing.assert_array_equal(val, hsv[..., 2])
