"""Joint image / mask augmentation: parameters drawn once, the same change to both, masks never blended."""

import numpy as np
import pytest
import torch

from equipath.data.augment import (ColorJitter, D4, ElasticDeform, GaussianNoise, HEDJitter, make_augmentation)
from equipath.groups import get_group


def _pair(h=24, w=30):
    """An image and a mask that is a function of the image (class = which third of channel 0's range)."""
    image = torch.rand(3, h, w)
    return image, _classes(image)


def _classes(image):
    return (image[0] * 3).floor().clamp(0, 2).long()


@pytest.mark.parametrize("group", ["p4", "p4m"])
def test_d4_applies_one_group_element_to_both(group):
    G = get_group(group)
    image, mask = _pair(20, 20)
    seen = set()
    for _ in range(200):
        out_image, out_mask = D4(group)(image, mask)
        matches = [g for g in range(G.order) if torch.equal(out_image, G.transform(image, g))]
        assert len(matches) == 1
        assert torch.equal(out_mask, G.transform(mask, matches[0]))  # the same element on the mask
        seen.add(matches[0])
    assert seen == set(range(G.order))


def test_d4_on_non_square_and_without_mask():
    image = torch.rand(3, 8, 12)
    shapes = {D4()(image)[0].shape for _ in range(40)}
    assert shapes == {(3, 8, 12), (3, 12, 8)}
    assert D4()(image)[1] is None


def test_elastic_moves_image_and_mask_together():
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    image = torch.stack([((yy // 8 + xx // 8) % 3).float() / 3 + 1 / 6] * 3)  # piecewise constant
    mask = _classes(image)
    out_image, out_mask = ElasticDeform(magnitude=4, sigma=6, p=1)(image, mask)
    assert out_mask.dtype == torch.int64 and set(out_mask.unique().tolist()) <= {0, 1, 2}
    moved = (out_mask != mask).float().mean()
    assert moved > 0.02  # it deforms
    agree = (_classes(out_image) == out_mask).float().mean()
    assert agree > 0.9  # only pixels on the (bilinear) class borders may differ
    still, still_mask = ElasticDeform(magnitude=0, p=1)(image, mask)
    assert torch.allclose(still, image, atol=1e-6) and torch.equal(still_mask, mask)


def test_elastic_mask_with_channels():
    image, _ = _pair()
    soft = torch.rand(2, 24, 30)
    _, out = ElasticDeform(p=1)(image, soft)
    assert out.shape == soft.shape
    assert set(np.unique(out.numpy())) <= set(np.unique(soft.numpy()))  # nearest: values copied, never blended


def test_noise_leaves_the_mask():
    image, mask = _pair()
    torch.manual_seed(3)
    out, out_mask = GaussianNoise(std=0.2, p=1)(image, mask)
    assert out_mask is mask and not torch.equal(out, image)
    assert out.min() >= 0 and out.max() <= 1


def test_hed_jitter_identity_and_change():
    image = torch.rand(3, 16, 16) * 0.8 + 0.1
    same, _ = HEDJitter(sigma=0, bias=0)(image)
    assert torch.allclose(same, image, atol=1e-5)
    torch.manual_seed(1)
    changed, mask = HEDJitter(sigma=0.3, bias=0.05)(image, torch.zeros(16, 16, dtype=torch.long))
    assert (changed - image).abs().mean() > 1e-3 and changed.min() >= 0 and changed.max() <= 1
    assert torch.equal(mask, torch.zeros(16, 16, dtype=torch.long))


def test_color_jitter():
    image = torch.rand(3, 16, 16)
    same, _ = ColorJitter(0, 0, 0)(image)
    assert torch.allclose(same, image, atol=1e-6)
    out, _ = ColorJitter(0.5, 0.5, 0.5)(image)
    assert out.shape == image.shape and not torch.allclose(out, image)
    with pytest.raises(ValueError, match=r"RGB image \(3, H, W\)"):
        ColorJitter()(torch.rand(1, 4, 4))


def test_make_augmentation_and_checks():
    aug = make_augmentation(["d4", "elastic", "noise", "hed", "color"])
    image, mask = _pair()
    out_image, out_mask = aug(image, mask)
    assert out_image.shape[0] == 3 and out_mask.shape == out_image.shape[1:]
    with pytest.raises(ValueError, match="unknown augmentation 'flip'"):
        make_augmentation(["flip"])
    with pytest.raises(ValueError, match=r"mask tensor \(\.\.\., 24, 30\)"):
        D4()(image, mask[:, :10])
    with pytest.raises(ValueError, match=r"float image tensor \(C, H, W\)"):
        D4()(image.numpy())
