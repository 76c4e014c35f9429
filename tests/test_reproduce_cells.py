"""``equipath reproduce cells``: seed 003's VAE folds (no test patch trains its fold's VAE) and a tiny
SYNTHETIC run of the plan to its table."""

import csv
import dataclasses
import json

import pytest

from equipath.reproduce import TABLES, run_table
from equipath.reproduce import cells as plan


def test_cells_plan_declares_every_row_of_the_figures_with_six_vae_folds(tmp_path):
    from equipath.reproduce.plan import Context

    cells = TABLES["cells"].cells(Context(tmp_path, tmp_path, False, data={"size": 256}), plan.VAE_FOLDS)
    rows = list(dict.fromkeys(c.row for c in cells))
    assert rows == ["baseline"] + [f"{v} w={w}" for v in ("only-STN", "inv-HNet", "equ-HNet") for w in (0.2, 0.5, 0.9)]
    assert len(cells) == 10 * 6 and {c.config["size"] for c in cells} == {256}
    assert all(c.config["rotation_weight"] == (0 if c.row == "baseline" else float(c.row.split("=")[1]))
               for c in cells)


@pytest.mark.slow
def test_cells_plan_runs_tiny_synthetic(tmp_path, monkeypatch):
    monkeypatch.setitem(plan.SYNTHETIC, "n_unlabelled", 40)
    monkeypatch.setitem(plan.SYNTHETIC, "n_labelled", 30)
    monkeypatch.setitem(plan.SYNTHETIC, "train", dict(plan.SYNTHETIC["train"], epochs=1))
    base = TABLES["cells"]
    table = dataclasses.replace(base, cells=lambda ctx, seeds: [c for c in base.cells(ctx, seeds)
                                                                if c.row in ("baseline", "equ-HNet w=0.5")])
    rows = run_table(table, tmp_path / "out", synthetic=True, progress=False, device="cpu")
    assert [(r["row"], r["seeds"]) for r in rows] == [("baseline", 2), ("equ-HNet w=0.5", 2)]
    with open(tmp_path / "out" / "table.csv") as f:
        lines = list(csv.DictReader(f))
    assert {line["source"] for line in lines} == {"SYNTHETIC"} and lines[0]["paper_ssim"] == "figure only"
    for key in json.loads((tmp_path / "out" / "plan.json").read_text())["cells"]:
        scores = json.loads((tmp_path / "out" / "cells" / key / "scores.json").read_text())
        assert scores["n_test"] == 20 and scores["n_train"] + scores["n_val"] == 20  # 2 folds of 40
        assert 0 <= scores["metrics"]["f1_mean"] <= 1 and scores["metrics"]["kl_rotation"] >= 0
    assert float(lines[0]["ssim_seed_sd"]) >= 0  # the SD over the two VAE folds
    assert "Intervals: none." in (tmp_path / "out" / "table.md").read_text()
