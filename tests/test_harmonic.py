"""Harmonic convolutions (seed 003): the transformation law F_m[R_t x](p) = exp(i m t) F_m[x](R_t^-1 p).

Quarter turns go through equipath.groups and hold to float precision; other angles use bilinear
rotation (equipath.data.rotation) and hold approximately (the filters are sampled on the pixel grid).
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from equipath.data.rotation import rotate
from equipath.groups import get_group
from equipath.nn.harmonic import (HarmonicAvgPool2d, HarmonicBatchNorm, HarmonicConv2d, HarmonicResBlock,
                                  MagnitudeReLU, as_complex, magnitude)
from equipath.testing import TOLERANCES, assert_equivariant

P4 = get_group("p4")


def quarter_turn(y: torch.Tensor, orders, r: int) -> torch.Tensor:
    """The law for ``r`` quarter turns: rotate every plane (group module), turn stream m's phase by m r pi/2."""
    y = P4.transform(y, r)
    t = torch.tensor([m * r * math.pi / 2 for m in orders], dtype=torch.float64)
    cos, sin = (f(t).to(y.dtype).view(1, 1, -1, 1, 1) for f in (torch.cos, torch.sin))
    re, im = y[:, :, :, 0], y[:, :, :, 1]
    return torch.stack([cos * re - sin * im, sin * re + cos * im], 3)


def smooth_disk_images(n: int, size: int, dtype=torch.float64) -> torch.Tensor:
    """Band-limited random images that vanish outside a centred disk (rotation brings in no corners)."""
    x = torch.randn(n * 3, 1, size, size, dtype=dtype)
    g = torch.arange(-9, 10, dtype=dtype)
    k = torch.exp(-g**2 / (2 * 3.0**2))
    k = k / k.sum()
    x = F.conv2d(F.conv2d(x, k.view(1, 1, 1, -1), padding=(0, 9)), k.view(1, 1, -1, 1), padding=(9, 0))
    c = (size - 1) / 2
    i, j = torch.meshgrid(torch.arange(size, dtype=dtype), torch.arange(size, dtype=dtype), indexing="ij")
    return x.view(n, 3, size, size) * (torch.hypot(i - c, j - c) < 0.4 * size)


def inner_disk(size: int, radius: float) -> torch.Tensor:
    c = (size - 1) / 2
    i, j = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return torch.hypot(i - c, j - c) < radius


def rotate_complex(y: torch.Tensor, t: float) -> torch.Tensor:
    """Spatially rotate a complex (B, C, M, H, W) map by t (bilinear), without touching phases."""
    B, C, M, H, W = y.shape
    re = rotate(y.real.reshape(B, C * M, H, W), t, "zeros").view(B, C, M, H, W)
    im = rotate(y.imag.reshape(B, C * M, H, W), t, "zeros").view(B, C, M, H, W)
    return torch.complex(re, im)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_order0_magnitude_invariant_under_quarter_turns(dtype):
    conv = HarmonicConv2d(3, 6, 5, in_orders=0, out_orders=0, padding=2).to(dtype).eval()
    x = torch.randn(2, 3, 13, 13, dtype=dtype)
    # |F_0| is a scalar field: rotating the input rotates the magnitude map, to float precision ...
    assert_equivariant(lambda t: magnitude(conv(t)).squeeze(2), x, "p4")
    # ... and its spatial mean is invariant
    assert_equivariant(lambda t: magnitude(conv(t)).mean((-2, -1)), x, "p4")


def test_order0_magnitude_under_arbitrary_angles_error_vs_angle(capsys):
    size, k, angles = 49, 5, (0, 15, 30, 45, 60, 75, 90, 135, 200)
    conv = HarmonicConv2d(3, 8, k, 0, 0, padding=k // 2).double()
    plain = nn.Conv2d(3, 8, k, padding=k // 2, bias=False).double()  # a generic filter, for contrast
    x = smooth_disk_images(4, size)
    inside = inner_disk(size, 0.4 * size - k)
    errors = {}
    with torch.no_grad():
        for name, f in (("harmonic", lambda t: magnitude(conv(t)).squeeze(2)), ("plain", lambda t: plain(t).abs())):
            y = f(x)
            for deg in angles:
                t = math.radians(deg)
                diff = (f(rotate(x, t, "zeros")) - rotate(y, t, "zeros")) * inside
                # relative RMS error over the inner disk (the maximum is ruled by bilinear interpolation)
                errors[name, deg] = float(diff.norm() / (rotate(y, t, "zeros") * inside).norm())
    with capsys.disabled():
        print("\norder-0 |F| under rotation: relative RMS error in the inner disk, harmonic vs a plain conv")
        for deg in angles:
            print(f"  {deg:4d} deg   harmonic {errors['harmonic', deg]:.2e}   plain {errors['plain', deg]:.2e}")
    for deg in (0, 90):
        assert errors["harmonic", deg] < 1e-6  # quarter turns: exact up to interpolation rounding
    for deg in (15, 30, 45, 60, 75, 135, 200):
        assert errors["harmonic", deg] < 0.03
        assert errors["plain", deg] > 5 * errors["harmonic", deg]


@pytest.mark.parametrize("m", [1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_order_m_phase_shifts_by_m_quarter_turns(m, dtype):
    conv = HarmonicConv2d(3, 4, 5, in_orders=0, out_orders=m, padding=2).to(dtype)
    x = torch.randn(2, 3, 11, 11, dtype=dtype)
    y = conv(x)
    for r in range(4):
        expected = quarter_turn(y, (m,), r)
        assert (conv(P4.transform(x, r)) - expected).abs().max() <= TOLERANCES[dtype] * y.abs().max()
    # the phase itself moves by m * 90 degrees where the magnitude is not tiny
    y1 = as_complex(conv(P4.transform(x, 1)))
    y0 = P4.transform(as_complex(y), 1)
    strong = y0.abs() > 0.1 * y0.abs().max()
    shift = torch.angle(y1[strong] * y0[strong].conj())
    error = torch.remainder(shift - m * math.pi / 2 + math.pi, 2 * math.pi) - math.pi  # wrapped to [-pi, pi)
    assert error.abs().max() < 1e-4


@pytest.mark.parametrize("m, k", [(0, 5), (1, 5), (2, 5), (3, 9)])
def test_order_m_phase_shifts_by_m_times_any_angle(m, k):
    # Sampling exp(i m phi) on the few taps of a small ring aliases high orders: order 3 needs a 9x9 filter.
    size = 49
    conv = HarmonicConv2d(3, 4, k, 0, m, padding=k // 2).double()
    x = smooth_disk_images(2, size)
    inside = inner_disk(size, 0.4 * size - k)
    with torch.no_grad():
        y = as_complex(conv(x))
        for deg in (10, 25, 45, 70, 120, 250):
            t = math.radians(deg)
            y_t = as_complex(conv(rotate(x, t, "zeros")))
            reference = rotate_complex(y, t)
            # magnitude-weighted mean phase difference per channel, wrapped to [-pi, pi)
            shift = torch.angle((y_t * reference.conj() * inside).sum((0, 2, 3, 4)))
            error = torch.remainder(shift - m * t + math.pi, 2 * math.pi) - math.pi
            assert error.abs().max() < 0.08, (m, deg, error)  # 4.6 degrees


def test_cross_order_streams_follow_the_law():
    orders_in, orders_out = (0, 1), (0, 2, 3)
    conv = HarmonicConv2d(2, 3, 3, orders_in, orders_out, padding=1).double()
    x = torch.randn(2, 2, 2, 2, 9, 9, dtype=torch.float64)
    y = conv(x)
    assert y.shape == (2, 3, 3, 2, 9, 9)
    for r in range(4):
        assert (conv(quarter_turn(x, orders_in, r)) - quarter_turn(y, orders_out, r)).abs().max() < 1e-12 * y.abs().max()


@pytest.mark.parametrize("training", [False, True])
def test_stack_of_every_layer_follows_the_law(training):
    orders = (0, 2)
    net = nn.Sequential(
        HarmonicConv2d(3, 4, 5, 0, orders, padding=2), HarmonicAvgPool2d(2), HarmonicBatchNorm(4, orders),
        MagnitudeReLU(4, orders), HarmonicResBlock(4, orders), HarmonicConv2d(4, 4, 3, orders, orders, padding=1),
    ).double()
    net.train(training)  # batch statistics are rotation invariant too
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    y = net(x)
    for r in range(4):
        assert (net(P4.transform(x, r)) - quarter_turn(y, orders, r)).abs().max() < 1e-11 * y.abs().max()


def test_batch_norm_centres_order_0_normalises_power_and_keeps_phases():
    bn = HarmonicBatchNorm(3, (0, 2))
    x = torch.randn(8, 3, 2, 2, 6, 6) * torch.tensor([0.1, 5.0]).view(1, 1, 2, 1, 1, 1) + 3.0
    y = bn(x)
    assert torch.allclose(y[:, :, 0].mean((0, 3, 4)), torch.zeros(3, 2), atol=1e-5)  # order 0: centred
    assert torch.allclose(y.square().sum(3).mean((0, 3, 4)), torch.ones(3, 2), atol=1e-3)  # unit power (eps aside)
    assert torch.allclose(torch.angle(as_complex(y)[:, :, 1]), torch.angle(as_complex(x)[:, :, 1]), atol=1e-5)
    assert bn.running_mean[:, 1].abs().max() == 0 and bn.running_mean[:, 0].abs().min() > 0.1
    bn.eval()
    scale = (bn.weight / (bn.running_power + bn.eps).sqrt())[..., None, None, None]
    assert torch.allclose(bn(x), (x - bn.running_mean[..., None, None]) * scale)


def test_batch_norm_plain_average_with_momentum_none():
    bn = HarmonicBatchNorm(2, 0, momentum=None)
    batches = [torch.randn(4, 2, 1, 2, 5, 5) + i for i in range(3)]
    for b in batches:
        bn(b)
    means = torch.stack([b.mean((0, 4, 5)) for b in batches]).mean(0)
    assert int(bn.num_batches_tracked) == 3 and torch.allclose(bn.running_mean, means, atol=1e-6)
    bn.reset_running_stats()
    assert int(bn.num_batches_tracked) == 0 and bn.running_mean.abs().max() == 0


def test_magnitude_relu_thresholds_magnitude_and_keeps_phase():
    act = MagnitudeReLU(1, 0)
    with torch.no_grad():
        act.bias.fill_(-1.0)
    z = torch.tensor([0.5 + 0j, 2 * math.e ** (1j * 0.7), -3j]).view(1, 1, 1, 3, 1)
    x = torch.stack([z.real, z.imag], 3).float()  # (1, 1, 1, 2, 3, 1)
    y = as_complex(act(x)).flatten()
    assert torch.allclose(y.abs(), torch.tensor([0.0, 1.0, 2.0]), atol=1e-6)
    assert torch.allclose(torch.angle(y[1:]), torch.angle(z.flatten()[1:].to(y.dtype)), atol=1e-6)


def test_residual_block_keeps_orders_and_shape():
    block = HarmonicResBlock(3, (0, 2), kernel_size=5)
    x = torch.randn(2, 3, 2, 2, 7, 7)
    assert block(x).shape == x.shape
    assert all(conv.in_orders == conv.out_orders == (0, 2) for conv in block.modules() if isinstance(conv, HarmonicConv2d))


def test_filter_of_order_k_has_the_angular_form():
    conv = HarmonicConv2d(1, 1, 7, 0, 3).double()
    w = conv.filter()  # (2, 2, 7, 7): [[re, -im], [im, re]]
    assert torch.equal(w[0, 0], w[1, 1]) and torch.equal(w[0, 1], -w[1, 0])
    complex_filter = torch.complex(w[0, 0], w[1, 0])
    # W(R_t q) = exp(i k t) W(q), so the filter image turned by 90 degrees, W(R_-90 p), is exp(-i 3 pi / 2) W(p)
    turned = P4.transform(complex_filter, 1)
    assert torch.allclose(turned, complex_filter * complex(math.cos(-1.5 * math.pi), math.sin(-1.5 * math.pi)), atol=1e-7)
    assert complex_filter[3, 3] == 0  # no centre tap for k != 0


def test_bad_inputs_raise_value_errors():
    with pytest.raises(ValueError, match="odd"):
        HarmonicConv2d(1, 1, 4)
    with pytest.raises(ValueError, match="distinct ints"):
        HarmonicConv2d(1, 1, 3, in_orders=(0, 0))
    conv = HarmonicConv2d(2, 2, 3, (0, 2), 0)
    with pytest.raises(ValueError, match=r"\(B, 2, 2, 2, H, W\).*\(1, 2, 1, 2, 5, 5\)"):
        conv(torch.randn(1, 2, 1, 2, 5, 5))
    with pytest.raises(ValueError, match="expected a harmonic feature map"):
        conv(torch.randn(1, 2, 5, 5))  # planar input is only an order-0 stream
    with pytest.raises(ValueError, match="expected a harmonic feature map"):
        HarmonicBatchNorm(2, 0)(torch.randn(1, 3, 1, 2, 4, 4))


def test_rotate_matches_the_group_module_at_quarter_turns():
    x = torch.rand(2, 3, 10, 10)
    for r in range(4):
        assert torch.allclose(rotate(x, r * math.pi / 2), P4.transform(x, r), atol=1e-5)
    with pytest.raises(ValueError, match=r"\(B, C, H, H\)"):
        rotate(torch.rand(3, 10, 10), 0.3)


def test_fused_pooling_equals_convolution_then_average_pooling():
    x = torch.randn(2, 3, 2, 2, 12, 12, dtype=torch.float64)
    fused = HarmonicConv2d(3, 4, 3, (0, 2), (0, 1), padding=1, pool=2).double()
    plain = HarmonicConv2d(3, 4, 3, (0, 2), (0, 1), padding=1).double()
    plain.load_state_dict(fused.state_dict())
    expected = HarmonicAvgPool2d(2)(plain(x))
    assert fused(x).shape == expected.shape == (2, 4, 2, 2, 6, 6)
    assert torch.allclose(fused(x), expected, atol=1e-13)
    image = torch.randn(2, 3, 12, 12, dtype=torch.float64)  # planar order-0 input, 5x5 -> 6x6 fused filter
    lift = HarmonicConv2d(3, 4, 5, 0, 2, padding=2, pool=2).double()
    assert lift(image).shape == (2, 4, 1, 2, 6, 6)
    for r in range(4):
        assert (lift(P4.transform(image, r)) - quarter_turn(lift(image), (2,), r)).abs().max() < 1e-12
