"""D4 test-time augmentation: the TTA model is exactly invariant / equivariant, and the comparison reports
accuracy, stability and time per image that check against direct computations."""

import math

import pytest
import torch
from torch import nn

from equipath.analysis import GroupTTA, compare_tta
from equipath.analysis.tta import tta_figure
from equipath.data import PCamDataset, write_synthetic_pcam
from equipath.evaluation import classification_metrics
from equipath.groups import get_group
from equipath.models import Normalized, create_model
from equipath.testing import equivariance_error



def test_tta_is_the_average_of_the_transformed_predictions():
    p4m = get_group("p4m")
    model = create_model("densenet", growth=2, stem=3).eval()
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        p = torch.stack([torch.sigmoid(model(p4m.transform(x, g))) for g in range(8)]).mean(0)
        z = GroupTTA(model, "p4m")(x)
    assert torch.allclose(torch.sigmoid(z), p, atol=1e-6)
    assert equivariance_error(GroupTTA(model, "p4m"), x, "p4m").max() < 1e-5
    assert equivariance_error(model, x, "p4m").max() > 1e-4

    seg = nn.Conv2d(3, 3, 5, padding=2).eval()  # a 3-class planar "segmentation" net, not equivariant
    y = torch.rand(1, 3, 12, 12)
    tta = GroupTTA(seg, "p4m")
    with torch.no_grad():
        expected = torch.stack([p4m.transform(torch.softmax(seg(p4m.transform(y, g)), 1), p4m.inverse[g])
                                for g in range(8)]).mean(0)
        assert torch.allclose(torch.softmax(tta(y), 1), expected, atol=1e-6)
    assert equivariance_error(tta, y, "p4m").max() < 1e-5
    with pytest.raises(ValueError, match="square"):
        tta(torch.rand(1, 3, 12, 10))


def test_compare_tta_numbers(tmp_path):
    write_synthetic_pcam(tmp_path, {"test": 6}, progress=False)
    data = PCamDataset(tmp_path, "test")
    equivariant = create_model("p4m_densenet", growth=8, stem=1).eval()
    baseline = create_model("densenet", growth=2, stem=3).eval()
    norm = {"mean": [0.7, 0.5, 0.7], "std": [0.2, 0.2, 0.2]}
    rows = compare_tta({"p4m": equivariant, "base": Normalized(baseline, **norm)}, data, "p4m", rotations=2,
                       stability_images=2, batch_size=4, synthetic=data.synthetic, progress=False)
    by = {r["model"]: r for r in rows}
    assert list(by) == ["p4m", "base", "base+tta"] and [r["tta"] for r in rows] == [False, False, True]
    assert by["p4m"]["p4m_std"] < 1e-6 and by["base+tta"]["p4m_std"] < 1e-6 < by["base"]["p4m_std"]
    assert all(r["synthetic"] and r["images"] == 6 and r["seconds_per_image"] > 0 for r in rows)
    assert by["p4m"]["time_ratio"] == 1.0
    assert math.isclose(by["base+tta"]["time_ratio"],
                        by["base+tta"]["seconds_per_image"] / by["p4m"]["seconds_per_image"])
    images = torch.stack([data[i][0] for i in range(6)])
    labels = torch.stack([data[i][1] for i in range(6)])
    mean, std = torch.tensor(norm["mean"]).view(1, 3, 1, 1), torch.tensor(norm["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = classification_metrics(GroupTTA(baseline)((images - mean) / std), labels)
    for key in ("nll", "accuracy", "auc"):
        assert math.isclose(by["base+tta"][key], expected[key], rel_tol=1e-5, abs_tol=1e-7)
    assert "rotation_std" in by["base"] and by["base"]["rotation_std"] > 0
    fig = tta_figure(rows, synthetic=True)
    assert "SYNTHETIC DATA" in fig._suptitle.get_text()
