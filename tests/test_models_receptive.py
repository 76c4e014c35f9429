"""Receptive field and total stride of the segmentation models: computed by the impulse probe, checked
against a hand count; the G -> Z2 projection head (seed 001 eq. 3) with a spatial extent."""

import pytest
import torch
from torch import nn

from equipath.groups import get_group
from equipath.models import SegmentationModel, SizeRule, create_model, list_models
from equipath.nn import GroupPool, ProjectionConv2d
from equipath.testing import assert_equivariant, equivariance_error


class _Tiny(SegmentationModel):
    """conv3x3 -> maxpool 3x3 s2 p1 -> conv3x3 -> transposed conv 3x3 s2 p1 -> conv3x3, odd sides 3 + 2k."""

    size_rule = SizeRule(first=3, step=2)

    def __init__(self):
        super().__init__("z2", num_classes=1, input_size=(9, 9))
        self.body = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.MaxPool2d(3, 2, 1), nn.Conv2d(2, 2, 3, padding=1),
                                  nn.ConvTranspose2d(2, 2, 3, 2, 1), nn.Conv2d(2, 1, 3, padding=1))

    def forward(self, x):
        return self.body(x)


def test_probe_matches_a_hand_count():
    # radius by hand: conv 1; pool +1 (2); conv at stride 2 +2 (4); the transposed conv's odd outputs read
    # the two level-1 neighbours one pixel away (+1: 5); last conv +1: 6. Stride: one pool of 2.
    model = _Tiny()
    assert (model.receptive_radius, model.receptive_field, model.total_stride) == (6, 13, 2)


def test_unet_radius_by_hand():
    # level l contributes 2 convs of radius 2^l (encoder) and its pool 2^(l-1); the decoder adds at level l
    # the transposed conv (2^l) and two convs (2 * 2^l): 2+1+4+2+8+4+16+8+32 + (8+16)+(4+8)+(2+4)+(1+2) = 122
    assert create_model("unet", width=2).receptive_radius == 122
    assert create_model("p4m_unet", width=2).receptive_radius == 123  # the 3x3 head adds one pixel
    assert create_model("p4m_unet", width=2, head_kernel=1).receptive_radius == 122


@pytest.mark.parametrize("name", [n for n in list_models() if "dense" not in n])
def test_every_segmentation_model_exposes_radius_and_stride(name):
    model = create_model(name, width=2)
    # one factor of 2 per down-sampling level; the admissible sizes repeat with a multiple of the stride
    assert model.total_stride == 2 ** model.depth
    assert model.size_rule.step % model.total_stride == 0 and model.receptive_radius > model.total_stride


def test_receptive_radius_is_where_outputs_stop_changing():
    # a pixel at distance r + 1 never changes the output; at distance r it does, for some grid phase
    torch.manual_seed(0)
    model = create_model("p4m_gerunet", width=2).eval().double()
    r, s = model.receptive_radius, model.total_stride
    n = 2 * r + 4 * s + 9
    x = torch.rand(1, 3, 9, n, dtype=torch.float64)
    with torch.no_grad():
        base = model(x)[0, :, 4]
        changed_at_r = False
        for c in range(r + s, r + 2 * s):
            for d, side in ((r + 1, 1), (r + 1, -1), (r, 1), (r, -1)):
                bumped = x.clone()
                bumped[..., c + side * d] += 1.0
                same = torch.equal(model(bumped)[0, :, 4, c], base[:, c])
                if d == r + 1:
                    assert same
                changed_at_r |= d == r and not same
    assert changed_at_r


@pytest.mark.parametrize("group", ["p4", "p4m"])
def test_spatial_projection_head_is_not_pooling_and_is_equivariant(group):
    G = get_group(group)
    torch.manual_seed(1)
    head3 = ProjectionConv2d(3, 2, 3, G, padding=1).eval()
    head1 = ProjectionConv2d(3, 2, 1, G).eval()
    f = torch.randn(2, 3, G.order, 9, 9)
    for head in (head1, head3):  # exact over every group element
        assert_equivariant(head, f, G)
        assert equivariance_error(head, f, G).max() < 1e-5
    # permuting orientations (not space) keeps the orientation sum: the 1x1 head cannot see it, the 3x3 can
    shuffled = f[:, :, torch.roll(torch.arange(G.order), 1)]
    with torch.no_grad():
        assert torch.allclose(head1(f), head1(shuffled), atol=1e-5)
        assert not torch.allclose(head3(f), head3(shuffled), atol=1e-3)
        # the 1x1 head is orientation pooling (sum) followed by a 1x1 planar convolution
        pooled = GroupPool(G, "mean")(f) * G.order
        conv = nn.functional.conv2d(pooled, head1.weight, head1.bias)
        assert torch.allclose(head1(f), conv, atol=1e-5)


def test_group_unets_default_to_a_3x3_head_and_the_planar_one_to_1x1():
    assert create_model("p4m_unet", width=2).head.kernel_size == 3
    assert create_model("p4_unet", width=2).head.kernel_size == 3
    assert create_model("unet", width=2).head.kernel_size == 1
    model = create_model("p4m_unet", width=4, head_kernel=3).eval()
    assert_equivariant(model, torch.rand(1, 3, 33, 33), "p4m")
