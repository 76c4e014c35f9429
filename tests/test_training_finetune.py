"""Fine-tuning (``init_from``), stain normalisation from the config, and the Gaussian cell target."""

import numpy as np
import pytest
import torch

from equipath.checkpoint import load_checkpoint, save_checkpoint
from equipath.data import write_synthetic_pcam
from equipath.models import create_model
from equipath.training import TrainConfig, train


@pytest.fixture(scope="module")
def pcam_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pcam")
    write_synthetic_pcam(root, {"train": 32, "valid": 16, "test": 16}, seed=0, progress=False)
    return root


def _config(out, root, **extra):
    values = {"model": "densenet", "model_kwargs": {"growth": 2}, "epochs": 1, "batch_size": 8,
              "batches_per_epoch": 1, "eval_batch_size": 16, "progress": False, "out_dir": str(out),
              "data": {"dataset": "pcam", "root": str(root), "val_samples": 16}}
    data = extra.pop("data", {})
    values.update(extra)
    values["data"].update(data)
    return TrainConfig.from_dict(values)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_init_from_starts_from_the_checkpoint_weights(pcam_root, tmp_path):
    source = create_model("densenet", growth=2)
    with torch.no_grad():
        for p in source.parameters():
            p.fill_(0.0125)
    path = save_checkpoint(tmp_path / "source.pt", source, name="densenet", kwargs={"growth": 2},
                           normalization={"mean": [0.5] * 3, "std": [0.25] * 3}, task="classification")
    # lr tiny: after one step the weights are still those of the checkpoint, not a random initialisation
    result = train(_config(tmp_path / "run", pcam_root, init_from=str(path), lr=1e-9))
    weights = load_checkpoint(result.last)["state_dict"]
    conv = next(k for k, v in weights.items() if v.dim() == 4)
    assert torch.allclose(weights[conv], torch.full_like(weights[conv], 0.0125), atol=1e-6)
    assert load_checkpoint(result.last)["config"]["init_from"] == str(path)


def test_init_from_a_checkpoint_of_another_shape_fails_in_one_line(pcam_root, tmp_path):
    other = create_model("densenet", growth=4)
    path = save_checkpoint(tmp_path / "other.pt", other, name="densenet", kwargs={"growth": 4},
                           normalization={"mean": [0.5] * 3, "std": [0.25] * 3}, task="classification")
    with pytest.raises(ValueError, match=r"the weights do not fit the model: .* has shape") as info:
        train(_config(tmp_path / "run", pcam_root, init_from=str(path)))
    assert "\n" not in str(info.value) and "other.pt" in str(info.value)


def test_init_from_a_missing_file_is_named(pcam_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        train(_config(tmp_path / "run", pcam_root, init_from=str(tmp_path / "nothing.pt")))
