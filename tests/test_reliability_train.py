"""Training runs and their output folder: two concurrent runs into one ``out_dir`` give one clear refusal
and one intact run; a failed run leaves nothing; temporaries of a killed checkpoint write are cleaned."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from equipath.checkpoint import load_checkpoint
from equipath.data import write_synthetic_pcam
from equipath.outdir import LOCK_FILE
from equipath.training import TrainConfig, train
from equipath.training.trainer import _Run

TINY = ["--set", "model=densenet", "--set", "model_kwargs.growth=2", "--batch-size", "8",
        "--set", "batches_per_epoch=2", "--set", "eval_batch_size=32", "--set", "data.val_samples=16",
        "--no-progress", "--set", "data.synthetic_size={train: 32, valid: 16, test: 16}"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pcam")
    write_synthetic_pcam(root, {"train": 32, "valid": 16, "test": 16}, seed=0, progress=False)
    return root


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    return env


def _cli(data_root, out, *args):
    return [sys.executable, "-m", "equipath", "train", *TINY, "--set", f"data.root={data_root}", "--out", str(out),
            *args]


@pytest.mark.slow
def test_two_concurrent_trainings_one_refusal_one_intact_run(data_root, tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen(_cli(data_root, out, "--set", "epochs=2", "--seed", "1"), env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while first.poll() is None and time.monotonic() < deadline:
            try:
                if json.loads((out / LOCK_FILE).read_text())["pid"] == first.pid:
                    break
            except (OSError, ValueError):
                time.sleep(0.01)
        first.send_signal(signal.SIGSTOP)  # the first run is surely mid-way while the second starts
        second = subprocess.run(_cli(data_root, out, "--set", "epochs=1", "--seed", "2"), env=_env(),
                                capture_output=True, text=True, timeout=300)
    finally:
        first.send_signal(signal.SIGCONT)
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert second.returncode == 2, second.stderr
    line = second.stderr.strip()
    assert line.splitlines() == [line] and line.startswith("equipath train: error: output folder")
    assert f"is in use by process {first.pid} on " in line and "equipath train" in line
    for name in ("best.pt", "last.pt"):  # the first run's model, not the second's
        state = load_checkpoint(out / name)
        assert state["config"]["seed"] == 1 and state["config"]["epochs"] == 2
    assert load_checkpoint(out / "last.pt")["epoch"] == 2
    assert not (out / LOCK_FILE).exists()


def _config(data_root, out, **extra):
    return TrainConfig.from_dict({"model": "densenet", "model_kwargs": {"growth": 2}, "epochs": 1, "batch_size": 8,
                                  "batches_per_epoch": 2, "eval_batch_size": 16, "progress": False,
                                  "out_dir": str(out), "data": {"root": str(data_root), "val_samples": 16,
                                                                 "synthetic_size": {"train": 32, "valid": 16, "test": 16}},
                                  **extra})


def test_a_run_failing_in_its_first_epoch_leaves_nothing(data_root, tmp_path, monkeypatch):
    def fail(self, epoch):
        raise RuntimeError("boom")

    monkeypatch.setattr(_Run, "_train_epoch", fail)
    out = tmp_path / "deep" / "run"
    with pytest.raises(RuntimeError, match="boom"):
        train(_config(data_root, out))
    assert not (tmp_path / "deep").exists()  # no config.yaml, no lock file, no folder


def test_a_non_finite_training_loss_stops_the_run_before_saving(data_root, tmp_path, monkeypatch):
    monkeypatch.setattr(_Run, "_train_epoch", lambda self, epoch: (float("nan"), 8))
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="epoch 1: the training loss is nan; nothing of this epoch is saved"):
        train(_config(data_root, out))
    assert not out.exists()


def test_temporaries_of_a_killed_checkpoint_write_are_cleaned_on_the_next_run(data_root, tmp_path):
    out = tmp_path / "run"
    script = ("import os, sys\nfrom equipath.atomic import atomic_path\n"
              "with atomic_path(sys.argv[1]) as tmp:\n    tmp.write_bytes(b'')\n    os._exit(9)\n")
    subprocess.run([sys.executable, "-c", script, str(out / "last.pt")], timeout=120)
    (leftover,) = out.iterdir()
    assert leftover.name.startswith(".last.pt.tmp-") and leftover.stat().st_size == 0
    train(_config(data_root, out))
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "config.yaml", "last.pt", "metrics.csv"]
