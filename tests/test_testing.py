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
