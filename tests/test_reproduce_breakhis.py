"""``equipath reproduce breakhis``: the SYNTHETIC BreakHis tree, patient-wise folds without a shared patient,
fine-tuning from the pre-trained weights, and the table beside the paper's numbers."""

import csv
import dataclasses
import json

import numpy as np
import pytest

from equipath.checkpoint import load_checkpoint
from equipath.data.breakhis import BreakHisDataset, patient_splits
from equipath.reproduce import TABLES, run_table
from equipath.reproduce import breakhis as plan


def test_synthetic_breakhis_tree_reads_back_at_the_pretraining_resolution(tmp_path):
    root = plan.write_synthetic_breakhis(tmp_path, patients=2, images=1, magnifications=("40X", "100X"),
                                         size=(32, 48))
    data = BreakHisDataset(root, "100X", mpp=plan.PCAM_MPP)
    assert data.labels.tolist() == [0, 0, 1, 1] and len(set(data.patients)) == 4
    assert tuple(data[0][0].shape) == (3, 32, 48)  # upsampled to 100X, resampled back to 0.972 um/px
    assert tuple(BreakHisDataset(root, "40X")[0][0].shape) == (3, 63, 95)  # stored: 0.972 / 0.4924 = 1.97x


def test_breakhis_folds_share_no_patient(tmp_path):
    root = plan.write_synthetic_breakhis(tmp_path, patients=4, images=2, size=(32, 32))
    data = BreakHisDataset(root, "40X")
    for fold in patient_splits(data.patients, data.labels, repetitions=5, seed=0):
        train = {data.patients[i] for i in fold["train"]}
        test = {data.patients[i] for i in fold["test"]}
        assert not train & test and len(train) == 6 and len(test) == 2  # round(0.7 * 4) = 3 per class
        assert set(data.labels[fold["test"]]) == {0, 1}


@pytest.mark.slow
def test_breakhis_plan_runs_tiny_and_writes_the_table_beside_the_paper(tmp_path, monkeypatch):
    tiny = dict(plan.SYNTHETIC, patients=4, images=1, magnifications=("40X",), tile=(96, 112),
                pretrain_sizes={"train": 32, "valid": 16, "test": 16}, crops_per_image=2, test_crops=2,
                pretrain={"epochs": 1, "batch_size": 8, "batches_per_epoch": 1, "eval_batch_size": 32},
                finetune={"lr": 1e-4, "epochs": 1, "batch_size": 4, "batches_per_epoch": 1, "eval_batch_size": 32})
    monkeypatch.setattr(plan, "SYNTHETIC", tiny)
    monkeypatch.setitem(plan.PCAM_SYNTHETIC, "val_samples", 16)
    monkeypatch.setitem(plan.PCAM_SYNTHETIC, "growth", {"p4m_densenet": 8, "densenet": 4})
    table = dataclasses.replace(TABLES["breakhis"], prepare=plan._prepare, cells=plan._cells)
    rows = run_table(table, tmp_path / "out", synthetic=True, seeds=2, progress=False, n_bootstrap=20,
                     device="cpu")
    assert [(r["row"], r["column"], r["seeds"]) for r in rows] == [("P4M-DenseNet", "40X", 2), ("DenseNet", "40X", 2)]
    with open(tmp_path / "out" / "table.csv") as f:
        lines = list(csv.DictReader(f))
    assert {line["source"] for line in lines} == {"SYNTHETIC"}
    assert [line["paper_accuracy"] for line in lines] == ["96.1 ± 3.2", "93.5 ± 4.7"]
    assert "SYNTHETIC" in (tmp_path / "out" / "table.md").read_text()
    recorded = json.loads((tmp_path / "out" / "plan.json").read_text())
    for key, cell in recorded["cells"].items():
        folder = tmp_path / "out" / "cells" / key
        scores = json.loads((folder / "scores.json").read_text())
        assert scores["n_test"] == 2 and scores["n_test_patients"] == 2 and 0 <= scores["metrics"]["accuracy"] <= 1
        # fine-tuned from the pre-trained checkpoint of its row, on crops of that fold's training patients
        assert cell["config"]["init_from"] == recorded["data"]["pretrained"][cell["row"]]
        state = load_checkpoint(folder / "train" / "last.pt")
        source = load_checkpoint(cell["config"]["init_from"])
        assert state["normalization"] == source["normalization"]
        with np.load(folder / "test_correct.npz") as saved:
            test_patients = set(saved["patients"].tolist())
        data = BreakHisDataset(recorded["data"]["breakhis"], "40X")
        fold = patient_splits(data.patients, data.labels, repetitions=2, seed=0)[cell["seed"]]
        assert test_patients == {data.patients[i] for i in fold["test"]}
    # a second run skips every finished cell and writes the same table
    before = (tmp_path / "out" / "table.csv").read_text()
    run_table(table, tmp_path / "out", synthetic=True, seeds=2, progress=False, n_bootstrap=20, device="cpu")
    assert (tmp_path / "out" / "table.csv").read_text() == before


def test_breakhis_real_data_layout_is_checked(tmp_path):
    with pytest.raises(FileNotFoundError, match="breakhis does not exist"):
        run_table(TABLES["breakhis"], tmp_path / "out", tmp_path)
    (tmp_path / "breakhis").mkdir()
    with pytest.raises(FileNotFoundError, match="pretrained/pcam_p4m_densenet.pt nor the PCam folder"):
        run_table(TABLES["breakhis"], tmp_path / "out2", tmp_path)
