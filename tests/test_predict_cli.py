"""``equipath predict``: segmentation checkpoints on images, folders and slides (outputs users open, exact
under the group), classifier checkpoints routed to the slide-heatmap path, cell models in OCELOT format."""

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from equipath.checkpoint import load_model, save_checkpoint
from equipath.cli import main
from equipath.data.ocelot import read_cell_csv
from equipath.evaluation.ocelot_submission import (read_ocelot_submission, score_ocelot_submission,
                                                   write_ocelot_submission)
from equipath.groups import get_group
from equipath.models import create_model
from equipath.outdir import is_done
from equipath.wsi.geojson import read_geojson, read_points
from equipath.wsi.reader import SlideView, open_slide

CMU = Path(__file__).parent / "data" / "CMU-1-Small-Region.svs"


def _checkpoint(path, name, pixels, task="segmentation", config=None, **kwargs):
    """A checkpoint of ``name`` whose batch-norm statistics come from ``pixels`` (no unit is dead)."""
    model = create_model(name, **kwargs)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = 1.0
    if task == "segmentation":
        with torch.no_grad():
            model.train()(torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255)
    extra = {"config": config} if config else {}
    return save_checkpoint(path, model.eval(), name=name, kwargs=kwargs,
                           normalization={"mean": [0.1, 0.2, 0.3], "std": [1.0, 1.5, 2.0]}, task=task, **extra)


def test_predict_segments_a_slide_into_files_users_open(tmp_path, capsys):
    pixels = SlideView.at(open_slide(CMU)).read(650, 1900, 201, 201)
    ckpt = _checkpoint(tmp_path / "seg.pt", "p4m_gerunet", pixels, width=2)
    out = tmp_path / "out"
    code = main(["predict", str(CMU), "--checkpoint", str(ckpt), "--out", str(out), "--mpp", "3.992",
                 "--tile", "385", "--no-progress"])
    assert code == 0, capsys.readouterr()
    folder = out / "CMU-1-Small-Region"
    assert is_done(folder) and (out / "made_with.json").is_file() and list(out.glob("predict-*.json"))
    prob = np.load(folder / "probabilities.npy")
    assert prob.dtype == np.float16 and prob.shape == (2, 370, 277)
    assert np.isfinite(prob).all() and prob.astype(np.float32).std() > 1e-2  # one window: all tissue
    with tifffile.TiffFile(folder / "labels.tif") as tif:
        assert len(tif.pages) >= 2 and tif.pages[0].shape == (370, 277) and tif.pages[0].is_tiled
        x_res = tif.pages[0].tags["XResolution"].value
        assert abs(1e4 / (x_res[0] / x_res[1]) - 3.992) < 0.01  # microns per pixel in the tags
        labels = tif.pages[0].asarray()
    assert set(np.unique(labels)) <= {0, 1} and np.array_equal(labels, prob.argmax(0))
    # one window: the map is the model (its normalisation applied once) on the view's canvas, 377 x 281 px
    # centred on it (the reader gives white beyond the slide)
    model, _ = load_model(ckpt)
    canvas = SlideView.at(open_slide(CMU), mpp=3.992).read(-2, -3, 281, 377)
    with torch.no_grad():
        x = torch.from_numpy(canvas.copy()).permute(2, 0, 1)[None].float() / 255
        whole = model(x).softmax(1)[0, :, 3:-4, 2:-2]
    assert np.abs(prob.astype(np.float32) - whole.numpy()).max() < 2e-3
    assert Image.open(folder / "overlay.png").size[1] > 277  # the picture plus its legend
    assert all(a.group == "Tumor" for a in read_geojson(folder / "regions.geojson"))
    summary = json.loads((folder / "segment.json").read_text())
    assert summary["tiles"]["exact"] and summary["tiles"]["receptive_radius"] == 68


@pytest.mark.slow
def test_predict_on_roto_reflected_files_gives_roto_reflected_maps(tmp_path):
    group = get_group("p4m")
    pixels = SlideView.at(open_slide(CMU)).read(650, 1900, 233, 209)
    folder = tmp_path / "images"
    folder.mkdir()
    image = torch.from_numpy(pixels).permute(2, 0, 1)  # (3, H, W)
    for g in range(group.order):
        Image.fromarray(group.transform(image, g).permute(1, 2, 0).numpy()).save(folder / f"g{g}.png")
    errors = {}
    for name in ("p4m_gerunet", "resunet"):
        ckpt = _checkpoint(tmp_path / f"{name}.pt", name, pixels[:201, :201], width=2)
        out = tmp_path / name
        assert main(["predict", str(folder), "--checkpoint", str(ckpt), "--out", str(out), "--tile", "193",
                     "--slide-mpp", "0.5", "--dtype", "float32", "--no-progress"]) == 0
        maps = [group.transform(torch.from_numpy(np.load(out / f"g{g}" / "probabilities.npy")),
                                int(group.inverse[g])).numpy() for g in range(group.order)]
        assert all(np.array_equal(np.isnan(m), np.isnan(maps[0])) for m in maps)
        assert np.nanstd(maps[0]) > 1e-2  # the maps are not flat
        errors[name] = max(float(np.nanmax(np.abs(m - maps[0]))) for m in maps)
    assert errors["p4m_gerunet"] <= 1e-4 and errors["resunet"] > 1e-3


def test_classifier_checkpoints_take_the_slide_heatmap_path(tmp_path, capsys):
    Image.fromarray(SlideView.at(open_slide(CMU)).read(650, 1900, 300, 260)).save(tmp_path / "crop.png")
    ckpt = _checkpoint(tmp_path / "cls.pt", "p4m_densenet", None, task="classification", growth=8)
    out = tmp_path / "out"
    code = main(["predict", str(tmp_path / "crop.png"), "--checkpoint", str(ckpt), "--out", str(out),
                 "--slide-mpp", "0.972", "--tile-cells", "4", "--no-progress"])
    assert code == 0, capsys.readouterr()
    assert (out / "crop" / "probability.npy").is_file() and (out / "crop" / "detections.csv").is_file()
    assert list(out.glob("predict-*.json"))


def test_cell_models_write_qupath_points_and_an_ocelot_submission(tmp_path):
    pixels = SlideView.at(open_slide(CMU)).read(650, 1900, 96, 96)
    Image.fromarray(pixels).save(tmp_path / "cells.png")
    ckpt = _checkpoint(tmp_path / "cells.pt", "iso_unet", pixels, config={"data": {"dataset": "ocelot"}},
                       width=2, num_classes=3)
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "cells.png"), "--checkpoint", str(ckpt), "--out", str(out),
                 "--all-pixels", "--cell-threshold", "0.2", "--no-progress"]) == 0
    (cells,) = read_ocelot_submission(out / "cells" / "cells.json")
    points, names, scores = read_points(out / "cells" / "cells.geojson")
    assert len(cells) == len(points) > 0 and set(cells[:, 2]) <= {1, 2}
    assert np.allclose(points, cells[:, :2] + 0.5) and np.allclose(scores, cells[:, 3], atol=1e-3)


def test_ocelot_points_written_and_read_back_score_mf1_one(tmp_path):
    rng = np.random.default_rng(0)
    images, truths = [], []
    for k in range(3):
        xy = rng.uniform(0, 1024, (40, 2))
        classes = rng.integers(1, 3, 40)
        (tmp_path / f"{k:03d}.csv").write_text("".join(f"{x:.0f},{y:.0f},{c}\n" for (x, y), c in zip(xy, classes)))
        truth = np.column_stack(read_cell_csv(tmp_path / f"{k:03d}.csv"))
        truths.append(truth)
        images.append(np.column_stack([truth, rng.uniform(0.5, 1, 40)]))
    path = write_ocelot_submission(tmp_path / "cells.json", images)
    data = json.loads(path.read_text())
    assert data["type"] == "Multiple points" and data["num_images"] == 3
    assert data["points"][0]["name"] == "image_0" and len(data["points"][0]["point"]) == 3
    scores = score_ocelot_submission(path, truths)
    assert scores["mf1"] == 1.0 and scores["f1_1"] == scores["f1_2"] == 1.0
    shifted = [np.column_stack([t[:, :2] + 20, t[:, 2:]]) for t in truths]  # 28 px from its own cell
    assert score_ocelot_submission(path, shifted)["mf1"] < 0.2


def test_label_tiff_pyramid_levels_are_the_mask_halved(tmp_path):
    from equipath.wsi.segment_outputs import write_label_tiff

    labels = np.random.default_rng(0).integers(0, 3, (700, 530)).astype(np.uint8)
    np.save(tmp_path / "labels.npy", labels)
    write_label_tiff(tmp_path / "labels.tif", np.load(tmp_path / "labels.npy", mmap_mode="r"), mpp=0.5)
    with tifffile.TiffFile(tmp_path / "labels.tif") as tif:
        assert [p.shape for p in tif.pages] == [(700, 530), (350, 265), (175, 133)]
        for k, page in enumerate(tif.pages):
            assert np.array_equal(page.asarray(), labels[::2**k, ::2**k])
            x_res = page.tags["XResolution"].value
            assert x_res[0] / x_res[1] == pytest.approx(2e4 / 2**k)  # pixels per cm at 0.5 um/px, halved


def test_evaluate_scores_an_ocelot_submission_file_and_a_predict_folder(tmp_path, capsys):
    from equipath.data.ocelot import OcelotDataset
    from equipath.data.synthetic_sets import write_synthetic_ocelot

    root = write_synthetic_ocelot(tmp_path / "ocelot", 3, 64, progress=False)
    data = OcelotDataset(root, "test")
    truths = [np.column_stack(read_cell_csv(data._paths(i)["cells"])) for i in data.ids]
    cells = [np.column_stack([t, np.full(len(t), 0.9)]) for t in truths]
    write_ocelot_submission(tmp_path / "all.json", cells)
    for sample_id, c in zip(data.ids, cells):          # the layout 'equipath predict' writes, one folder per image
        write_ocelot_submission(tmp_path / "pred" / sample_id / "cells.json", [c])
    for source in ("all.json", "pred"):
        out = tmp_path / f"eval_{source}.json"
        assert main(["evaluate", "--submission", str(tmp_path / source), "--data", str(root), "--out", str(out)]) == 0
        assert json.loads(out.read_text())["metrics"]["mf1"] == 1.0
    # one image's cells moved 20 px (outside 15 px): its cells stop matching, the score falls
    write_ocelot_submission(tmp_path / "pred" / data.ids[0] / "cells.json",
                            [np.column_stack([cells[0][:, :2] + 20, cells[0][:, 2:]])])
    assert main(["evaluate", "--submission", str(tmp_path / "pred"), "--data", str(root),
                 "--out", str(tmp_path / "shifted.json")]) == 0
    assert json.loads((tmp_path / "shifted.json").read_text())["metrics"]["mf1"] < 1.0
    capsys.readouterr()
    assert main(["evaluate", "--submission", str(tmp_path / "nothing"), "--data", str(root)]) == 2
    assert main(["evaluate", "--data", str(root)]) == 2
    assert "--checkpoint" in capsys.readouterr().err


def test_label_overlay_keeps_labels_on_their_own_pixels():
    """The overlay is read back at thumbnail pixel centres (like the heatmap), not stretched: with 2.7 label
    pixels per thumbnail pixel, a boundary at label column 200 lands at thumbnail column 74, exactly."""
    import tempfile

    from equipath.wsi.segment_outputs import write_label_overlay

    labels = np.zeros((700, 333), np.uint8)
    labels[:, 200:] = 1
    thumbnail = np.full((260, 124, 3), 255, np.uint8)     # 260 * 2.7 = 702 > 700: the last row lies past the map
    path = write_label_overlay(Path(tempfile.mkdtemp()) / "o.png", thumbnail, labels, {0: "bg", 1: "Tumor"},
                               pixel_size=2.7)
    picture = np.asarray(Image.open(path).convert("RGB"))[:260, :124].astype(int)
    coloured = (picture != 255).any(axis=2)
    first = int(np.ceil(200 / 2.7 - 0.5))                 # first x with (x + 1/2) * 2.7 >= 200
    assert first == 74
    assert not coloured[:259, :first].any() and coloured[:259, first:123].all()
    assert not coloured[259].any() and not coloured[:, 123].any()  # centres past 700 / 333: left as they are
    stretched = write_label_overlay(Path(tempfile.mkdtemp()) / "s.png", thumbnail, labels, {0: "bg", 1: "Tumor"})
    old = (np.asarray(Image.open(stretched).convert("RGB"))[:260, :124] != 255).any(axis=2)
    assert not np.array_equal(old, coloured)              # stretching 333 -> 124 puts the boundary elsewhere
