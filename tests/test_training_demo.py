"""The quick-start job end to end at a tiny size: the report exists, is labelled synthetic, holds the measured
numbers of this run, the figures, and an equivariance table that tells the models apart."""

import json

import pytest
import torch

from equipath.cli import main
from equipath.demo import SECTIONS, DemoConfig, run_demo
from equipath.evaluation.report import Section


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY = dict(model_kwargs={"p4m_densenet": {"growth": 8}, "densenet": {"growth": 2}}, n_train=64, n_valid=16,
            n_test=32, epochs=1, batch_size=8, batches_per_epoch=2, bootstrap=100, equivariance_patches=2,
            fractions=(1.0, 0.5), progress=False)


def test_demo_writes_a_synthetic_report_of_measured_numbers(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("equipath.demo.SECTIONS", SECTIONS + [lambda run: calls.append(run) or
                                                              Section("Extra", "added by a test")])
    run = run_demo(DemoConfig(out_dir=str(tmp_path / "demo"), **TINY))
    text = run.report_path.read_text()
    assert run.report_path == tmp_path / "demo" / "report.md"
    assert "SYNTHETIC DATA" in text.splitlines()[2] and text.count("synthetic") >= 4
    for figure in ("metric_vs_fraction.png", "examples.png"):
        assert f"]({figure})" in text and (tmp_path / "demo" / figure).stat().st_size > 1000
    assert "## Extra\n\nadded by a test" in text and calls == [run]
    payload = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert payload["synthetic"] is True and len(payload["results"]) == 4
    for r in payload["results"]:  # every table number comes from this run's measurements
        auc, (lo, hi) = r["metrics"]["auc"], r["ci95"]["auc"]
        assert f"| {r['model']} | {r['fraction']:g} | 16 | 1 |" in text
        assert f"{auc:.4f} [{lo:.4f}, {hi:.4f}]" in text
        assert (tmp_path / "demo" / "runs" / f"{r['model']}_{r['fraction']:g}" / "best.pt").is_file()
    errors = {(r["model"], r["fraction"]): r["equivariance_max_relative_error"] for r in payload["results"]}
    assert errors[("p4m_densenet", 1.0)] < 1e-5 and errors[("p4m_densenet", 0.5)] < 1e-5
    assert errors[("densenet", 1.0)] > 1e-4 and errors[("densenet", 0.5)] > 1e-4
    assert f"| total | {payload['timings_s']['total']:.1f} |" in text


def test_demo_command_prints_where_the_report_is(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("equipath.cli.demo.DemoConfig",
                        lambda **kw: DemoConfig(**{**kw, **TINY, "fractions": (1.0,), "models": ("p4m_densenet",)}))
    assert main(["demo", "--out", str(tmp_path / "d"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("SYNTHETIC-data demo finished in") and out.rstrip().endswith(str(tmp_path / "d" / "report.md"))
    assert main(["demo", "--out", str(tmp_path / "d"), "--no-progress"]) == 0  # its own folder: runs again
