"""Sample-efficiency runner: every run trained on its nested regime, test metrics collected, summary
statistics and the plot, resumable with finished runs skipped and a redone run reproducing its numbers."""

import csv
import json
import math
import shutil

import numpy as np
import pytest

from equipath.analysis import EfficiencyPlan, ModelRun, run_efficiency, summarize
from equipath.evaluation import evaluate_checkpoint



BASE = {"epochs": 1, "batch_size": 4, "batches_per_epoch": 1, "eval_batch_size": 8, "progress": False,
        "normalization_mean": [0.7, 0.5, 0.7], "normalization_std": [0.2, 0.2, 0.2],
        "data": {"dataset": "synthetic_pcam", "synthetic_size": {"train": 128, "valid": 8, "test": 8},
                 "val_samples": None}}


def test_summarize_hand_computed():
    rows = [{"label": "a", "model": "m", "fraction": 1.0, "seed": s, "synthetic": True, "auc": v, "nll": 2 * v}
            for s, v in enumerate([0.6, 0.8, 1.0])]
    rows.append({"label": "a", "model": "m", "fraction": 0.5, "seed": 0, "synthetic": True, "auc": 0.5, "nll": 1.0})
    summary = {r["fraction"]: r for r in summarize(rows)}
    assert summary[1.0]["n"] == 3 and summary[1.0]["auc_mean"] == pytest.approx(0.8)
    assert summary[1.0]["auc_std"] == pytest.approx(0.2)  # sample std of 0.6, 0.8, 1.0
    assert summary[1.0]["nll_std"] == pytest.approx(0.4)
    assert summary[0.5]["auc_std"] == 0.0 and summary[0.5]["synthetic"] is True


def test_plan_checks(tmp_path):
    plan = EfficiencyPlan((ModelRun("densenet", augment=("d4",)),), {}, str(tmp_path), seeds=(3,))
    config = plan.config(plan.models[0], 0.25, 3)
    assert (config.seed, config.data.fraction, config.data.augment) == (3, 0.25, ("d4",))
    assert config.data.root == str(tmp_path / "data") and config.out_dir.endswith("densenet+d4/f0.25/s3")
    with pytest.raises(ValueError, match="fractions"):
        EfficiencyPlan((ModelRun("densenet"),), {}, str(tmp_path), fractions=(1.5,))
    with pytest.raises(ValueError, match="distinct"):
        EfficiencyPlan((ModelRun("densenet"), ModelRun("densenet")), {}, str(tmp_path))
    with pytest.raises(ValueError, match="unknown key"):
        run_efficiency(EfficiencyPlan((ModelRun("densenet"),), {"learning_rate": 1}, str(tmp_path)))


def test_runs_collect_metrics_and_resume(tmp_path):
    plan = EfficiencyPlan((ModelRun("densenet", model_kwargs={"growth": 2, "stem": 3}),), BASE, str(tmp_path),
                          fractions=(1.0, 0.5), seeds=(0, 1))
    rows = run_efficiency(plan, progress=False)
    assert [(r["fraction"], r["seed"]) for r in rows] == [(1.0, 0), (1.0, 1), (0.5, 0), (0.5, 1)]
    # the regimes: 128 synthetic patches on four pseudo-slides of 32; half keeps two whole slides
    assert [r["train_items"] for r in rows] == [128, 128, 64, 64]
    assert all(r["synthetic"] and r["test_items"] == 8 for r in rows)
    # each row is the evaluation of its run's best checkpoint on the test split
    run_dir = tmp_path / "densenet" / "f0.5" / "s1"
    direct = evaluate_checkpoint(run_dir / "best.pt", tmp_path / "data", split="test", n_bootstrap=0, progress=False)
    for key in ("nll", "accuracy", "auc"):
        assert rows[3][key] == pytest.approx(direct["metrics"][key], rel=1e-6, abs=1e-9)
    # the summary files agree with the rows
    with open(tmp_path / "summary.csv") as f:
        summary = {float(r["fraction"]): r for r in csv.DictReader(f)}
    nll = [r["nll"] for r in rows if r["fraction"] == 0.5]
    assert float(summary[0.5]["nll_mean"]) == pytest.approx(np.mean(nll))
    assert float(summary[0.5]["nll_std"]) == pytest.approx(np.std(nll, ddof=1))
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["metric"] == "auc" and saved["synthetic"] is True
    assert "SYNTHETIC DATA" in (tmp_path / "summary.md").read_text()
    assert (tmp_path / "efficiency.png").stat().st_size > 1000

    # resume: finished runs are skipped; a deleted run is trained again and reproduces its numbers (CPU)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("densenet/*/*/best.pt")}
    shutil.rmtree(run_dir)
    again = run_efficiency(plan, progress=False)
    for key in ("nll", "accuracy", "auc"):
        assert [r[key] for r in again] == pytest.approx([r[key] for r in rows], nan_ok=True)
    assert [p for p, t in stamps.items() if p.stat().st_mtime_ns != t] == [run_dir / "best.pt"]
    assert (run_dir / "result.json").is_file() and not math.isnan(again[3]["nll"])
