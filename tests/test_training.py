"""The training loop end to end on a tiny problem: loss decreases, best checkpoint by validation loss, the
plateau rule, exact resume after a kill, and a 2-process gloo torchrun run."""

import csv
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from equipath.checkpoint import load_checkpoint, load_model
from equipath.data import PCamDataset, write_synthetic_pcam
from equipath.training import TrainConfig, train
from equipath.training.trainer import plateau_scheduler

TINY = ["--set", "model=densenet", "--set", "model_kwargs.growth=2", "--batch-size", "8",
        "--set", "batches_per_epoch=3", "--set", "eval_batch_size=32", "--set", "data.val_samples=32",
        "--set", "lr=3e-3", "--set", "lr_patience=1", "--no-progress",
        "--set", "data.synthetic_size={train: 96, valid: 32, test: 32}"]
EPOCHS = 3


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    return env


def _cli(*args):
    return [sys.executable, "-m", "equipath", "train", *TINY, *args]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pcam")
    write_synthetic_pcam(root, {"train": 96, "valid": 32, "test": 32}, seed=0, progress=False)
    return root


@pytest.fixture(scope="module")
def straight_run(data_root, tmp_path_factory):
    """An uninterrupted run of EPOCHS epochs, through the command line."""
    out = tmp_path_factory.mktemp("straight") / "run"
    proc = subprocess.run(_cli("--set", f"data.root={data_root}", "--out", str(out), "--set", f"epochs={EPOCHS}"),
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out


def _history(out):
    with open(out / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def test_loss_decreases_on_a_tiny_problem(straight_run):
    history = _history(straight_run)
    assert [row["epoch"] for row in history] == list(range(1, EPOCHS + 1))
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert min(row["val_loss"] for row in history[1:]) < history[0]["val_loss"]


def test_best_checkpoint_has_the_lowest_validation_loss(straight_run, data_root):
    history = _history(straight_run)
    best_row = min(history, key=lambda row: row["val_loss"])
    best = load_checkpoint(straight_run / "best.pt")
    assert best["epoch"] == best_row["epoch"] == best["best_epoch"]
    assert "optimizer" not in best and load_checkpoint(straight_run / "last.pt")["epoch"] == EPOCHS
    # the stored weights reproduce the validation loss recorded for that epoch
    model, state = load_model(straight_run / "best.pt", normalized=False)  # normalised by hand below
    data = PCamDataset(data_root, "valid")
    x = torch.stack([data[i][0] for i in range(len(data))])
    y = torch.stack([data[i][1] for i in range(len(data))])
    mean, std = (torch.tensor(state["normalization"][k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    with torch.no_grad():
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model((x - mean) / std)[:, 0], y)
    assert float(loss) == pytest.approx(best_row["val_loss"], rel=1e-5)
    assert state["group"] == "z2" and state["task"] == "classification"


def test_learning_rate_follows_the_plateau_rule_in_a_run(straight_run):
    history = _history(straight_run)
    lr, best, bad = 3e-3, float("inf"), 0
    for row in history:  # lr_patience 1: halve after every epoch that does not improve
        assert row["lr"] == pytest.approx(lr)
        if row["val_loss"] < best:
            best, bad = row["val_loss"], 0
        else:
            bad += 1
            if bad == 1:
                lr, bad = lr / 2, 0


def test_plateau_scheduler_halves_after_patience_epochs_without_improvement():
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = plateau_scheduler(opt, patience=3, factor=0.5)
    lrs = []
    for loss in [1.0, 0.9, 0.9, 0.95, 0.91, 0.8, 0.85, 0.85, 0.85, 0.85, 0.85, 0.85]:
        sched.step(loss)
        lrs.append(opt.param_groups[0]["lr"])
    # improvements at epochs 1, 2, 6; epochs 3-5 do not improve -> halved at the end of epoch 5;
    # epochs 7-9 -> halved at the end of 9; epochs 10-12 -> halved at the end of 12
    assert lrs == [1e-3] * 4 + [5e-4] * 4 + [2.5e-4] * 3 + [1.25e-4]


def _rows(out):
    path = out / "metrics.csv"
    return len(path.read_text().splitlines()) - 1 if path.exists() else 0


def test_resume_after_a_kill_gives_the_uninterrupted_result(straight_run, data_root, tmp_path):
    out = tmp_path / "run"
    cmd = _cli("--set", f"data.root={data_root}", "--out", str(out), "--set", f"epochs={EPOCHS}")
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while _rows(out) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = load_checkpoint(out / "last.pt")["epoch"]
    assert 1 <= killed_at < EPOCHS
    resumed = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {out / 'last.pt'} after epoch {killed_at}" in resumed.stderr
    a, b = load_checkpoint(straight_run / "last.pt"), load_checkpoint(out / "last.pt")
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    timing = {"seconds", "patches_per_s"}
    strip = lambda h: [{k: v for k, v in row.items() if k not in timing} for row in h]
    assert strip(a["history"]) == strip(b["history"])
    assert load_checkpoint(straight_run / "best.pt")["epoch"] == load_checkpoint(out / "best.pt")["epoch"]


def test_a_finished_run_refuses_a_different_config(straight_run, data_root):
    config = TrainConfig.from_dict({"model": "densenet", "model_kwargs": {"growth": 4},
                                    "out_dir": str(straight_run), "data": {"root": str(data_root)}})
    with pytest.raises(ValueError, match="config differs in .*model_kwargs"):
        train(config)


def test_segmentation_training_with_dice_ce(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = TrainConfig.from_dict({
            "model": "iso_unet", "model_kwargs": {"width": 4}, "loss": "dice_ce", "epochs": 2, "batch_size": 4,
            "batches_per_epoch": 3, "progress": False, "out_dir": str(tmp_path / "seg"),
            "data": {"dataset": "synthetic_segmentation", "patch_size": 32, "augment": ["d4", "noise"],
                     "synthetic_size": {"train": 16, "valid": 4, "test": 4}}})
        result = train(config)
    finally:
        torch.set_num_threads(threads)
    assert [row["epoch"] for row in result.history] == [1, 2]
    row = result.history[-1]
    assert {"val_loss", "val_dice", "val_jaccard", "val_miou", "val_f1"} <= set(row)
    assert "val_hausdorff" not in row  # distances are left to `equipath evaluate`
    state = load_checkpoint(result.last)
    assert state["task"] == "segmentation" and state["group"] == "p4m"
    assert state["config"]["loss"] == "dice_ce" and len(state["normalization"]["mean"]) == 3


def test_torchrun_two_gloo_processes_train_one_checkpoint(data_root, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "equipath", "train", *TINY, "--set", f"data.root={data_root}", "--out", str(out),
           "--set", "epochs=2", "--device", "cpu"]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rank 0 of 2 on cpu (gloo)" in proc.stderr and "rank 1 of 2 on cpu (gloo)" in proc.stderr
    assert proc.stderr.count("epoch 2/2: train loss") == 1  # rank 0 logs the epoch lines, the others at -v
    assert proc.stdout.count("best validation loss") == 1
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "config.yaml", "last.pt", "metrics.csv"]
    state = load_checkpoint(out / "last.pt")
    assert state["epoch"] == 2 and len(state["history"]) == 2
    assert all(torch.isfinite(torch.tensor(row["train_loss"])) for row in state["history"])
    model, _ = load_model(out / "best.pt")
    assert model(torch.rand(2, 3, 96, 96)).shape == (2, 1)
