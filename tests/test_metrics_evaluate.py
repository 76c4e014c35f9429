"""``evaluate`` end to end: PCam-format, image/mask folders and OCELOT, each checked against metrics computed
directly from the model's own outputs (or a perfect oracle), plus the JSON and the printed table."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from equipath.checkpoint import load_model, save_checkpoint
from equipath.cli import main
from equipath.data import (OcelotDataset, PCamDataset, SegmentationDataset, folder_pairs, points_to_mask,
                           write_synthetic_pcam, write_synthetic_tiles)
from equipath.evaluation import classification_metrics, evaluate_model, segmentation_metrics
from equipath.models import create_model

NORM = {"mean": [0.6, 0.5, 0.7], "std": [0.2, 0.2, 0.2]}


def _checkpoint(path, name, **kwargs):
    model = create_model(name, **kwargs)
    return save_checkpoint(path, model, name=name, kwargs=kwargs, normalization=NORM, task=model.task)


def _direct(path, images):
    model, _ = load_model(path, normalized=False)  # the reference normalises by hand
    x = (images - torch.tensor(NORM["mean"]).view(1, 3, 1, 1)) / torch.tensor(NORM["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        return model(x)


def test_evaluate_pcam_format(tmp_path, capsys):
    root = tmp_path / "pcam"
    write_synthetic_pcam(root, {"test": 24}, seed=1, progress=False)
    ckpt = _checkpoint(tmp_path / "c" / "best.pt", "densenet", growth=2)
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(root), "--bootstrap", "50", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("densenet on pcam test (24 items, SYNTHETIC data)") and "95% CI" in printed
    result = json.loads((tmp_path / "c" / "eval_test.json").read_text())
    data = PCamDataset(root, "test")
    logits = _direct(ckpt, torch.stack([data[i][0] for i in range(len(data))]))
    expected = classification_metrics(logits, data.labels)
    assert result["metrics"] == pytest.approx(expected, rel=1e-5)
    assert result["synthetic"] is True and result["n"] == 24 and result["group"] == "z2"
    assert set(result["ci95"]) == {"nll", "accuracy", "auc"}


def test_evaluate_segmentation_folders(tmp_path):
    root = tmp_path / "tiles"
    write_synthetic_tiles(root, 3, size=(48, 48), seed=2, progress=False)
    ckpt = _checkpoint(tmp_path / "c" / "best.pt", "iso_unet", width=4)
    out = tmp_path / "r.json"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(root), "--dataset", "segmentation",
                 "--patch-size", "48", "--bootstrap", "20", "--out", str(out), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    data = SegmentationDataset(folder_pairs(root / "images", root / "masks"), 48, "grid")
    images, masks = zip(*(data[i] for i in range(len(data))))
    expected = segmentation_metrics(_direct(ckpt, torch.stack(images)).argmax(1), torch.stack(masks))
    assert {k: v for k, v in result["metrics"].items() if v is not None} == pytest.approx(
        {k: v for k, v in expected.items() if not np.isnan(v)}, rel=1e-6)
    assert {"dice", "jaccard", "hausdorff", "hd95", "precision", "recall", "specificity", "f1", "miou"} <= set(result["metrics"])


def _ocelot(root, points, classes, size=64):
    """A one-image OCELOT 2023 test split in the original layout."""
    for sub in ("images/test/cell", "images/test/tissue", "annotations/test/cell", "annotations/test/tissue"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for kind in ("cell", "tissue"):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / f"images/test/{kind}/001.jpg")
    Image.fromarray(np.ones((size, size), np.uint8)).save(root / "annotations/test/tissue/001.png")
    (root / "annotations/test/cell/001.csv").write_text("".join(f"{x},{y},{c}\n" for (x, y), c in zip(points, classes)))
    meta = {"cell": {"resized_mpp_x": 0.2}, "tissue": {"resized_mpp_x": 0.8}, "patch_x_offset": 0.5, "patch_y_offset": 0.5}
    (root / "metadata.json").write_text(json.dumps({"sample_pairs": {"001": meta}}))


class _Oracle(torch.nn.Module):
    """Returns confident logits of a known class mask, whatever the input."""

    task, num_classes = "segmentation", 3

    def __init__(self, mask):
        super().__init__()
        self.logits = 10.0 * torch.nn.functional.one_hot(torch.as_tensor(mask), 3).permute(2, 0, 1).float()[None]

    def forward(self, x):
        return self.logits.expand(len(x), -1, -1, -1)


def test_ocelot_cell_f1_of_a_perfect_prediction(tmp_path):
    points, classes = [(12.0, 14.0), (45.0, 20.0), (30.0, 50.0)], [1, 2, 2]
    _ocelot(tmp_path, points, classes)
    dataset = OcelotDataset(tmp_path, "test", radius=8)
    oracle = _Oracle(points_to_mask(np.array(points), np.array(classes), (64, 64), radius=8))
    result = evaluate_model(oracle, dataset, progress=False, n_bootstrap=0,
                            cell_radius=8)
    m = result["metrics"]
    assert m["mf1"] == 1.0 and m["f1_1"] == 1.0 and m["f1_2"] == 1.0
    assert m["dice"] == pytest.approx(1.0) and m["miou"] == pytest.approx(1.0) and m["hausdorff"] == 0.0
    # a prediction that misses the tumour cells: class 2 recall 0, class 1 still found
    blind = _Oracle(points_to_mask(np.array(points[:1]), np.array(classes[:1]), (64, 64), radius=8))
    m = evaluate_model(blind, dataset, progress=False, n_bootstrap=0,
                       cell_radius=8)["metrics"]
    assert (m["f1_1"], m["f1_2"], m["mf1"]) == (1.0, 0.0, 0.5) and m["recall_2"] == 0.0
