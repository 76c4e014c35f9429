"""``equipath reproduce``: a plan killed mid-way resumes to the same table; the Camelyon16 chain's NMS
chosen from saved maps gives the detections of a re-run of the model; slide splits and regimes."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from equipath.models import create_model
from equipath.outdir import DONE_MARKER
from equipath.reproduce import TABLES, run_table
from equipath.reproduce.camelyon16 import map_detections, regime_slides, split_slides
from equipath.wsi.detection import read_detections_csv
from equipath.wsi.pipeline import PredictOptions, predict_slide

TINY = {"epochs": "2", "batches_per_epoch": "2", "batch_size": "8", "data.val_samples": "32"}

RUN = """
import dataclasses, sys, torch
torch.set_num_threads(1)
from equipath.reproduce import TABLES, run_table
base = TABLES["pcam-table1"]
table = dataclasses.replace(base, cells=lambda ctx, seeds: base.cells(ctx, seeds)[:2])
run_table(table, sys.argv[1], synthetic=True, progress=False, overrides=%r, n_bootstrap=50, device="cpu")
""" % TINY


def two_cell_table():
    table = TABLES["pcam-table1"]
    return dataclasses.replace(table, cells=lambda ctx, seeds: table.cells(ctx, seeds)[:2])


@pytest.mark.slow
def test_killed_plan_resumes_to_the_same_table(tmp_path):
    reference = tmp_path / "reference"
    run_table(two_cell_table(), reference, synthetic=True, progress=False, overrides=TINY, n_bootstrap=50,
              device="cpu")
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = open(tmp_path / "killed.log", "w")
    process = subprocess.Popen([sys.executable, "-c", RUN, str(out)], env=env, start_new_session=True,
                               stdout=log, stderr=log)
    cells = list(json.loads((reference / "plan.json").read_text())["cells"])  # keys in plan order
    first_done = out / "cells" / cells[0] / DONE_MARKER
    second_last = out / "cells" / cells[1] / "train" / "last.pt"
    try:
        deadline = time.monotonic() + 600
        while not second_last.exists():  # the first cell finished, the second trained one epoch of two
            assert process.poll() is None, "the plan ended before it could be killed: " + \
                (tmp_path / "killed.log").read_text()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        log.close()
    assert first_done.is_file() and not (out / "cells" / cells[1] / DONE_MARKER).exists()
    assert not (out / "table.csv").exists()
    marker = first_done.read_text()
    run_table(two_cell_table(), out, synthetic=True, progress=False, overrides=TINY, n_bootstrap=50, device="cpu")
    assert first_done.read_text() == marker  # the finished cell was skipped
    history = (out / "cells" / cells[1] / "train" / "metrics.csv").read_text().splitlines()
    assert len(history) == 3  # header + epoch 1 (before the kill) + epoch 2 (after the resume)
    assert (out / "table.csv").read_text() == (reference / "table.csv").read_text()
    assert "SYNTHETIC" in (out / "table.md").read_text() and "SYNTHETIC" in (out / "table.csv").read_text()


def test_a_different_plan_in_the_same_folder_is_refused(tmp_path):
    (tmp_path / "plan.json").write_text(json.dumps({"table": {"name": "camelyon16-table2"}}))
    with pytest.raises(ValueError, match="made with name = 'camelyon16-table2'"):
        run_table(TABLES["pcam-table1"], tmp_path, synthetic=True, progress=False)


def test_real_data_layout_is_checked(tmp_path):
    with pytest.raises(FileNotFoundError, match="camelyonpatch_level_2_split_train_x.h5"):
        run_table(TABLES["pcam-table1"], tmp_path / "out", tmp_path)
    with pytest.raises(FileNotFoundError, match="training/tumor"):
        run_table(TABLES["camelyon16-table2"], tmp_path / "out", tmp_path)
    with pytest.raises(ValueError, match="--data-root is required"):
        run_table(TABLES["pcam-table1"], tmp_path / "out")


def test_nms_from_saved_maps_equals_rerunning_the_model(tmp_path):
    """map_detections on the saved probability.npy + slide.json gives, for every window and threshold, the
    detections.csv that predict_slide writes when it runs the model again with those NMS options."""
    from PIL import Image

    from equipath.data.synthetic import synthetic_tile

    torch.manual_seed(0)
    model = create_model("p4m_densenet", growth=8).eval()
    slide = tmp_path / "slide.png"
    Image.fromarray(synthetic_tile(0, size=(232, 312)).image).save(slide)
    options = PredictOptions(mpp=1.0, slide_mpp=0.5, progress=False, device="cpu")  # downsample 2
    predict_slide(slide, tmp_path / "saved", model, {}, options)
    prob = np.load(tmp_path / "saved" / "probability.npy")
    checked = 0
    for window in (1, 3, 5):
        for threshold in (float(np.nanquantile(prob, 0.2)), float(np.nanmedian(prob))):
            rerun = tmp_path / f"rerun_{window}_{threshold}"
            predict_slide(slide, rerun, model, {}, dataclasses.replace(options, nms_window=window,
                                                                       nms_threshold=threshold))
            expected = read_detections_csv(rerun / "detections.csv")
            probs, xs, ys = map_detections(tmp_path / "saved", window, threshold)
            assert len(probs) == len(expected[0]) > 0
            np.testing.assert_array_equal(np.round(xs).astype(int), expected[1])
            np.testing.assert_array_equal(np.round(ys).astype(int), expected[2])
            np.testing.assert_allclose(probs, expected[0], atol=5e-7)
            checked += 1
    assert checked == 6


def test_slide_split_keeps_the_class_ratio_and_regimes_are_nested():
    slides = {"tumor": [(f"t{i}", f"t{i}.xml") for i in range(20)], "normal": [(f"n{i}", None) for i in range(30)]}
    split = split_slides(slides, valid_fraction=0.2, seed=0)
    assert len(split["valid"]["tumor"]) == 4 and len(split["valid"]["normal"]) == 6
    for kind in ("tumor", "normal"):
        assert not set(split["valid"][kind]) & set(split["train"][kind])
    regimes = [set(regime_slides(split["train"], f)) for f in (1.0, 0.5, 0.25, 0.125)]
    assert [len(r) for r in regimes] == [40, 20, 10, 5]
    assert all(small <= big for small, big in zip(regimes[1:], regimes))
    assert sum(s.startswith("t") for s, _ in regimes[1]) == 8  # 50 % of 16 tumour slides: the ratio kept


def test_cli_names_the_missing_data_root(tmp_path, capsys):
    from equipath.cli import main

    assert main(["reproduce", "pcam-table1", "--out", str(tmp_path / "out")]) == 2
    assert "--data-root is required" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(TABLES))
@pytest.mark.parametrize("synthetic", [True, False])
def test_every_cell_of_every_table_is_a_valid_training_config(tmp_path, name, synthetic):
    """The declared plans: every cell's config (shipped config + the plan's changes) passes TrainConfig's
    strict validation, keys are unique, and every (row, column) of the paper has cells."""
    from equipath.reproduce.plan import Context
    from equipath.training import TrainConfig

    table = TABLES[name]
    root = str(tmp_path / "data")
    data = {"pcam": root, "root": root, "size": 32 if synthetic else 256, "patches": {c: {"root": root} for c in ("100%", "50%", "25%", "12.5%")}}
    context = Context(tmp_path, None if synthetic else tmp_path, synthetic, data=data)
    cells = table.cells(context, 3)
    assert len({c.key for c in cells}) == len(cells)
    for cell in cells:
        if name == "cells":  # the cell VAE's own trainer and config
            from equipath.cells.train import CellTrainConfig
            from equipath.training.config import build_config

            assert build_config(CellTrainConfig, cell.config).size == (32 if synthetic else 256)
            continue
        config = TrainConfig.from_dict({**cell.config, "out_dir": str(tmp_path / cell.key), "seed": cell.seed})
        assert config.data.dataset.startswith("synthetic") or config.data.dataset in ("pcam", "ocelot") or \
            not synthetic
    assert {(c.row, c.column) for c in cells} >= set(table.paper)
    assert sorted({c.seed for c in cells}) == [0, 1, 2]


def test_camelyon16_layout_is_read_with_annotations_of_any_case(tmp_path):
    from equipath.reproduce.camelyon16 import find_camelyon16

    for folder, names in {"training/tumor": ["tumor_001.tif"], "training/normal": ["normal_001.tif"],
                          "testing/images": ["test_001.tif", "test_002.tif"],
                          "training/lesion_annotations": ["tumor_001.xml"],
                          "testing/lesion_annotations": ["Test_001.xml"]}.items():
        (tmp_path / folder).mkdir(parents=True)
        for name in names:
            (tmp_path / folder / name).write_text("")
    found = find_camelyon16(tmp_path)
    assert [a.name for _, a in found["tumor"]] == ["tumor_001.xml"]
    assert [(s.name, a and a.name) for s, a in found["test"]] == [("test_001.tif", "Test_001.xml"),
                                                                    ("test_002.tif", None)]
    (tmp_path / "training/lesion_annotations/tumor_001.xml").unlink()
    with pytest.raises(FileNotFoundError, match="missing .*tumor_001.xml"):
        find_camelyon16(tmp_path)


@pytest.mark.slow
def test_the_fastest_table_runs_end_to_end_from_the_command_line(tmp_path, capsys):
    """CI runs one whole table as a user would: ``equipath reproduce ocelot-mf1 --synthetic`` (about 10 s)."""
    from equipath.cli import main

    assert main(["reproduce", "ocelot-mf1", "--synthetic", "--out", str(tmp_path / "t"), "--no-progress"]) == 0
    table = (tmp_path / "t" / "table.md").read_text()
    assert "SYNTHETIC" in table and "C4 isotropic U-Net" in table and "U-Net (baseline)" in table
    rows = (tmp_path / "t" / "table.csv").read_text().splitlines()
    assert len(rows) == 3  # header + the two rows of seed 002's comparison
    assert main(["reproduce", "ocelot-mf1", "--synthetic", "--out", str(tmp_path / "t"), "--no-progress"]) == 0
    assert (tmp_path / "t" / "table.md").read_text().split("Wall time")[0] == table.split("Wall time")[0]
