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


# ---------------------------------------------------------------------------------------------------------------
# Values that cannot work, refused before anything runs (issue 11).
@pytest.mark.parametrize("text, extra, fragment", [
    ("model: densenet\nlr: .inf\n", [], "lr must be a finite number in (0, 10], got inf"),
    ("model: densenet\nlr: .nan\n", [], "lr must be a finite number"),
    ("model: densenet\n", ["--set", "lr=1" + "0" * 400], "lr must be a number, got 1000"),
    ("model: densenet\nnormalization_std: [0.2, 0, 0.2]\n", [], "normalization_std[1] must be a finite number"),
    ("model: densenet\nnormalization_std: [0.2, .nan, 0.2]\n", [], "normalization_std[1] must be a finite number"),
    ("model: densenet\nnormalization_mean: [0.2, .inf, 0.2]\n", [], "normalization_mean[1] must be a finite number"),
    ("model: densenet\ndata:\n  fraction: 1e-300\n", [], "data.fraction must be a finite number in [1e-06, 1]"),
    ("model: densenet\n", ["--batch-size", "1000000000"], "batch_size must be an integer in [1, 65536]"),
    ("model: densenet\n", ["--set", "batch_size=0"], "batch_size must be an integer in [1, 65536], got 0"),
    ("model: densenet\n", ["--set", "seed=-1"], "seed must be an integer in [0, 4294967295]"),
    ("model: densenet\nmodel_kwargs: {growth: abc}\n", [], "model 'densenet': growth must be int, got 'abc'"),
    ("model: densenet\nmodel_kwargs: {growth: {a: 1}}\n", [], "model_kwargs.growth must be a number, string"),
    ("model: densenet\nmodel_kwargs: {growth: -4}\n", [], "growth K must be a positive multiple"),
    ("model: densenet\ndata:\n  synthetic_size: {train: 0}\n", [], "data.synthetic_size.train must be an integer in"),
])
def test_values_that_cannot_work(capsys, tmp_path, out, text, extra, fragment):
    _fails(capsys, _train(_config(tmp_path, text), out, *extra), fragment)


@pytest.mark.parametrize("text, fragment", [
    ("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
     "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c]\nmodel: densenet\n",
     "aliases (*a) are not allowed (line 2)"),
    ("model: densenet\nlr: 0.1\nepochs: 2\nlr: 0.2\n", "duplicate key 'lr' (line 4)"),
    ("model: densenet\nmodel_kwargs: " + "[" * 5000 + "]" * 5000 + "\n", "nested more than 32 levels deep"),
    ("model: densenet\nmodel_kwargs:\n" + "".join("  " * (k + 1) + f"k{k}:\n" for k in range(40)), "nested more than"),
])
def test_hostile_yaml_is_refused_at_once(capsys, tmp_path, out, text, fragment):
    _fails(capsys, _train(_config(tmp_path, text), out), "config.yaml: not valid YAML", fragment)


def test_too_many_workers_are_capped_with_a_warning(caplog):
    from equipath.training import TrainConfig

    config = TrainConfig.from_dict({"model": "densenet", "data": {"num_workers": 100000}})
    assert config.data.num_workers == (os.cpu_count() or 1)
    assert "data.num_workers 100000 is more than the" in caplog.text


def _tiny_checkpoint(tmp_path, name, **changes):
    model = create_model("densenet", growth=2)
    path = save_checkpoint(tmp_path / name, model, name="densenet", kwargs={"growth": 2},
                           normalization={"mean": [0.5] * 3, "std": [0.25] * 3}, task="classification")
    if changes:
        import torch

        state = torch.load(path, weights_only=True)
        for key, value in changes.items():
            node = state
            *parents, leaf = key.split(".")
            for part in parents:
                node = node[part]
            node[leaf] = value
        torch.save(state, path)
    return path


@pytest.mark.parametrize("changes, fragments", [
    ({"model.kwargs": {"growth": 4}}, ["the weights do not fit the model: ", "in the checkpoint, ", "in the model"]),
    ({"model.kwargs": {"growth": "wide"}}, ["model 'densenet': growth must be int, got 'wide'"]),
    ({"model.kwargs": ["growth", 2]}, ["malformed metadata: 'model' must be"]),
    ({"model.name": 7}, ["malformed metadata: 'model' must be"]),
    ({"normalization.std": [0.25, 0.0, 0.25]}, ["malformed metadata: normalization std must be positive"]),
    ({"normalization.mean": [0.5, 0.5]}, ["malformed metadata: normalization mean must be 3 finite numbers"]),
    ({"normalization.std": [0.25, float("nan"), 0.25]}, ["normalization std must be 3 finite numbers"]),
    ({"state_dict": {"x": "not a tensor"}}, ["malformed metadata: 'state_dict' must map names to tensors"]),
])
def test_checkpoints_whose_metadata_or_weights_do_not_fit(capsys, tmp_path, changes, fragments):
    bad = _tiny_checkpoint(tmp_path, "bad.pt", **changes)
    image = tmp_path / "slide.png"
    from PIL import Image

    Image.fromarray(np.full((128, 128, 3), 200, np.uint8)).save(image)
    _fails(capsys, ["predict-slide", str(image), "--checkpoint", str(bad), "--out", str(tmp_path / "o"),
                    "--slide-mpp", "0.972"], str(bad), *fragments)
    assert not (tmp_path / "o").exists()


def test_weight_mismatch_names_the_first_tensor_and_both_shapes(tmp_path):
    from equipath.checkpoint import load_model

    bad = _tiny_checkpoint(tmp_path, "bad.pt", **{"model.kwargs": {"growth": 4}})
    with pytest.raises(ValueError) as info:
        load_model(bad)
    first = next(iter(create_model("densenet", growth=4).state_dict()))
    message = str(info.value)
    assert len(message.splitlines()) == 1
    assert f"{first} has shape (" in message and ") in the checkpoint, (" in message and ") in the model" in message


def _segmentation_root(tmp_path, bad_value):
    from PIL import Image

    root = tmp_path / "seg"
    rng = np.random.default_rng(0)
    for split in ("train", "valid"):
        for k in range(3):
            (root / split / "images").mkdir(parents=True, exist_ok=True)
            (root / split / "masks").mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / split / "images" / f"i{k}.png")
            mask = np.zeros((40, 40), np.uint8)
            mask[10:20, 10:20] = 1
            if split == "train" and k == 2:
                mask[39, 39] = bad_value  # one pixel, rarely sampled: still found when the set is opened
            Image.fromarray(mask).save(root / split / "masks" / f"i{k}.png")
    return root


def test_segmentation_mask_values_outside_the_classes(capsys, tmp_path, out):
    root = _segmentation_root(tmp_path, 7)
    config = _config(tmp_path, f"model: unet\nmodel_kwargs: {{width: 4, num_classes: 2}}\ndata:\n  dataset: segmentation\n"
                               f"  root: {root}\n  patch_size: 32\n")
    _fails(capsys, _train(config, out), "i2.png: mask value 7 is not a class of the 2-class model (expected 0 to 1")


def test_evaluate_refuses_mask_values_outside_the_classes(capsys, tmp_path):
    root = _segmentation_root(tmp_path, 9)
    model = create_model("unet", width=4, num_classes=2)
    ckpt = save_checkpoint(tmp_path / "seg.pt", model, name="unet", kwargs={"width": 4, "num_classes": 2},
                           normalization={"mean": [0.5] * 3, "std": [0.25] * 3}, task="segmentation")
    _fails(capsys, ["evaluate", "--checkpoint", str(ckpt), "--data", str(root), "--split", "train",
                    "--patch-size", "32", "--bootstrap", "0"], "i2.png: mask value 9 is not a class of the 2-class")


def test_a_pcam_split_of_zero_patches(capsys, tmp_path, out):
    root = tmp_path / "pcam"
    root.mkdir()
    for split in ("train", "valid"):
        with h5py.File(root / f"camelyonpatch_level_2_split_{split}_x.h5", "w") as f:
            f["x"] = np.zeros((0, 96, 96, 3), np.uint8)
        with h5py.File(root / f"camelyonpatch_level_2_split_{split}_y.h5", "w") as f:
            f["y"] = np.zeros((0, 1, 1, 1), np.uint8)
    _fails(capsys, _train(_pcam_config(tmp_path, root), out), "camelyonpatch_level_2_split_train_x.h5 holds 0 patches")


def _detections(tmp_path, csv_text, slide_json=None):
    folder = tmp_path / "det" / "tumor_001"
    folder.mkdir(parents=True)
    (folder / "detections.csv").write_text(csv_text)
    if slide_json is not None:
        (folder / "slide.json").write_text(slide_json)
    return str(tmp_path / "det")


@pytest.mark.parametrize("csv_text, fragment", [("0.9,1e30,5\n", "X, Y must be level-0 pixels"),
                                                ("0.9,inf,5\n", "expected 'prob,X,Y' with numbers"),
                                                ("0.9,99999999999,5\n", "X, Y must be level-0 pixels in [0, 2**31)"),
                                                ("0.9,-5,5\n", "X, Y must be level-0 pixels")])
def test_froc_huge_coordinates(capsys, tmp_path, csv_text, fragment):
    _fails(capsys, ["froc", _detections(tmp_path, csv_text), "--bootstrap", "0"], "detections.csv, line 1", fragment)


def test_froc_deeply_nested_json(capsys, tmp_path):
    _fails(capsys, ["froc", _detections(tmp_path, "0.9,10,5\n", "[" * 100000 + "]" * 100000), "--bootstrap", "0"],
           "nested too deeply")


@pytest.mark.parametrize("flag, value", [("--level", "0"), ("--level", "-2"), ("--mpp", "nan"), ("--bootstrap", "-1")])
def test_froc_numbers_checked_up_front(capsys, tmp_path, flag, value):
    _fails(capsys, ["froc", str(tmp_path / "nowhere"), flag, value], flag)


@pytest.mark.parametrize("error, fragment", [
    (ModuleNotFoundError("No module named 'openslide'", name="openslide"), "optional package is missing"),
    (MemoryError(), "out of memory (MemoryError"),
    (RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 1 TB"), "out of memory"),
    (OverflowError("int too large to convert to float"), "a number is too large (int too large"),
    (RecursionError("maximum recursion depth exceeded"), "nested too deeply (RecursionError)"),
    (TypeError("unsupported operand type(s) for +: 'int' and 'str'"), "wrong type (unsupported operand"),
    (KeyError("unknown key 'x'"), "unknown key 'x'"),
])
def test_every_user_caused_exception_type_is_one_line(capsys, monkeypatch, error, fragment):
    from equipath.cli import models

    def run(args):
        raise error

    monkeypatch.setattr(models, "run", run)
    _fails(capsys, ["models"], fragment)


def test_a_bug_keeps_its_traceback_and_v_shows_it_for_user_errors(capsys, monkeypatch):
    from equipath.cli import models

    def bug(args):
        raise AttributeError("'NoneType' object has no attribute 'shape'")

    monkeypatch.setattr(models, "run", bug)
    with pytest.raises(AttributeError):
        main(["models"])
    monkeypatch.setattr(models, "run", lambda args: (_ for _ in ()).throw(ImportError("x", name="equipath.nope")))
    with pytest.raises(ImportError):  # our own module missing is a bug, not a missing optional package
        main(["models"])
    monkeypatch.setattr(models, "run", lambda args: (_ for _ in ()).throw(TypeError("bad operand")))
    assert main(["-v", "models"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.strip().endswith("run with -v and report the traceback")
