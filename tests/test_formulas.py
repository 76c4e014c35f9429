"""The formulas themselves, beside the equivariance tests (which a wrong but still equivariant formula passes).

Each reference here is computed from the definition with loops and explicit index math, in numpy, never
through the layer's own gather, so a bug shared by the layer and its equivariance test cannot cancel:

- group batch-norm: one mean and variance per channel over (B, |G|, H, W) (seed 000), not per (channel,
  orientation) (which is equivariant too, hence invisible to the equivariance tests);
- ``GroupPool``: the mean and the max over orientations (both invariant, so a swap is invisible too);
- the harmonic filter ``W(r, phi) = R(r) exp(i (k phi + beta))`` and the complex cross-correlation;
- seed 000 eq. 3 (``GroupConv2d``) and seed 001 eq. 3 (``ProjectionConv2d``).
"""

import math

import numpy as np
import pytest
import torch

from equipath.groups import get_group
from equipath.nn import GroupBatchNorm, GroupConv2d, GroupPool, ProjectionConv2d
from equipath.nn.harmonic import HarmonicConv2d


# ----------------------------------------------------------------------------- the point action of g = (r, m)
def _matrix(r: int, m: int) -> np.ndarray:
    """``M_g`` acting on centred (row, column) offsets with ``(T_g f)(p) = f(M_g^-1 p)``: a mirror negates the
    column (``flip(-1)``), a quarter turn maps (a, b) -> (-b, a) (``rot90`` from the first spatial axis to
    the second); ``T_g`` mirrors first, then turns ``r`` times."""
    R = np.array([[0, -1], [1, 0]])
    Fm = np.array([[1, 0], [0, -1]])
    return np.linalg.matrix_power(R, r) @ np.linalg.matrix_power(Fm, m)


def _element(group, M: np.ndarray) -> int:
    """The index of the element whose matrix is ``M``."""
    return next(i for i, (r, m) in enumerate(group.elements) if np.array_equal(_matrix(r, m), M))


def _apply(M: np.ndarray, a: int, b: int) -> tuple[int, int]:
    p = M @ np.array([a, b])
    return int(p[0]), int(p[1])


@pytest.mark.parametrize("group", ["p4", "p4m"])
def test_point_action_matches_the_group_module(group):
    """The matrices above are the convention of ``equipath.groups`` (checked on an asymmetric image)."""
    G = get_group(group)
    image = np.random.default_rng(0).normal(size=(5, 5))
    for g, (r, m) in enumerate(G.elements):
        Minv = np.linalg.inv(_matrix(r, m)).round().astype(int)
        expected = np.empty_like(image)
        for i in range(5):
            for j in range(5):
                si, sj = _apply(Minv, i - 2, j - 2)
                expected[i, j] = image[si + 2, sj + 2]
        np.testing.assert_array_equal(G.transform(torch.from_numpy(image), g).numpy(), expected)
    # and the composition: the matrix of a o b is M_a M_b
    for a in range(G.order):
        for b in range(G.order):
            Ma, Mb = _matrix(*G.elements[a]), _matrix(*G.elements[b])
            assert G.compose(a, b) == _element(G, Ma @ Mb)


# ----------------------------------------------------------------------------------------- group batch-norm
@pytest.mark.parametrize("group", ["p4", "p4m"])
def test_group_batchnorm_statistics_per_channel_over_batch_orientations_and_space(group):
    G = get_group(group)
    bn = GroupBatchNorm(3, G, momentum=0.5).double().train()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.5, -0.5, 2.0]))
        bn.bias.copy_(torch.tensor([0.1, 0.2, -0.3]))
    rng = np.random.default_rng(1)
    # each orientation plane gets its own offset and scale: per-(channel, orientation) moments would differ
    x = rng.normal(size=(4, 3, G.order, 5, 5)) * rng.uniform(0.5, 3, size=(1, 3, G.order, 1, 1)) \
        + rng.normal(size=(1, 3, G.order, 1, 1)) * 4
    out = bn(torch.from_numpy(x)).detach().numpy()
    n = 4 * G.order * 5 * 5
    expected = np.empty_like(x)
    means, variances = [], []
    for c in range(3):
        values = x[:, c].ravel()
        mean = sum(values) / n
        var = sum((v - mean) ** 2 for v in values) / n
        means.append(mean)
        variances.append(var * n / (n - 1))
        expected[:, c] = (x[:, c] - mean) / math.sqrt(var + bn.eps) * bn.weight[c].item() + bn.bias[c].item()
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-10)
    assert tuple(bn.running_mean.shape) == (3,)
    np.testing.assert_allclose(bn.running_mean.numpy(), 0.5 * np.array(means), atol=1e-12)
    np.testing.assert_allclose(bn.running_var.numpy(), 0.5 + 0.5 * np.array(variances), atol=1e-12)
    # eval mode uses the running moments, again per channel
    bn.eval()
    out = bn(torch.from_numpy(x)).detach().numpy()
    for c in range(3):
        ref = (x[:, c] - bn.running_mean[c].item()) / math.sqrt(bn.running_var[c].item() + bn.eps)
        np.testing.assert_allclose(out[:, c], ref * bn.weight[c].item() + bn.bias[c].item(), atol=1e-10)


# ------------------------------------------------------------------------------------------------ GroupPool
@pytest.mark.parametrize("mode", ["mean", "max"])
def test_group_pool_against_numpy(mode):
    x = np.random.default_rng(2).normal(size=(2, 3, 8, 4, 4))
    out = GroupPool("p4m", mode)(torch.from_numpy(x)).numpy()
    expected = np.empty((2, 3, 4, 4))
    for idx in np.ndindex(2, 3, 4, 4):
        b, c, i, j = idx
        column = [x[b, c, h, i, j] for h in range(8)]
        expected[idx] = sum(column) / 8 if mode == "mean" else max(column)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------- harmonic convention
@pytest.mark.parametrize("m_in, m_out", [(0, 1), (0, 2), (1, 3), (0, -1), (2, 0)])
def test_harmonic_filter_is_radial_profile_times_exp_i_k_phi_plus_beta(m_in, m_out):
    """``W(r, phi) = R(r) exp(i (k phi + beta))``, ``k = m_out - m_in``, with ``phi = atan2(-di, dj)`` (x
    right, y up) and ``R(r) = sum_n a_n exp(-(r - n)^2 / (2 * 0.5^2))`` on the disk ``r <= k / 2``; the
    output is the complex cross-correlation ``y(p) = sum_u W(u) F(p + u)``."""
    ks = 5
    conv = HarmonicConv2d(1, 1, ks, in_orders=m_in, out_orders=m_out, padding=0).double()
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([0.3, -0.8, 1.1]).view(1, 1, 1, 1, 3))
        conv.phase.fill_(0.7)
    a, beta, k, c = [0.3, -0.8, 1.1], 0.7, m_out - m_in, ks // 2
    W = np.zeros((ks, ks), complex)
    for i in range(ks):
        for j in range(ks):
            di, dj = i - c, j - c
            r, phi = math.hypot(dj, -di), math.atan2(-di, dj)
            if r > ks / 2 or (k != 0 and r == 0):
                continue
            radial = sum(a_n * math.exp(-(r - n) ** 2 / (2 * 0.5**2)) for n, a_n in enumerate(a))
            W[i, j] = radial * complex(math.cos(k * phi + beta), math.sin(k * phi + beta))
    rng = np.random.default_rng(3)
    F_in = rng.normal(size=(7, 7)) + 1j * rng.normal(size=(7, 7))
    expected = np.array([[sum(W[u, v] * F_in[p + u, q + v] for u in range(ks) for v in range(ks))
                          for q in range(3)] for p in range(3)])
    x = torch.from_numpy(np.stack([F_in.real, F_in.imag])).view(1, 1, 1, 2, 7, 7)
    y = conv(x)[0, 0, 0].detach().numpy()
    # the layer keeps its angular basis in float32 (~1e-7 relative); a wrong sign or phase is O(1)
    np.testing.assert_allclose(y[0] + 1j * y[1], expected, rtol=0, atol=1e-5 * np.abs(expected).max())


# ------------------------------------------------------------------------------ seed 000 eq. 3, seed 001 eq. 3
@pytest.mark.parametrize("group", ["z2", "p4", "p4m"])
def test_group_conv_is_seed_000_eq_3(group):
    """``[f * psi](g, x) = sum_h sum_c sum_u f_c(h, x + u) psi_c(g^-1 h, M_g^-1 u)`` for offsets ``u`` of the
    3x3 window (seed 000 eq. 3 with the translation written out)."""
    G = get_group(group)
    conv = GroupConv2d(2, 2, 3, G).double()
    with torch.no_grad():
        conv.bias.copy_(torch.tensor([0.25, -1.0]))
    f = np.random.default_rng(4).normal(size=(1, 2, G.order, 5, 5))
    psi = conv.weight.detach().numpy()  # (C_out, C_in, |G|, 3, 3)
    bias = conv.bias.detach().numpy()
    out = conv(torch.from_numpy(f)).detach().numpy()
    expected = np.zeros((1, 2, G.order, 3, 3))
    for g, (r, m) in enumerate(G.elements):
        Mg = _matrix(r, m)
        Mg_inv = np.linalg.inv(Mg).round().astype(int)
        for h in range(G.order):
            gh = _element(G, Mg_inv @ _matrix(*G.elements[h]))  # g^-1 h
            for o, c, i, j, du, dv in np.ndindex(2, 2, 3, 3, 3, 3):
                su, sv = _apply(Mg_inv, du - 1, dv - 1)
                expected[0, o, g, i, j] += f[0, c, h, i + du, j + dv] * psi[o, c, gh, su + 1, sv + 1]
        expected[0, :, g] += bias[:, None, None]
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("group", ["p4", "p4m"])
def test_projection_conv_is_seed_001_eq_3(group):
    """``[f * psi](x) = sum_h sum_c sum_u f_c(h, x + u) psi_c(M_h^-1 u)``: one planar filter per (output,
    input) pair, moved by each orientation ``h`` it meets (seed 001 eq. 3)."""
    G = get_group(group)
    conv = ProjectionConv2d(2, 3, 3, G).double()
    with torch.no_grad():
        conv.bias.copy_(torch.tensor([0.5, 0.0, -2.0]))
    f = np.random.default_rng(5).normal(size=(1, 2, G.order, 6, 6))
    psi = conv.weight.detach().numpy()  # (C_out, C_in, 3, 3)
    out = conv(torch.from_numpy(f)).detach().numpy()
    expected = np.zeros((1, 3, 4, 4))
    for h, (r, m) in enumerate(G.elements):
        Mh_inv = np.linalg.inv(_matrix(r, m)).round().astype(int)
        for o, c, i, j, du, dv in np.ndindex(3, 2, 4, 4, 3, 3):
            su, sv = _apply(Mh_inv, du - 1, dv - 1)
            expected[0, o, i, j] += f[0, c, h, i + du, j + dv] * psi[o, c, su + 1, sv + 1]
    expected += conv.bias.detach().numpy()[None, :, None, None]
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)


@pytest.mark.gpu
@pytest.mark.parametrize("layer", [GroupConv2d, ProjectionConv2d])
def test_the_formula_holds_on_cuda(layer):
    """The same numbers on a GPU as on the CPU (float64, so the comparison is tight)."""
    conv = layer(2, 3, 3, "p4m").double()
    f = torch.randn(2, 2, 8, 7, 7, dtype=torch.float64)
    expected = conv(f)
    torch.testing.assert_close(conv.cuda()(f.cuda()).cpu(), expected, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------- DenseNet layer and transition
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_densenet_layer_and_transition_are_their_textbook_formulas(mode):
    """The transition is written ``conv1x1(pool(relu(bn z)))`` (a quarter of the 1x1 conv's work) but must equal
    the textbook order ``pool(conv1x1(relu(bn z)))``, computed here with loops in numpy; the dense layer's
    in-place ReLU must leave its input (which it concatenates) untouched and let gradients through."""
    from equipath.models.densenet import DenseLayer, Transition

    torch.manual_seed(3)
    layer, trans = DenseLayer(2, 1, "p4").double(), Transition(3, "p4").double()
    for bn in (layer.norm, trans.norm):
        with torch.no_grad():
            bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 2), bn.bias.uniform_(-1, 1)
    layer.train(mode == "train"), trans.train(mode == "train")
    x = torch.randn(2, 2, 4, 8, 8, dtype=torch.float64, requires_grad=True)
    x_before = x.detach().clone()
    z = layer(x)
    out = trans(z)
    assert torch.equal(x.detach(), x_before)  # the in-place ReLU acted on the norm's output, not on x
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()

    def bn_relu(bn, a):  # a: (B, C, |G|, H, W) numpy; batch statistics in training, running ones in eval
        if mode == "train":
            mean = a.mean(axis=(0, 2, 3, 4), keepdims=True)
            var = a.var(axis=(0, 2, 3, 4), keepdims=True)
        else:
            mean = bn.running_mean.detach().numpy()[None, :, None, None, None]
            var = bn.running_var.detach().numpy()[None, :, None, None, None]
        w = bn.weight.detach().numpy()[None, :, None, None, None]
        b = bn.bias.detach().numpy()[None, :, None, None, None]
        return np.maximum((a - mean) / np.sqrt(var + bn.eps) * w + b, 0)

    xa = x_before.numpy()
    z_ref = np.concatenate([xa[..., 1:-1, 1:-1], layer.conv(torch.from_numpy(bn_relu(layer.norm, xa))).detach().numpy()], 1)
    np.testing.assert_allclose(z.detach().numpy(), z_ref, atol=1e-10)
    # textbook transition: 1x1 group conv on the full map (the layer's own expanded filter, (C_out, C_in, |G|)
    # per output orientation), then 2x2 average pooling with loops
    r = bn_relu(trans.norm, z_ref)
    weight = trans.conv._expand().detach().numpy()[..., 0, 0]  # (C_out * |G|, C_in * |G|)
    B, C, G, H, W = r.shape
    full = np.einsum("oi,bihw->bohw", weight, r.reshape(B, C * G, H, W)).reshape(B, C, G, H, W)
    pooled = np.empty((B, C, G, H // 2, W // 2))
    for i in range(H // 2):
        for j in range(W // 2):
            pooled[..., i, j] = sum(full[..., 2 * i + a, 2 * j + b] for a in (0, 1) for b in (0, 1)) / 4
    np.testing.assert_allclose(out.detach().numpy(), pooled, atol=1e-10)
