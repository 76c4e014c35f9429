"""Filter redundancy: rotated / mirrored copies are found, unrelated filters are not, and hand-computed
similarities are reproduced."""

import math

import pytest
import torch
from torch import nn

from equipath.analysis import model_redundancy
from equipath.analysis.redundancy import best_similarity, redundancy_figure
from equipath.groups import get_group
from equipath.models import create_model
from equipath.nn import GroupConv2d, LiftingConv2d, fold_model



def test_hand_computed_similarities():
    p4m = get_group("p4m")
    w = torch.tensor([[[1.0, 0.0], [0.0, 0.0]],
                      [[0.0, 1.0], [0.0, 0.0]],
                      [[1.0, 1.0], [0.0, 0.0]]])[:, None]  # (3, 1, 2, 2)
    best = best_similarity(w, [lambda f, g=g: p4m.transform(f, g) for g in range(1, 8)])
    # w0 and w1 are a mirror (and a quarter turn) of each other; w2 meets w0/w1 at 45 degrees at best,
    # and is the mirror of itself, which does not count (j != i)
    assert best[0].item() == pytest.approx(1.0) and best[1].item() == pytest.approx(1.0)
    assert best[2].item() == pytest.approx(1 / math.sqrt(2))
    assert best_similarity(w[:1], [lambda f: f]).item() == -1.0  # a single filter has no other


def test_rotated_and_mirrored_copies_are_redundant():
    conv = nn.Conv2d(3, 12, 5)
    p4m = get_group("p4m")
    with torch.no_grad():
        base = conv.weight[:4].clone()
        conv.weight[4:8] = p4m.transform(base, 1)  # quarter turns
        conv.weight[8:12] = p4m.transform(base, 4)  # mirrors
    report = model_redundancy(conv, threshold=0.99)
    assert report.fraction == 1.0 and report.filters == 12
    assert model_redundancy(conv, "p4", threshold=0.99).fraction == pytest.approx(8 / 12)  # p4 sees no mirror
    noise = nn.Conv2d(16, 24, 5)  # unrelated filters in 400 dimensions
    assert model_redundancy(noise).fraction == 0.0
    assert model_redundancy(nn.Conv2d(3, 8, 1)).layers == ()  # 1 x 1 planar filters are skipped


def test_equivariant_weights_vs_their_folded_filter_bank():
    lift = LiftingConv2d(3, 6, 5, "p4m")
    free = model_redundancy(lift, threshold=0.99)
    folded = model_redundancy(fold_model(nn.Sequential(lift)), threshold=0.99)
    assert free.fraction == 0.0 and free.filters == 6
    assert folded.fraction == 1.0 and folded.filters == 48  # the G-CNN's 48 planar filters are 6 x 8 copies

    gconv = GroupConv2d(2, 4, 3, "p4")
    p4 = get_group("p4")
    with torch.no_grad():
        gconv.weight[1] = p4.transform_group(gconv.weight[0], 1)  # a regular-action copy of filter 0
    report = model_redundancy(gconv, threshold=0.99)
    assert report.layers[0].action == "regular p4"
    assert report.rows()[0]["redundant"] == 2 and report.fraction == 0.5


def test_registered_models_and_figure():
    reports = {"p4m_densenet": model_redundancy(create_model("p4m_densenet", growth=8, stem=1)),
               "densenet": model_redundancy(create_model("densenet", growth=2, stem=3))}
    p4m, base = reports["p4m_densenet"], reports["densenet"]
    assert {layer.action for layer in p4m.layers} == {"planar p4m", "regular p4m"}
    assert {layer.action for layer in base.layers} == {"planar p4m"}
    assert len(base.layers) == 6  # the stem and five 3 x 3 convolutions; 1 x 1 transitions skipped
    for report in reports.values():
        assert 0.0 <= report.fraction <= 1.0 and 0.0 <= report.chance <= 1.0
    fig = redundancy_figure(reports, synthetic=True)
    assert "SYNTHETIC DATA" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match="threshold"):
        model_redundancy(nn.Conv2d(3, 3, 3), threshold=2.0)
