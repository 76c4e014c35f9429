"""``evaluate`` per-image CSV and ``--save-predictions``: each row is the image's own scores (checked against
the metrics computed on that image alone), the saved masks are the model's argmax stitched back to the
whole image, the overlays show ground truth beside prediction, and a classifier's probabilities match the
model's."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from equipath.checkpoint import load_model, save_checkpoint
from equipath.cli import main
from equipath.data import PCamDataset, write_synthetic_pcam, write_synthetic_tiles
from equipath.data.segmentation import read_image, read_mask
from equipath.evaluation import segmentation_metrics
from equipath.models import create_model

NORM = {"mean": [0.6, 0.5, 0.7], "std": [0.2, 0.2, 0.2]}


def _checkpoint(path, name, **kwargs):
    model = create_model(name, **kwargs)
    return save_checkpoint(path, model, name=name, kwargs=kwargs, normalization=NORM, task=model.task)


def _predict(ckpt, image):
    model, _ = load_model(ckpt, normalized=False)  # the reference normalises by hand
    x = torch.from_numpy(image).permute(2, 0, 1)[None]
    x = (x - torch.tensor(NORM["mean"]).view(1, 3, 1, 1)) / torch.tensor(NORM["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        return model(x)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_segmentation_rows_masks_and_overlays(tmp_path, capsys):
    root = tmp_path / "tiles"
    write_synthetic_tiles(root / "test", 2, size=(48, 48), seed=3, progress=False)
    ckpt = _checkpoint(tmp_path / "c" / "best.pt", "iso_unet", width=4)
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(root), "--dataset", "segmentation",
                 "--patch-size", "32", "--bootstrap", "0", "--save-predictions", "--no-progress"]) == 0
    assert "eval_test_items.csv" in capsys.readouterr().out
    rows = _rows(tmp_path / "c" / "eval_test_items.csv")
    assert [r["image"] for r in rows] == ["tile_00000", "tile_00001"]  # one row per image, not per patch
    saved = tmp_path / "c" / "eval_test_predictions"
    result = json.loads((tmp_path / "c" / "eval_test.json").read_text())
    assert result["items_csv"].endswith("eval_test_items.csv") and result["predictions"] == str(saved)
    for row in rows:
        name = row["image"]
        truth = read_mask(root / "test" / "masks" / f"{name}.png")
        mask = np.asarray(Image.open(saved / "masks" / f"{name}.png"))
        assert mask.shape == truth.shape == (48, 48)  # the 32 px grid patches stitched back to the image
        # 32 px patches on a 48 px image start at 0 and 16 (the last flush with the border); the last patch,
        # [16, 48) x [16, 48), is drawn last: there the mask is the model's own map of that patch
        last = _predict(ckpt, read_image(root / "test" / "images" / f"{name}.png")[16:48, 16:48].copy())
        np.testing.assert_array_equal(mask[16:48, 16:48], last.argmax(1)[0].numpy())
        expected = segmentation_metrics(mask[None].astype(np.int64), truth[None], 2)
        for key in ("dice", "jaccard", "precision", "recall"):
            if np.isnan(expected[key]):
                assert row[key] == ""
            else:
                assert float(row[key]) == pytest.approx(expected[key], rel=1e-6)
        overlay = np.asarray(Image.open(saved / "overlays" / f"{name}.png"))
        assert overlay.shape[1] > 2 * 48 and overlay.shape[0] > 48  # ground truth | prediction, a title line


def test_stitching_puts_each_patch_on_its_own_pixels():
    """A fake grid data set whose logits encode the patch: the stitched mask shows each patch where the grid
    put it (later patches over earlier ones), and the image is split into its own rows."""
    from types import SimpleNamespace

    from equipath.evaluation.predictions import PredictionRecorder

    grid = [(0, 0, 0), (0, 0, 3), (0, 3, 0), (0, 3, 3), (1, 0, 0)]
    dataset = SimpleNamespace(grid=grid, pairs=[("a.png", "a_m.png"), ("b.png", "b_m.png")], sizes=[(7, 7), (4, 4)])
    recorder = PredictionRecorder(dataset, "segmentation", 5)
    for index, (k, y, x) in enumerate(grid):
        logits = torch.nn.functional.one_hot(torch.full((4, 4), index % 5), 5).permute(2, 0, 1).float()
        recorder.add(index, torch.zeros(3, 4, 4), logits, torch.zeros(4, 4, dtype=torch.long))
        if index == 3:
            stitched = recorder._open["pred"].copy()
    expected = np.zeros((7, 7), int)
    for index, (_, y, x) in enumerate(grid[:4]):
        expected[y:y + 4, x:x + 4] = index
    np.testing.assert_array_equal(stitched, expected)
    assert [row["image"] for row in recorder.finish()] == ["a", "b"]


def test_classifier_rows_and_probabilities(tmp_path):
    root = tmp_path / "pcam"
    write_synthetic_pcam(root, {"test": 6}, seed=1, progress=False)
    ckpt = _checkpoint(tmp_path / "c" / "best.pt", "densenet", growth=2)
    out = tmp_path / "r.json"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(root), "--bootstrap", "0", "--out", str(out),
                 "--save-predictions", "--no-progress"]) == 0
    rows = _rows(tmp_path / "r_items.csv")
    data = PCamDataset(root, "test")
    model, _ = load_model(ckpt, normalized=False)  # the reference normalises by hand
    x = torch.stack([data[i][0] for i in range(6)])
    x = (x - torch.tensor(NORM["mean"]).view(1, 3, 1, 1)) / torch.tensor(NORM["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = torch.sigmoid(model(x).reshape(-1)).numpy()
    probabilities = np.load(tmp_path / "r_predictions" / "probabilities.npy")
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5)
    assert [int(r["label"]) for r in rows] == data.labels.tolist()
    np.testing.assert_allclose([float(r["probability"]) for r in rows], expected, rtol=1e-5)
    assert [int(r["prediction"]) for r in rows] == (expected >= 0.5).astype(int).tolist()
