"""``equipath analyze ...``: each command on tiny models writes numbers and figures that check out, labels
synthetic data, and turns bad input into one line and exit status 2."""

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from equipath.checkpoint import save_checkpoint
from equipath.cli import main
from equipath.data import write_pcam
from equipath.models import create_model



TINY = ["--model-arg", "growth=8", "--model-arg", "stem=1"]


@pytest.fixture
def checkpoint(tmp_path):
    """A tiny p4m DenseNet checkpoint as the trainer writes it, trained on synthetic data."""
    model = create_model("p4m_densenet", growth=8, stem=1)
    return save_checkpoint(tmp_path / "ckpt" / "best.pt", model, name="p4m_densenet", kwargs={"growth": 8, "stem": 1},
                           normalization={"mean": [0.7, 0.5, 0.7], "std": [0.2, 0.2, 0.2]}, task="classification",
                           config={"data": {"dataset": "synthetic_pcam"}})


def test_equivariance_command(tmp_path, checkpoint, capsys):
    out = tmp_path / "eq"
    assert main(["analyze", "equivariance", "--model", str(checkpoint), "--model", "densenet", *TINY,
                 "--no-local", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "p4m_densenet: p4m max error" in text and "NOT exact, lost at stem" in text
    summary = {m["model"]: m for m in json.loads((out / "equivariance.json").read_text())["models"]}
    assert summary["p4m_densenet"]["exact"] and summary["p4m_densenet"]["max_error"] < 1e-12
    assert summary["densenet"]["group"] == "p4m" and not summary["densenet"]["exact"]
    layers = json.loads((out / "equivariance_densenet.json").read_text())
    assert layers["layers"][0]["layer"] == "stem" and layers["layers"][-1]["layer"] == "(model)"
    assert json.loads((out / "equivariance_p4m_densenet.json").read_text())["synthetic"] is True
    assert (out / "equivariance_densenet.png").is_file() and (out / "equivariance_densenet.csv").is_file()


def test_stability_command_labels_synthetic_and_separates_the_models(tmp_path, checkpoint):
    out = tmp_path / "st"
    assert main(["analyze", "stability", "--model", str(checkpoint), "--model", "densenet", "--model-arg",
                 "densenet:growth=2", "--model-arg", "densenet:stem=3", "--size", "128", "--rotations", "2",
                 "--out", str(out)]) == 0
    saved = json.loads((out / "stability.json").read_text())
    assert saved["synthetic"] is True and saved["image_size"] == [128, 128]
    rows = {r["model"]: r for r in saved["stability"]}
    assert rows["p4m_densenet"]["p4m_8_mean_std"] < 1e-6 < rows["densenet"]["p4m_8_mean_std"]
    report = (out / "stability.md").read_text()
    assert "SYNTHETIC DATA" in report and "synthetic tile 0" in report and (out / "stability.png").is_file()


def test_stability_on_a_user_image_is_not_labelled_synthetic(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (140, 150, 3), dtype=np.uint8)).save(tmp_path / "region.png")
    out = tmp_path / "st"
    assert main(["analyze", "stability", "--model", "p4m_densenet", *TINY, "--image", str(tmp_path / "region.png"),
                 "--rotations", "1", "--out", str(out)]) == 0
    saved = json.loads((out / "stability.json").read_text())
    assert saved["synthetic"] is False and saved["image_size"] == [128, 128]  # largest admissible square
    assert "SYNTHETIC" not in (out / "stability.md").read_text()


def test_tta_and_redundancy_commands(tmp_path):
    out = tmp_path / "tta"
    assert main(["analyze", "tta", "--model", "densenet", "--model-arg", "growth=2", "--model-arg", "stem=3",
                 "--synthetic-size", "4", "--rotations", "0", "--stability-images", "1", "--out", str(out),
                 "--no-progress"]) == 0
    rows = {r["model"]: r for r in json.loads((out / "tta.json").read_text())["rows"]}
    assert rows["densenet+tta"]["p4m_std"] < 1e-6 < rows["densenet"]["p4m_std"]
    assert rows["densenet"]["synthetic"] and (out / "tta.png").is_file() and (out / "tta.csv").is_file()
    rng = np.random.default_rng(0)  # user data in the PCam format: the same command, not labelled synthetic
    write_pcam(tmp_path / "pcam", "test", rng.integers(0, 255, (4, 96, 96, 3), dtype=np.uint8), [0, 1, 0, 1])
    out = tmp_path / "tta_user"
    assert main(["analyze", "tta", "--model", "p4m_densenet", *TINY, "--data", str(tmp_path / "pcam"),
                 "--rotations", "0", "--stability-images", "1", "--out", str(out), "--no-progress"]) == 0
    saved = json.loads((out / "tta.json").read_text())
    assert saved["synthetic"] is False and [r["model"] for r in saved["rows"]] == ["p4m_densenet"]
    assert saved["rows"][0]["images"] == 4 and "SYNTHETIC" not in (out / "tta.md").read_text()
    out = tmp_path / "red"
    assert main(["analyze", "redundancy", "--model", "p4m_densenet", "--model", "densenet", *TINY,
                 "--out", str(out)]) == 0
    saved = json.loads((out / "redundancy.json").read_text())
    assert {m["model"] for m in saved["models"]} == {"p4m_densenet", "densenet"}
    assert all(0 <= m["fraction"] <= 1 for m in saved["models"]) and (out / "redundancy.png").is_file()


def test_efficiency_command_from_yaml(tmp_path, capsys):
    plan = {"models": [{"model": "densenet", "label": "tiny", "model_kwargs": {"growth": 2, "stem": 3}}],
            "fractions": [1.0], "seeds": [0], "metric": "accuracy",
            "train": {"epochs": 1, "batch_size": 4, "batches_per_epoch": 1,
                      "normalization_mean": [0.5, 0.5, 0.5], "normalization_std": [0.25, 0.25, 0.25],
                      "data": {"synthetic_size": {"train": 8, "valid": 4, "test": 4}, "val_samples": None}}}
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan))
    out = tmp_path / "eff"
    assert main(["analyze", "efficiency", "--config", str(tmp_path / "plan.yaml"), "--out", str(out),
                 "--set", "eval_batch_size=4", "--no-progress"]) == 0
    assert "| tiny | 100% |" in capsys.readouterr().out
    resolved = yaml.safe_load((out / "plan.yaml").read_text())
    assert resolved["train"]["eval_batch_size"] == 4 and resolved["train"]["progress"] is False
    assert json.loads((out / "summary.json").read_text())["metric"] == "accuracy"


@pytest.mark.parametrize("argv, message", [
    (["equivariance", "--model", "no_such_model"], "unknown model"),
    (["equivariance", "--model", "missing.pt"], "does not exist"),
    (["stability"], "--model"),
    (["stability", "--model", "p4m_densenet", "--model", "unet", "--model-arg", "unet:width=4"], "no square side"),
    (["efficiency", "--model", "densenet", "--set", "nonsense"], "--set nonsense: expected KEY=VALUE"),
    (["efficiency", "--model", "densenet", "--set", "epochz=3"], "--set epochz: unknown config key 'epochz'"),
])
def test_bad_input_is_one_line(tmp_path, capsys, argv, message):
    assert main(["analyze", *argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("equipath analyze: error:")
