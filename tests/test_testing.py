import pytest
import torch
from torch import nn

from equipath.nn import GroupPool, LiftingConv2d
from equipath.testing import assert_equivariant, equivariance_error


def test_plain_conv_is_caught():
    conv = nn.Conv2d(3, 4, 3).double()
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    errors = equivariance_error(conv, x, "p4m")
    assert errors[0] == 0 and errors[1:].min() > 1e-3
    with pytest.raises(AssertionError, match="not p4m-equivariant"):
        assert_equivariant(conv, x, "p4m")


def test_invariant_output_and_explicit_kind():
    net = nn.Sequential(LiftingConv2d(3, 4, 3, "p4m"), GroupPool("p4m"), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    x = torch.randn(2, 3, 9, 9)
    assert_equivariant(net.eval(), x, "p4m")  # (B, 4) output: checked for invariance
    lifted = LiftingConv2d(3, 4, 3, "p4")
    with pytest.raises(AssertionError):  # a lifted map is equivariant, not invariant
        assert_equivariant(lifted, x, "p4", output="invariant")


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="expected an input of shape"):
        equivariance_error(nn.Identity(), torch.randn(3, 9), "p4")
    with pytest.raises(ValueError, match="output must be"):
        equivariance_error(nn.Identity(), torch.randn(1, 3, 9, 9), "p4", output="vector")


@pytest.mark.parametrize("group", ["p4", "p4m"])
def test_z2_group_map_is_planar_equivariant_not_invariant(group):
    """A z2 lifting layer outputs (B, C, 1, H, W); a 1x1 one commutes with every rotation and mirror, so
    its error is float rounding (the old dispatcher treated it as invariant and reported ~1.6)."""
    torch.manual_seed(0)
    layer = LiftingConv2d(3, 4, 1, "z2").double()
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    assert layer(x).shape == (2, 4, 1, 9, 9)
    assert equivariance_error(layer, x, group).max() < 1e-12
    with pytest.raises(AssertionError):  # invariance is still refused when asked for
        assert_equivariant(layer, x, group, output="invariant")
    # a 3x3 z2 kernel is not rotation-equivariant: the planar action sees it
    assert equivariance_error(LiftingConv2d(3, 4, 3, "z2").double(), x, group)[1:].min() > 1e-3


def test_one_dispatcher_for_testing_and_the_analyses():
    import equipath.analysis.equivariance as report_module
    import equipath.analysis.tta as tta_module
    from equipath import testing
    from equipath.groups import get_group

    assert report_module.output_kind is testing.output_kind and tta_module.act is testing.act
    p4m = get_group("p4m")
    kinds = [testing.output_kind(p4m, torch.zeros(shape)) for shape in
             [(1, 2, 5, 5), (1, 2, 1, 5, 5), (1, 2, 8, 5, 5), (1, 2, 4, 5, 5), (1, 2)]]
    assert kinds == ["planar", "planar", "group", "other", "invariant"]
