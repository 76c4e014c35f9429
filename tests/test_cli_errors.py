"""Bad input to ``equipath train`` / ``evaluate`` / ``demo``: exit status 2, one line on stderr naming the
problem, no traceback, and no output left behind."""

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from equipath.checkpoint import save_checkpoint
from equipath.cli import main
from equipath.data import write_pcam
from equipath.models import create_model


def _fails(capsys, argv, *fragments):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"equipath {argv[0]}: error: "), err
    for fragment in fragments:
        assert fragment in err, err
    return err


def _config(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


@pytest.fixture
def out(tmp_path):
    """The output folder of the failing command; it must not exist afterwards."""
    path = tmp_path / "out"
    yield path
    assert not path.exists(), f"a failed command left {sorted(p.name for p in path.rglob('*'))} behind"


def _train(config, out, *extra):
    return ["train", "--config", config, "--out", str(out), "--no-progress", *extra]


def test_missing_config_file(capsys, tmp_path, out):
    _fails(capsys, _train(str(tmp_path / "nope.yaml"), out), "config file", "nope.yaml does not exist")


def test_invalid_yaml(capsys, tmp_path, out):
    _fails(capsys, _train(_config(tmp_path, "model: [densenet\n"), out), "config.yaml: not valid YAML")


@pytest.mark.parametrize("text, extra, fragment", [
    ("model: densenet\nlearning_rate: 0.1\n", [], "unknown key 'learning_rate'; valid keys: model, model_kwargs"),
    ("model: densenet\ndata:\n  rooot: x\n", [], "unknown key 'data.rooot'"),
    ("model: densenet\nepochs: many\n", [], "epochs must be an integer, got 'many'"),
    ("model: densenet\n", ["--set", "learning_rate=0.1"], "--set learning_rate: unknown config key"),
    ("model: densenet\n", ["--set", "lr=fast"], "lr must be a number, got 'fast'"),
    ("model: densenet\n", ["--set", "data.fraction=2"], "data.fraction must be a finite number in [1e-06, 1], got 2"),
])
def test_unknown_or_ill_typed_config_key(capsys, tmp_path, out, text, extra, fragment):
    _fails(capsys, _train(_config(tmp_path, text), out, *extra), fragment)


def test_unknown_model(capsys, tmp_path, out):
    _fails(capsys, _train(_config(tmp_path, "model: resnet50\n"), out), "unknown model 'resnet50': expected one of")


def test_model_arguments_it_does_not_take(capsys, tmp_path, out):
    _fails(capsys, _train(_config(tmp_path, "model: densenet\nmodel_kwargs: {width: 3}\n"), out),
           "model 'densenet'", "accepted arguments: growth, stem")


def _pcam_config(tmp_path, root):
    return _config(tmp_path, f"model: densenet\nmodel_kwargs: {{growth: 2}}\ndata:\n  dataset: pcam\n  root: {root}\n")


def test_missing_data_file(capsys, tmp_path, out):
    root = tmp_path / "pcam"
    root.mkdir()
    _fails(capsys, _train(_pcam_config(tmp_path, root), out), "camelyonpatch_level_2_split_train_x.h5", "found neither")


def test_corrupt_h5(capsys, tmp_path, out):
    root = tmp_path / "pcam"
    root.mkdir()
    for key in ("x", "y"):
        (root / f"camelyonpatch_level_2_split_train_{key}.h5").write_bytes(b"not an hdf5 file" * 100)
    _fails(capsys, _train(_pcam_config(tmp_path, root), out), "camelyonpatch_level_2_split_train_x.h5",
           "not readable as HDF5")


def test_wrong_h5_keys(capsys, tmp_path, out):
    root = tmp_path / "pcam"
    write_pcam(root, "train", np.zeros((4, 96, 96, 3), np.uint8), np.array([0, 1, 0, 1]))
    x_file = root / "camelyonpatch_level_2_split_train_x.h5"
    with h5py.File(x_file, "w") as f:
        f["images"] = np.zeros((4, 96, 96, 3), np.uint8)
    _fails(capsys, _train(_pcam_config(tmp_path, root), out), str(x_file), "expected an HDF5 dataset 'x'",
           "found keys ['images']")


def test_model_and_data_of_different_tasks(capsys, tmp_path, out):
    root = tmp_path / "pcam"
    for split in ("train", "valid"):
        write_pcam(root, split, np.zeros((4, 96, 96, 3), np.uint8), np.array([0, 1, 0, 1]))
    config = _config(tmp_path, f"model: iso_unet\nmodel_kwargs: {{width: 4}}\ndata:\n  dataset: pcam\n  root: {root}\n")
    _fails(capsys, _train(config, out), "model 'iso_unet' is a segmentation model", "classification set")


def test_output_folder_under_a_file(capsys, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    _fails(capsys, _train(_config(tmp_path, "model: densenet\n"), blocker / "run"), "output folder", "is not a folder")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder")
def test_unwritable_output_folder(capsys, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    _fails(capsys, _train(_config(tmp_path, "model: densenet\n"), locked / "run"), "is not writable")


@pytest.fixture
def checkpoint(tmp_path):
    model = create_model("densenet", growth=2)
    return save_checkpoint(tmp_path / "ckpt" / "best.pt", model, name="densenet", kwargs={"growth": 2},
                           normalization={"mean": [0.5] * 3, "std": [0.25] * 3}, task="classification")


def test_evaluate_missing_or_corrupt_checkpoint(capsys, tmp_path):
    _fails(capsys, ["evaluate", "--checkpoint", str(tmp_path / "none.pt"), "--data", str(tmp_path)],
           "none.pt does not exist")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x80\x04garbage")
    _fails(capsys, ["evaluate", "--checkpoint", str(bad), "--data", str(tmp_path)],
           "bad.pt could not be read as an equipath checkpoint")
    assert not (tmp_path / "eval_test.json").exists()


def test_evaluate_missing_data(capsys, tmp_path, checkpoint):
    _fails(capsys, ["evaluate", "--checkpoint", str(checkpoint), "--data", str(tmp_path / "nowhere")],
           "data folder", "nowhere does not exist")
    root = tmp_path / "pcam"
    root.mkdir()
    _fails(capsys, ["evaluate", "--checkpoint", str(checkpoint), "--data", str(root)],
           "camelyonpatch_level_2_split_test_x.h5")
    assert not (checkpoint.parent / "eval_test.json").exists()


def test_evaluate_unwritable_output(capsys, tmp_path, checkpoint):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    _fails(capsys, ["evaluate", "--checkpoint", str(checkpoint), "--data", str(tmp_path),
                    "--out", str(blocker / "r.json")], "is not a folder")


def test_demo_refuses_a_folder_that_is_not_its_own(capsys, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    _fails(capsys, ["demo", "--out", str(foreign)], "not an equipath demo folder")
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_a_real_process_prints_exactly_one_line(tmp_path):
    """Through a fresh interpreter (logging configured as for a user): stderr is the one error line."""
    config = _config(tmp_path, "model: resnet50\n")
    proc = subprocess.run([sys.executable, "-m", "equipath", "train", "--config", config, "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("equipath train: error: unknown model 'resnet50'")
    assert proc.stdout == "" and not (tmp_path / "out").exists()
