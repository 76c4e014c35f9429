"""Slide preprocessing (RGB order, scale to [0, 1], the checkpoint's normalisation, patch placement) against
an independent reference: pixels written by the test itself, read back with PIL, normalised by hand.

The normalisation is the model's (:class:`equipath.models.Normalized`, what ``load_model`` returns).
``test_fully_convolutional_equals_patch_by_patch`` compares the dense and the patch paths, which share
the reader, ``Grid.patch_origin`` and the input preparation, so a bug in those cancels there. Here a probe
model whose logit is the mean of one input channel over its patch exposes what the model receives: a
BGR/RGB swap, a missing ``/ 255``, a mean/std mix-up or a shifted patch changes the number.
"""

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from equipath.models import Normalized
from equipath.wsi.inference import Grid, predict_dense, predict_patches
from equipath.wsi.reader import SlideView, open_slide

STRIDE, RF = 8, 24
NORM = {"mean": [0.6, 0.3, 0.45], "std": [0.2, 0.1, 0.25]}


class ChannelProbe(nn.Module):
    """A patch classifier whose logit is the mean of input channel ``channel`` over its ``RF x RF`` patch
    (a fixed averaging convolution, so it has the weights and activations of a real model)."""

    output_stride, receptive_field = STRIDE, RF

    def __init__(self, channel: int):
        super().__init__()
        self.channel = channel
        self.mean = nn.Conv2d(1, 1, RF, STRIDE, bias=False)
        nn.init.constant_(self.mean.weight, 1.0 / RF**2)

    def forward(self, x):
        return self.mean(x[:, self.channel:self.channel + 1]).flatten(1)  # (B, 1): an RF x RF patch

    def forward_dense(self, x):
        return self.mean(x[:, self.channel:self.channel + 1])

    def dense_output_size(self, H, W):
        return (H - RF) // STRIDE + 1, (W - RF) // STRIDE + 1


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    rng = np.random.default_rng(7)
    rgb = np.stack([rng.integers(150, 256, (88, 104)), rng.integers(0, 100, (88, 104)),
                    rng.integers(40, 220, (88, 104))], -1).astype(np.uint8)
    path = tmp_path_factory.mktemp("slide") / "tile.png"
    Image.fromarray(rgb, "RGB").save(path)
    return path


def _reference(path, cells, channel):
    """By hand: PIL's pixels, cell (i, j)'s patch at rows i*s - pad.., columns j*s - pad.. (pad = (rf - s) / 2),
    scaled to [0, 1], normalised with the channel's mean and std, averaged, through a sigmoid."""
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
    pad = (RF - STRIDE) // 2
    out = []
    for i, j in cells:
        top, left = i * STRIDE - pad, j * STRIDE - pad
        patch = rgb[top:top + RF, left:left + RF, channel] / 255.0
        z = ((patch - NORM["mean"][channel]) / NORM["std"][channel]).mean()
        out.append(1 / (1 + math.exp(-z)))
    return np.array(out)


@pytest.mark.parametrize("channel", [0, 1, 2], ids=["R", "G", "B"])
def test_slide_pixels_reach_the_model_in_rgb_order_scaled_and_normalised(image_file, channel):
    probe = Normalized(ChannelProbe(channel), **NORM).eval()  # as load_model returns a checkpoint's model
    with open_slide(image_file) as slide:
        view = SlideView.at(slide)
        grid = Grid.for_view(view, probe)
        assert grid.shape == (11, 13)
        # interior cells only: their patches lie inside the image (the border padding is another matter)
        cells = np.array([(i, j) for i in range(1, 10) for j in range(1, 12)])
        expected = _reference(image_file, cells, channel)
        patches = predict_patches(probe, view, grid, cells, device="cpu", progress=False)
        dense = predict_dense(probe, view, grid, None, tile_cells=4, batch_size=2,
                              device="cpu", progress=False)
    assert np.ptp(expected) > 0.01  # the cells differ: a shifted patch would be seen
    np.testing.assert_allclose(patches, expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(dense[cells[:, 0], cells[:, 1]], expected, rtol=0, atol=1e-5)
