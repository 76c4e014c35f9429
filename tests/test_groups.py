import itertools

import numpy as np
import pytest
import torch

from equipath.groups import GROUP_NAMES, get_group


@pytest.mark.parametrize("name", GROUP_NAMES)
def test_group_axioms(name):
    G = get_group(name)
    n = G.order
    assert n == {"z2": 1, "p4": 4, "p4m": 8}[name]
    for a, b, c in itertools.product(range(n), repeat=3):
        assert G.compose(G.compose(a, b), c) == G.compose(a, G.compose(b, c))
    for a in range(n):
        assert G.compose(0, a) == a == G.compose(a, 0)
        assert G.compose(a, int(G.inverse[a])) == 0
    for row in G.cayley:  # a Latin square
        assert sorted(row.tolist()) == list(range(n))


@pytest.mark.parametrize("name", GROUP_NAMES)
def test_actions_are_homomorphisms(name):
    G = get_group(name)
    x = torch.randn(2, 3, 5, 5)
    f = torch.randn(2, 3, G.order, 5, 5)
    for a, b in itertools.product(range(G.order), repeat=2):
        ab = G.compose(a, b)
        assert torch.equal(G.transform(G.transform(x, b), a), G.transform(x, ab))
        assert torch.equal(G.transform_group(G.transform_group(f, b), a), G.transform_group(f, ab))


def test_planar_action_matches_definition_and_numpy():
    G = get_group("p4m")
    x = torch.arange(12.0).view(1, 3, 4)
    for g, (r, m) in enumerate(G.elements):
        expected = torch.rot90(x.flip(-1) if m else x, r, (-2, -1))
        assert torch.equal(G.transform(x, g), expected)
        assert np.array_equal(G.transform(x.numpy(), g), expected.numpy())
    assert G.elements[:4] == get_group("p4").elements  # p4 is the first four elements of p4m


def test_group_action_permutes_orientations():
    G = get_group("p4")
    f = torch.zeros(1, 1, 4, 3, 3)
    f[0, 0, 0, 0, 0] = 1.0  # a delta at orientation 0
    out = G.transform_group(f, 1)
    # the delta moves to orientation g * 0 = 1 and is rotated spatially
    assert out[0, 0, 1].sum() == 1 and out[0, 0, [0, 2, 3]].sum() == 0
    assert torch.equal(out[0, 0, 1], G.transform(f[0, 0, 0], 1))


def test_bad_group_and_shape():
    with pytest.raises(ValueError, match="unknown group 'p6'"):
        get_group("p6")
    with pytest.raises(ValueError, match=r"orientation axis of size 8"):
        get_group("p4m").transform_group(torch.randn(1, 2, 4, 5, 5), 1)
