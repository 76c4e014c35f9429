"""Resume with a learning-rate plateau pending: the scheduler's state (best loss, bad-epoch count) must travel
in last.pt, or the resumed run halves the learning rate later than the uninterrupted one.

``tests/test_training.py`` kills a real process, but its run never has a plateau pending at the kill, so a
resume that forgets the scheduler passes it. Here the interrupted run stops after epoch 2 by finishing a
2-epoch run (its last.pt is exactly what a kill after the epoch-2 checkpoint leaves: ``epochs`` is a key a
resume may change) and is resumed to 4 epochs; the seeded problem has validation losses 0.70, 1.04, 1.74, ...
so after epoch 2 one bad epoch is counted and the second (epoch 3) halves the rate.
"""

import pytest
import torch

from equipath.checkpoint import load_checkpoint
from equipath.data import write_synthetic_pcam
from equipath.training import TrainConfig, train

EPOCHS, STOP = 4, 2


def _config(root, out, epochs):
    return TrainConfig.from_dict({
        "model": "densenet", "model_kwargs": {"growth": 2}, "batch_size": 8, "batches_per_epoch": 3,
        "eval_batch_size": 32, "lr": 0.03, "lr_patience": 2, "lr_factor": 0.5, "epochs": epochs,
        "normalization_mean": [0.5, 0.5, 0.5], "normalization_std": [0.25, 0.25, 0.25],
        "progress": False, "device": "cpu", "out_dir": str(out),
        "data": {"root": str(root), "val_samples": 32, "synthetic_size": {"train": 96, "valid": 32, "test": 32}}})


@pytest.mark.slow
def test_resume_with_a_plateau_pending_halves_the_rate_when_the_uninterrupted_run_does(tmp_path):
    root = tmp_path / "pcam"
    write_synthetic_pcam(root, {"train": 96, "valid": 32, "test": 32}, seed=0, progress=False)
    straight = train(_config(root, tmp_path / "straight", EPOCHS))

    stopped = train(_config(root, tmp_path / "resumed", STOP))
    pending = load_checkpoint(stopped.last)["scheduler"]
    # the premise: a plateau is pending at the stop, and the uninterrupted run halves the rate after it
    assert pending["num_bad_epochs"] >= 1, "no plateau pending at the stop: the test would not see the bug"
    lrs = [row["lr"] for row in straight.history]
    assert lrs[STOP] == lrs[0] and min(lrs[STOP + 1:]) < lrs[0], lrs

    resumed = train(_config(root, tmp_path / "resumed", EPOCHS))
    assert [row["lr"] for row in resumed.history] == lrs
    drop = {"seconds", "patches_per_s"}
    assert [{k: v for k, v in row.items() if k not in drop} for row in resumed.history] == \
        [{k: v for k, v in row.items() if k not in drop} for row in straight.history]
    a, b = load_checkpoint(straight.last), load_checkpoint(resumed.last)
    assert a["scheduler"] == b["scheduler"]
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
