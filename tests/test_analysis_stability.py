"""Stability maps: exact under the group for an equivariant model, not for a baseline; the rotation
machinery, the probability maps and the report section check their numbers."""

import json
import math

import pytest
import torch
from torch import nn

from equipath.analysis import ProbabilityMap, group_stability, rotate, rotation_stability, stability_section
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
    assert torch.allclose(rotate(x, 90), p4.transform(x, 1), atol=1e-5)
    assert torch.allclose(rotate(x, -90), p4.transform(x, 3), atol=1e-5)
    assert torch.allclose(rotate(x, 0), x, atol=1e-6)
    assert rotation_angles(32)[:3] == [0.0, 2.8125, 5.625] and max(rotation_angles(32)) < 90
    with pytest.raises(ValueError, match="square"):
        rotate(torch.rand(1, 3, 8, 9), 10)


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
    disc = (r[:, None] ** 2 + r[None, :] ** 2) <= 81
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
    base = group_stability(ProbabilityMap(create_model("densenet", growth=2, stem=3).eval()), x[0])
    assert eq.valid.sum() == 64 * 64 and eq.summary < 1e-6 and base.summary > 1e-5


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
