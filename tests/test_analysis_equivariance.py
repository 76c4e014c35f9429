"""Layer-by-layer equivariance report: exact models are exact everywhere, broken blocks are pinpointed."""

import math

import pytest
import torch
from torch import nn

from equipath.analysis import layer_report
from equipath.analysis.equivariance import equivariance_figure
from equipath.models import create_model
from equipath.nn import GroupBatchNorm, GroupConv2d, GroupPool, LiftingConv2d, ProjectionConv2d
from equipath.testing import equivariance_error



class PlanarMix(nn.Module):
    """A deliberately non-equivariant block: a plain conv on the planar view of a group feature map."""

    def __init__(self, channels: int, order: int):
        super().__init__()
        self.conv = nn.Conv2d(channels * order, channels * order, 3, padding=1)

    def forward(self, x):
        B, C, G, H, W = x.shape
        return self.conv(x.flatten(1, 2)).view(B, C, G, H, W)


def _net(broken: bool) -> nn.Sequential:
    return nn.Sequential(
        LiftingConv2d(3, 4, 3, "p4m"), GroupBatchNorm(4, "p4m"),
        PlanarMix(4, 8) if broken else GroupConv2d(4, 4, 3, "p4m", padding=1),
        GroupConv2d(4, 4, 3, "p4m"), ProjectionConv2d(4, 2, 1, "p4m"),
    ).eval()


def test_exact_model_is_exact_in_every_layer():
    report = layer_report(_net(False), torch.rand(2, 3, 13, 13), "p4m")
    assert report.exact and report.first_broken() is None and report.culprits() == []
    assert [r.name for r in report.layers] == ["0", "1", "2", "3", "4", "(model)"]
    for row in report.layers:
        assert len(row.errors) == 8 and row.max_error < 1e-12
        assert row.local is None or max(row.local) < 1e-12
    assert report.layers[0].kind == "group" and report.model.kind == "planar"


def test_broken_block_is_pinpointed_and_errors_match_the_shipped_checker():
    net = _net(True)
    x = torch.rand(2, 3, 13, 13)
    report = layer_report(net, x, "p4m")
    assert not report.exact
    assert report.first_broken().name == "2.conv"  # hooks fire on return: the inner conv before its block
    assert [r.name for r in report.culprits()] == ["2.conv"]  # the plain conv inside the block, by itself
    by_name = {r.name: r for r in report.layers}
    assert by_name["0"].max_error < 1e-12 and by_name["1"].max_error < 1e-12
    assert by_name["3"].max_error > 1e-3 and by_name["3"].max_local < 1e-12  # inherits the error, is innocent
    # the whole-model row is exactly the definition of equipath.testing.equivariance_error (float64)
    expected = equivariance_error(net.double(), x.double(), "p4m")
    assert torch.allclose(torch.tensor(report.model.errors, dtype=torch.float64), expected, rtol=1e-9, atol=1e-15)
    assert report.model.errors[0] == 0.0  # identity element
    assert math.isclose(report.model.mean_error, float(expected.mean()), rel_tol=1e-9)
    assert math.isclose(report.model.max_error, float(expected.max()), rel_tol=1e-9)


def test_asymmetric_stride_and_odd_crop_are_flagged():
    strided = nn.Sequential(LiftingConv2d(3, 2, 3, "p4"), GroupConv2d(2, 2, 3, "p4", stride=2), GroupPool("p4")).eval()
    exact = layer_report(strided, torch.rand(1, 3, 11, 11), "p4")     # 11 -> 9 -> 4: (9 - 3) % 2 == 0
    broken = layer_report(strided, torch.rand(1, 3, 12, 12), "p4")    # 12 -> 10 -> 4: (10 - 3) % 2 == 1
    assert exact.exact and not broken.exact
    assert [r.name for r in broken.culprits()] == ["1"]

    class Crop(nn.Module):
        def forward(self, x):
            return x[..., 1:, :]  # drops one row: not square any more

    report = layer_report(nn.Sequential(LiftingConv2d(3, 2, 3, "p4"), Crop()).eval(), torch.rand(1, 3, 9, 9), "p4")
    assert math.isinf(report.first_broken().max_error) and report.first_broken().name == "1"
    assert report.rows()[1]["max_error"] is None  # JSON-ready: no infinity
    assert "shape mismatch" in report.to_markdown()


def test_registered_models_equivariant_vs_baseline():
    x = torch.rand(1, 3, 96, 96)
    p4m = layer_report(create_model("p4m_densenet", growth=8, stem=1), x, local=False)
    base = layer_report(create_model("densenet", growth=2, stem=2), x, "p4m")
    assert p4m.group == "p4m" and p4m.exact and p4m.model.max_error < 1e-12
    assert not base.exact and base.first_broken().name == "stem" and base.model.max_error > 1e-4
    assert "stem" in [r.name for r in base.culprits()]
    # p4 model under p4m: its 4-orientation maps admit no mirror, so only planar rows are measured
    p4 = layer_report(create_model("p4_densenet", growth=4, stem=1), x, "p4m", local=False)
    assert p4.layers[0].kind == "other" and math.isnan(p4.layers[0].max_error)
    assert p4.first_broken().kind in ("planar", "invariant") and not p4.exact
    fig = equivariance_figure(base, "densenet")
    assert len(fig.axes) == 1


def test_input_checks():
    with pytest.raises(ValueError, match="square"):
        layer_report(_net(False), torch.rand(1, 3, 9, 11), "p4m")
    with pytest.raises(ValueError, match="group"):
        layer_report(nn.Conv2d(3, 3, 3), torch.rand(1, 3, 9, 9))
