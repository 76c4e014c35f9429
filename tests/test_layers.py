"""Every layer x every group x (float32, float64), checked over every group element."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from equipath.groups import GROUP_NAMES, get_group
from equipath.nn import (GroupAvgPool2d, GroupBatchNorm, GroupConv2d, GroupConvTranspose2d, GroupMaxPool2d,
                         GroupPool, GroupUpsample, IsotropicConv2d, LiftingConv2d, ProjectionConv2d, fold_model)
from equipath.testing import TOLERANCES, equivariance_error

DTYPES = [torch.float32, torch.float64]

# (name, build(group), input kind, input size); every size here has a symmetric sampling grid.
LAYERS = [
    ("lifting", lambda G: LiftingConv2d(3, 4, 3, G), "planar", 11),
    ("lifting_s2_pad", lambda G: LiftingConv2d(3, 4, 3, G, stride=2, padding=1), "planar", 13),
    ("lifting_k4_even", lambda G: LiftingConv2d(3, 4, 4, G), "planar", 10),
    ("group", lambda G: GroupConv2d(3, 4, 3, G), "group", 9),
    ("group_s2", lambda G: GroupConv2d(3, 4, 3, G, stride=2), "group", 11),
    ("group_dil2", lambda G: GroupConv2d(3, 4, 3, G, padding=2, dilation=2), "group", 9),
    ("projection", lambda G: ProjectionConv2d(3, 5, 3, G), "group", 9),
    ("projection_1x1", lambda G: ProjectionConv2d(3, 2, 1, G), "group", 6),
    ("transpose_s2_k2", lambda G: GroupConvTranspose2d(3, 4, 2, G, stride=2), "group", 5),
    ("transpose_s2_k3_pad", lambda G: GroupConvTranspose2d(3, 4, 3, G, stride=2, padding=1), "group", 6),
    ("isotropic", lambda G: IsotropicConv2d(3, 4, 5, padding=2), "planar", 10),
    ("isotropic_s2", lambda G: IsotropicConv2d(3, 4, 3, stride=2), "planar", 11),
    ("batchnorm", lambda G: GroupBatchNorm(3, G), "group", 7),
    ("pool_mean", lambda G: GroupPool(G, "mean"), "group", 7),
    ("pool_max", lambda G: GroupPool(G, "max"), "group", 7),
    ("maxpool2", lambda G: GroupMaxPool2d(2, G), "group", 8),
    ("maxpool3_s2", lambda G: GroupMaxPool2d(3, G, stride=2), "group", 9),
    ("avgpool2", lambda G: GroupAvgPool2d(2, G), "group", 8),
    ("upsample_nearest", lambda G: GroupUpsample(G, 2, "nearest"), "group", 5),
    ("upsample_bilinear", lambda G: GroupUpsample(G, 2, "bilinear"), "group", 5),
]
CONVS = [entry for entry in LAYERS if entry[0].startswith(("lifting", "group", "projection", "transpose", "iso"))]


def _input(group, kind, size, dtype, channels=3, batch=2):
    G = get_group(group)
    shape = (batch, channels, size, size) if kind == "planar" else (batch, channels, G.order, size, size)
    return torch.randn(shape, dtype=dtype)


def _trained_batchnorm(layer, group, size, dtype):
    """Give a batch-norm non-trivial running statistics and affine parameters, so eval mode is tested."""
    if isinstance(layer, GroupBatchNorm):
        layer.train()
        for _ in range(3):
            layer(_input(group, "group", size, dtype, channels=layer.num_features) * 3 + 1)
        with torch.no_grad():
            layer.weight.uniform_(0.5, 2.0)
            layer.bias.uniform_(-1, 1)
    return layer


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("group", GROUP_NAMES)
@pytest.mark.parametrize("name,build,kind,size", LAYERS, ids=[entry[0] for entry in LAYERS])
def test_layer_equivariant(name, build, kind, size, group, dtype):
    layer = _trained_batchnorm(build(group).to(dtype), group, size, dtype).eval()
    x = _input(group, kind, size, dtype)
    errors = equivariance_error(layer, x, group)
    assert errors.shape == (get_group(group).order,)
    assert errors.max() <= TOLERANCES[dtype], errors


@pytest.mark.parametrize("group", ["p4", "p4m"])
def test_batchnorm_train_mode_equivariant(group):
    bn = GroupBatchNorm(3, group).double().train()
    assert equivariance_error(bn, _input(group, "group", 7, torch.float64), group).max() <= 1e-12


def _reference_transform(psi: np.ndarray, r: int, m: int) -> np.ndarray:
    """T_g psi for g = (r, m) from integer coordinate matrices, independent of torch.rot90 / flip:
    (T_g psi)(u) = psi(M_flip^m M_rot^r u) with u = (row, col) offsets from the kernel centre."""
    k = psi.shape[-1]
    rot = np.array([[0, 1], [-1, 0]])
    flip = np.array([[1, 0], [0, -1]])
    M = np.linalg.matrix_power(flip, m) @ np.linalg.matrix_power(rot, r)
    out = np.empty_like(psi)
    c = (k - 1) / 2
    for i in range(k):
        for j in range(k):
            si, sj = M @ np.array([i - c, j - c])
            out[..., i, j] = psi[..., int(round(si + c)), int(round(sj + c))]
    return out


@pytest.mark.parametrize("group", GROUP_NAMES)
def test_lifting_matches_eq2_reference(group):
    """[f * psi](g, x) = sum_y sum_k f_k(y) psi_k(g^-1 (y - x)): correlate with each transformed filter."""
    G = get_group(group)
    layer = LiftingConv2d(2, 3, 3, G, bias=False).double()
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    out = layer(x)  # (B, 3, |G|, 6, 6)
    patches = F.unfold(x, 3)  # (B, 2 * 9, 36): every 3x3 window y - x
    psi = layer.weight.detach().numpy()
    for g, (r, m) in enumerate(G.elements):
        filt = torch.from_numpy(_reference_transform(psi, r, m)).reshape(3, -1)
        expected = torch.einsum("ok,bkn->bon", filt, patches).view(2, 3, 6, 6)
        torch.testing.assert_close(out[:, :, g], expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("group", GROUP_NAMES)
@pytest.mark.parametrize("name,build,kind,size", CONVS, ids=[entry[0] for entry in CONVS])
def test_fold_equals_layer(name, build, kind, size, group):
    layer = build(group).eval()
    with torch.no_grad():
        if layer.bias is not None:
            layer.bias.normal_()
    folded = layer.fold()
    assert type(folded) in (nn.Conv2d, nn.ConvTranspose2d)
    x = _input(group, kind, size, torch.float32)
    y = layer(x)
    planar_in = x.flatten(1, 2) if x.dim() == 5 else x
    y_folded = folded(planar_in)
    torch.testing.assert_close(y_folded, y.flatten(1, 2) if y.dim() == 5 else y, rtol=0, atol=1e-6)


def _stack(group):
    return nn.Sequential(
        LiftingConv2d(3, 4, 3, group), GroupConv2d(4, 4, 3, group), GroupBatchNorm(4, group), nn.ReLU(),
        GroupConv2d(4, 6, 3, group, stride=2), ProjectionConv2d(6, 2, 1, group),
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("group", GROUP_NAMES)
def test_stack_is_planar_equivariant(group, dtype):
    net = _stack(group).to(dtype)
    _trained_batchnorm(net[2], group, 9, dtype)
    net.eval()
    x = _input(group, "planar", 17, dtype)  # 17 -> 15 -> 13 -> 6 (13 - 3 even: symmetric stride-2 grid)
    assert net(x).shape == (2, 2, 6, 6)
    assert equivariance_error(net, x, group).max() <= TOLERANCES[dtype]
    folded = fold_model(net)
    torch.testing.assert_close(folded(x), net(x), rtol=0, atol=1e-6 if dtype == torch.float32 else 1e-12)


# Sizes at which exactness breaks: the sampling grid is no longer symmetric under rot90 / flip.
BREAKING = [
    ("stride 2 with (H - k) odd", lambda G: GroupConv2d(2, 2, 3, G, stride=2), 10),
    ("max pool 2x2 on odd size", lambda G: GroupMaxPool2d(2, G), 7),
    ("transposed with output_padding", lambda G: GroupConvTranspose2d(2, 2, 3, G, stride=2, output_padding=1), 5),
]


@pytest.mark.parametrize("why,build,size", BREAKING, ids=[b[0] for b in BREAKING])
def test_documented_sizes_break_exactness(why, build, size):
    """Documents the rule in equipath.nn.conv: exact only on symmetric grids; these are not."""
    layer = build("p4").double().eval()
    x = _input("p4", "group", size, torch.float64, channels=2)
    errors = equivariance_error(layer, x, "p4")
    assert errors[0] == 0  # the identity is always exact
    assert errors.max() > 1e-3, f"{why} unexpectedly exact"


def test_eval_cache_follows_weight_updates():
    layer = GroupConv2d(2, 3, 3, "p4m").eval()
    x = _input("p4m", "group", 7, torch.float32, channels=2)
    with torch.no_grad():
        first = layer(x)
        assert layer._cache is not None
        assert layer.filter() is layer.filter()  # built once while nothing changes
        layer.weight.mul_(2.0)  # an in-place update, as an optimizer step does
        torch.testing.assert_close(layer(x), 2 * first - layer.bias.view(1, -1, 1, 1, 1))
    layer.train()
    with torch.no_grad():
        layer(x)
    assert layer._cache is None
    assert "_index" in dict(layer.named_buffers()) and "_index" not in layer.state_dict()


def test_gradients_flow_to_weights():
    layer = LiftingConv2d(3, 2, 3, "p4m")
    layer(torch.randn(1, 3, 7, 7)).square().sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("layer,bad,expected", [
    (LiftingConv2d(3, 4, 3, "p4"), (2, 3, 4, 9, 9), r"expected input of shape \(B, 3, H, W\), got \(2, 3, 4, 9, 9\)"),
    (LiftingConv2d(3, 4, 3, "p4"), (2, 5, 9, 9), r"\(B, 3, H, W\), got \(2, 5, 9, 9\)"),
    (GroupConv2d(3, 4, 3, "p4m"), (2, 3, 4, 9, 9), r"\(B, 3, 8, H, W\), got \(2, 3, 4, 9, 9\)"),
    (GroupConv2d(3, 4, 3, "p4m"), (2, 3, 9, 9), r"\(B, 3, 8, H, W\), got \(2, 3, 9, 9\)"),
    (ProjectionConv2d(3, 4, 3, "p4"), (2, 2, 4, 9, 9), r"\(B, 3, 4, H, W\), got \(2, 2, 4, 9, 9\)"),
    (GroupConvTranspose2d(3, 4, 3, "p4"), (2, 3, 8, 9, 9), r"\(B, 3, 4, H, W\)"),
    (GroupBatchNorm(3, "p4"), (2, 3, 8, 9, 9), r"\(B, 3, 4, H, W\), got \(2, 3, 8, 9, 9\)"),
    (IsotropicConv2d(3, 4, 3), (2, 4, 9, 9), r"\(B, 3, H, W\), got \(2, 4, 9, 9\)"),
    (GroupPool("p4m"), (2, 3, 4, 9, 9), r"\(B, C, 8, H, W\), got \(2, 3, 4, 9, 9\)"),
    (GroupMaxPool2d(2, "p4"), (2, 3, 9, 9), r"\(B, C, 4, H, W\), got \(2, 3, 9, 9\)"),
    (GroupUpsample("p4"), (2, 3, 9, 9), r"\(B, C, 4, H, W\)"),
])
def test_bad_input_shapes_raise(layer, bad, expected):
    with pytest.raises(ValueError, match=expected):
        layer(torch.randn(bad))


def test_isotropic_kernel_is_radial():
    conv = IsotropicConv2d(1, 1, 5)
    k = conv.filter()[0, 0]
    assert conv.weight.shape == (1, 1, 6)  # squared radii 0, 1, 2, 4, 5, 8
    for g in range(8):
        assert torch.equal(get_group("p4m").transform(k, g), k)
    assert k[2, 3] == k[3, 2] == k[1, 2] and k[0, 1] == k[1, 4]


def test_parameter_shapes():
    assert LiftingConv2d(3, 4, 3, "p4m").weight.shape == (4, 3, 3, 3)
    assert GroupConv2d(3, 4, 3, "p4m").weight.shape == (4, 3, 8, 3, 3)
    assert ProjectionConv2d(3, 4, 3, "p4m").weight.shape == (4, 3, 3, 3)
    assert GroupConvTranspose2d(3, 4, 3, "p4").weight.shape == (3, 4, 4, 3, 3)
