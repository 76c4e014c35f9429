"""Stability maps: exact under the group for an equivariant model, not for a baseline; the rotation
machinery, the probability maps and the report section check their numbers."""

import json
import math

import pytest
import torch
from torch import nn

from equipath.analysis import ProbabilityMap, group_stability, rotation_stability, stability_section
from equipath.data.rotation import rotate
from equipath.analysis.stability import rotation_angles, stability_figure
from equipath.groups import get_group
from equipath.models import create_model
from equipath.nn import LiftingConv2d, ProjectionConv2d



class TinySeg(nn.Module):
    """A two-class segmentation net, p4m-equivariant or (with group z2) a plain baseline."""

    task = "segmentation"

    def __init__(self, group):
        super().__init__()
        self.net = nn.Sequential(LiftingConv2d(3, 4, 5, group, padding=2), nn.ReLU(),
                                 ProjectionConv2d(4, 2, 3, group, padding=1))

    def forward(self, x):
        return 4 * self.net(x)


def test_rotate_agrees_with_the_group_and_angles():
    p4 = get_group("p4")
    x = torch.rand(2, 3, 17, 17)
    assert torch.allclose(rotate(x, math.pi / 2), p4.transform(x, 1), atol=1e-5)  # one helper, in radians
    assert torch.allclose(rotate(x, -math.pi / 2), p4.transform(x, 3), atol=1e-5)
    assert torch.allclose(rotate(x, 0), x, atol=1e-6)
    assert rotation_angles(32)[:3] == [0.0, 2.8125, 5.625] and max(rotation_angles(32)) < 90
    with pytest.raises(ValueError, match="square"):
        rotate(torch.rand(1, 3, 8, 9), 0.1)


def test_group_stability_equivariant_vs_baseline():
    image = torch.rand(3, 24, 24)
    equivariant = ProbabilityMap(TinySeg("p4m").eval())
    baseline = ProbabilityMap(TinySeg("z2").eval())
    eq, base = group_stability(equivariant, image), group_stability(baseline, image)
    assert eq.count == 8 and eq.valid.all()
    assert eq.summary < 1e-6
    assert base.summary > 1e-3
    # the numbers are the definition: per-pixel mean / population std of T_g^-1 f(T_g x)
    p4m = get_group("p4m")
    with torch.no_grad():
        back = torch.stack([p4m.transform(baseline(p4m.transform(image, g)[None])[0], p4m.inverse[g])
                            for g in range(8)]).double()
    assert torch.allclose(base.mean, back.mean(0), atol=1e-6)
    assert torch.allclose(base.std, back.std(0, unbiased=False), atol=1e-6)
    assert math.isclose(base.summary, float(back.std(0, unbiased=False).mean()), rel_tol=1e-5)
    tissue = torch.zeros(24, 24, dtype=torch.bool)
    tissue[:, :12] = True
    half = group_stability(baseline, image, tissue=tissue)
    assert math.isclose(half.summary, float(half.std[:, :12].mean()), rel_tol=1e-9)


def test_rotation_stability_disc_and_a_constant_model():
    class Constant(nn.Module):
        task = "segmentation"

        def forward(self, x):
            return torch.zeros(x.shape[0], 2, *x.shape[-2:])

    result = rotation_stability(ProbabilityMap(Constant()), torch.rand(3, 20, 20), n=8)
    r = torch.arange(20, dtype=torch.float64) - 9.5
    angles = torch.tensor(rotation_angles(8), dtype=torch.float64).deg2rad()[:, None, None]
    u = torch.cos(angles) * r[None, None, :] + torch.sin(angles) * r[None, :, None]  # where each pixel goes
    v = -torch.sin(angles) * r[None, None, :] + torch.cos(angles) * r[None, :, None]
    disc = ((u.abs() <= 9.5 + 1e-6) & (v.abs() <= 9.5 + 1e-6)).all(0)  # stays on the predicted grid
    assert torch.equal(result.valid, disc)
    assert result.summary < 1e-7  # bilinear resampling of a constant map: float32 rounding only
    assert torch.allclose(result.mean[disc], torch.full((int(disc.sum()),), 0.5, dtype=torch.float64), atol=1e-6)
    assert result.mean[~disc].isnan().all()
    single = rotation_stability(ProbabilityMap(TinySeg("z2").eval()), torch.rand(3, 20, 20), n=1)
    assert single.summary == 0.0  # the 0-degree rotation alone


def test_dense_classifier_maps_and_stability():
    model = create_model("p4m_densenet", growth=8, stem=1).eval()
    x = torch.rand(1, 3, 128, 128)
    maps = ProbabilityMap(model)(x)
    with torch.no_grad():
        for i in range(2):
            for j in range(2):
                p = torch.sigmoid(model(x[..., 32 * i:32 * i + 96, 32 * j:32 * j + 96]))[0, 0]
                block = maps[0, 32 + 32 * i:64 + 32 * i, 32 + 32 * j:64 + 32 * j]
                assert torch.allclose(block, p.expand(32, 32), atol=1e-5)
    assert maps[0, :32].isnan().all() and maps[0, 96:].isnan().all()
    eq = group_stability(ProbabilityMap(model), x[0])
    baseline = create_model("densenet", growth=2, stem=3).eval()
    base = group_stability(ProbabilityMap(baseline), x[0])
    assert eq.valid.sum() == 64 * 64 and eq.summary < 1e-6 and base.summary > 1e-5


def test_rotations_read_back_at_the_cell_centres():
    """A rotated copy is read back at the points the region's cell centres move to: under quarter turns the
    p4m model's cells agree exactly (a wrong direction would read other cells), the baseline's do not;
    at 0 degrees the mean is the cell map itself, and no 32 x 32 block is resampled."""
    model = create_model("p4m_densenet", growth=8, stem=1).eval()
    baseline = create_model("densenet", growth=2, stem=3).eval()
    x = torch.rand(3, 224, 224)  # 5 x 5 cells of 32 pixels from pixel 32
    quarter = rotation_stability(ProbabilityMap(model), x, angles=[0, 90, 180, 270])
    assert quarter.valid.sum() == 160 * 160 and quarter.summary < 1e-5
    assert rotation_stability(ProbabilityMap(baseline), x, angles=[0, 90, 180, 270]).summary > 1e-5
    identity = rotation_stability(ProbabilityMap(model), x, angles=[0])
    with torch.no_grad():
        cells = ProbabilityMap(model)(x[None])[0].double()
    assert torch.allclose(identity.mean[identity.valid], cells[identity.valid], atol=1e-6)
    tilted = rotation_stability(ProbabilityMap(model), x, angles=[0, 30])
    block = tilted.std[96:128, 96:128]  # the centre cell: one value, painted on its 32 x 32 pixels
    assert torch.allclose(block, block[0, 0].expand(32, 32)) and 0 < tilted.valid.sum() < 160 * 160


def test_stability_section_for_the_demo(tmp_path):
    models = {"p4m_tiny": TinySeg("p4m").eval(), "baseline_tiny": TinySeg("z2").eval()}
    for m in models.values():
        m.input_size = (24, 24)
    image = torch.rand(3, 24, 24)
    text = stability_section(models, image, tmp_path, rotations=4, synthetic=True)
    assert (tmp_path / "stability.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "stability.json").read_text())
    assert saved["synthetic"] is True and "SYNTHETIC DATA" in text
    rows = {r["model"]: r for r in saved["stability"]}
    assert rows["p4m_tiny"]["p4m_8_mean_std"] < 1e-6 < rows["baseline_tiny"]["p4m_8_mean_std"]
    eq = {r["model"]: r for r in saved["equivariance"]}
    assert eq["p4m_tiny"]["exact"] and not eq["baseline_tiny"]["exact"]
    assert "| p4m_tiny |" in text and "![stability](stability.png)" in text
    results = {n: [group_stability(ProbabilityMap(m), image)] for n, m in models.items()}
    fig = stability_figure(image, results, synthetic=True)
    assert "SYNTHETIC DATA" in fig._suptitle.get_text()


def test_figure_outlines_the_cleaned_tissue_mask_its_summary_averages_over():
    from matplotlib.contour import ContourSet
    from matplotlib.path import Path as MplPath

    from equipath.analysis.stability import image_tissue

    image = torch.full((3, 48, 48), 0.94)  # glass
    image[:, 6:42, 6:42] = torch.tensor([0.8, 0.45, 0.75])[:, None, None]  # pink tissue ...
    image[:, 20:28, 20:28] = 0.94  # ... with a hole of glass
    image[:, 1:3, 44:46] = torch.tensor([0.8, 0.45, 0.75])[:, None, None]  # and a speck
    tissue = image_tissue(image)
    assert tissue[24, 24] and not tissue[2, 45] and tissue[10, 10] and not tissue[0, 0]  # filled, cleaned
    predictor = ProbabilityMap(TinySeg("z2").eval())
    results = [rotation_stability(predictor, image, n=4, tissue=tissue), group_stability(predictor, image, tissue=tissue)]
    for r in results:
        assert torch.equal(r.tissue, tissue)
        assert math.isclose(r.summary, float(r.std[r.valid & tissue].mean()), rel_tol=1e-9)
    fig = stability_figure(image, {"baseline": results}, synthetic=True)
    outline = [c for c in fig.axes[0].get_children() if isinstance(c, ContourSet)]
    assert len(outline) == 1
    rows, cols = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")
    points = torch.stack([cols.flatten(), rows.flatten()], 1).numpy()  # (x, y) pixel centres
    inside = torch.zeros(48 * 48, dtype=torch.bool)
    for path in outline[0].get_paths():
        for polygon in path.to_polygons():
            inside ^= torch.from_numpy(MplPath(polygon).contains_points(points))
    assert torch.equal(inside.view(48, 48), tissue)  # the drawn outline encloses exactly the averaged mask
    maps = [im for ax in fig.axes for im in ax.images if im.get_array().ndim == 2]
    assert len(maps) == 4 and all(im.colorbar is not None for im in maps)  # a colour bar on every map
    assert {im.get_cmap().name for im in maps} <= {"viridis", "magma"}
