"""The quick-start experiment end to end at a tiny size: the report exists, is labelled synthetic, holds the
measured numbers of this run (per-cell spread, curves, paired comparisons for both tasks, stability maps),
and its comparison sentences follow the numbers."""

import json
import math

import numpy as np
import pytest

from equipath.analysis.efficiency import ModelRun
from equipath.cli import main
from equipath.demo import DemoConfig, run_demo
from equipath.demo.report import comparison_sentence, paired_difference
from equipath.evaluation import ClassificationMetric

TINY = dict(classifiers=(ModelRun("p4m_densenet", model_kwargs={"growth": 8, "stem": 1}),
                         ModelRun("densenet", model_kwargs={"growth": 2, "stem": 3}, augment=("d4",))),
            segmenters=(ModelRun("p4m_unet", model_kwargs={"width": 2}), ModelRun("unet", model_kwargs={"width": 2})),
            fractions=(1.0, 0.5), seeds=(0, 1), n_train=64, n_valid=16, n_test=24, epochs=1, batch_size=8,
            batches_per_epoch=1, tiles=(4, 2, 3), tile_size=33, seg_epochs=1, seg_batch_size=2,
            seg_batches_per_epoch=1, bootstrap=50, stability_cells=2, progress=False)


@pytest.mark.slow
def test_demo_writes_a_synthetic_report_of_measured_numbers(tmp_path):
    run = run_demo(DemoConfig(out_dir=str(tmp_path / "demo"), **TINY))
    text = run.report_path.read_text()
    assert run.report_path == tmp_path / "demo" / "report.md"
    assert "SYNTHETIC DATA" in text.splitlines()[2] and text.count("synthetic") >= 6
    for figure in ("classification_vs_fraction.png", "segmentation_vs_fraction.png", "stability.png", "examples.png"):
        assert f"]({figure})" in text and (tmp_path / "demo" / figure).stat().st_size > 1000
    payload = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert payload["synthetic"] is True and len(payload["runs"]) == 2 * 2 * 2 * 2
    for arm, metric in (("classification", "auc"), ("segmentation", "dice")):
        runs = [r for r in payload["runs"] if r["arm"] == arm]
        for label in {r["label"] for r in runs}:
            values = [r[metric] for r in runs if r["label"] == label and r["fraction"] == 1.0]
            mean, std = np.mean(values), np.std(values, ddof=1)
            assert f"| {label} | 1 | " in text and f"{mean:.4f} +- {std:.4f}" in text  # the table is these runs
        compared = [c for c in payload["comparisons"] if c["arm"] == arm]
        assert len(compared) == 2 and all(c["seeds"] == 2 and c["metric"] == metric for c in compared)
        for c in compared:
            assert comparison_sentence(c) in text
            assert math.isnan(c["low"]) or c["low"] <= c["high"]
    assert f"| total | {payload['timings_s']['total']:.1f} |" in text
    assert (tmp_path / "demo" / "runs" / "classification" / "p4m_densenet" / "f0.5" / "s1" / "best.pt").is_file()
    again = run_demo(DemoConfig(out_dir=str(tmp_path / "demo"), **TINY), report_only=True)  # no training
    head = "### Equivariance"  # below it, the equivariance table draws fresh random inputs
    assert again.report_path.read_text().split(head)[0] == text.split(head)[0]
    last = tmp_path / "demo" / "runs" / "segmentation" / "unet" / "f0.5" / "s1"  # the last run of the schedule
    (last / "demo_result.json").unlink()
    with pytest.raises(FileNotFoundError, match="no finished run"):
        run_demo(DemoConfig(out_dir=str(tmp_path / "demo"), **TINY), report_only=True)
    partial = run_demo(DemoConfig(out_dir=str(tmp_path / "demo"), **TINY), report_only=True, partial=True)
    assert "15 of the 16 planned runs finished" in partial.report_path.read_text()
    resumed = run_demo(DemoConfig(out_dir=str(tmp_path / "demo"), **TINY), resume=True)  # trains the one missing
    assert len(resumed.runs) == 16 and (last / "demo_result.json").is_file()
    assert [r.train_seconds for r in resumed.runs[:15]] == [r.train_seconds for r in partial.runs]


def test_paired_difference_and_its_sentence():
    rng = np.random.default_rng(0)
    labels = np.tile([0.0, 1.0], 100)
    good = [{"logit": 4 * (labels - 0.5) + rng.normal(0, 1, 200), "label": labels} for _ in range(3)]
    poor = [{"logit": 0.5 * (labels - 0.5) + rng.normal(0, 1, 200), "label": labels} for _ in range(3)]
    compute = ClassificationMetric.compute
    result = paired_difference(good, poor, compute, "auc", n=200)
    expected = np.mean([compute(g)["auc"] - compute(p)["auc"] for g, p in zip(good, poor)])
    assert result["difference"] == pytest.approx(expected) and 0 < result["low"] < expected < result["high"]
    same = paired_difference(good, good, compute, "auc", n=50)
    assert same["difference"] == same["low"] == same["high"] == 0.0
    base = {"arm": "classification", "metric": "auc", "a": "p4m", "b": "base", "fraction": 0.25, "train_items": 32,
            "seeds": 3, "items": 200}
    assert "no detectable difference" in comparison_sentence({**base, "difference": 0.01, "low": -0.02, "high": 0.04})
    assert "`p4m` has a higher test AUC" in comparison_sentence({**base, "difference": 0.05, "low": 0.01, "high": 0.09})
    assert "`base` is better" in comparison_sentence({**base, "difference": -0.05, "low": -0.09, "high": -0.01})
    with pytest.raises(ValueError, match="same seeds"):
        paired_difference(good, poor[:2], compute, "auc")


def test_demo_command_prints_where_the_report_is(tmp_path, capsys, monkeypatch):
    tiny = {**TINY, "classifiers": TINY["classifiers"][:1], "segmenters": (), "fractions": (1.0,), "seeds": (0,)}
    monkeypatch.setattr("equipath.cli.demo.DemoConfig", lambda **kw: DemoConfig(**{**kw, **tiny}))
    assert main(["demo", "--out", str(tmp_path / "d"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("SYNTHETIC-data demo finished in") and out.rstrip().endswith(str(tmp_path / "d" / "report.md"))
    assert main(["demo", "--out", str(tmp_path / "d"), "--no-progress"]) == 0  # its own folder: runs again
    assert DemoConfig().full().seeds == (0, 1, 2, 3, 4)
