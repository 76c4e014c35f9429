"""The configs shipped in the package: addressable by name, listed with the paper row they reproduce, every
paper config with a CPU-sized sibling that trains (one step here), and ``train --show-config`` / ``-h``
printing every key of the config dataclass with its default and meaning."""

import dataclasses
import re
import typing

import pytest
import yaml

from equipath.cli import main
from equipath.configs import CONFIG_DIR, list_configs, resolve_config_path
from equipath.training.config import DataConfig, TrainConfig

CPU_CONFIGS = sorted(p.stem for p in CONFIG_DIR.glob("*_cpu.yaml"))


def _every_key(cls, prefix=""):
    """Every leaf field of the dataclass, read from ``dataclasses.fields`` (not from the code under test)."""
    hints = typing.get_type_hints(cls)
    keys = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            keys += _every_key(hints[f.name], f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def test_configs_ship_in_the_package_and_resolve_by_name(tmp_path):
    assert resolve_config_path("pcam_p4m_densenet") == CONFIG_DIR / "pcam_p4m_densenet.yaml"
    assert resolve_config_path("pcam_p4m_densenet.yaml") == CONFIG_DIR / "pcam_p4m_densenet.yaml"
    own = tmp_path / "pcam_p4m_densenet.yaml"
    own.write_text("model: densenet\n")
    assert resolve_config_path(own) == own  # a file path wins over a shipped name
    with pytest.raises(FileNotFoundError, match="equipath configs"):
        resolve_config_path("no_such_config")


def test_every_paper_config_has_a_cpu_sibling_and_is_listed(capsys):
    configs = {c.name: c for c in list_configs()}
    paper = [n for n, c in configs.items() if c.command == "train" and c.summary.startswith("Seed 00")]
    assert len(paper) >= 12
    for name in paper:
        assert f"{name}_cpu" in configs, f"{name} has no CPU-sized sibling"
        sibling = yaml.safe_load(configs[f"{name}_cpu"].path.read_text())
        assert sibling["data"]["dataset"].startswith("synthetic")  # never silently: the header says SYNTHETIC
        assert "SYNTHETIC" in configs[f"{name}_cpu"].summary and name in configs[f"{name}_cpu"].summary
        assert sibling["data"]["num_workers"] <= 2 and sibling["batch_size"] <= 16 and sibling["epochs"] <= 3
    assert main(["configs"]) == 0
    out = capsys.readouterr().out
    assert "pcam_p4m_densenet  " in out and "Seed 000 (Veeling et al. 2018), PCam, P4M-DenseNet (Table 1" in out
    assert main(["configs", "--show", "tiny_p4m_densenet"]) == 0
    assert "model: p4m_densenet" in capsys.readouterr().out


def test_show_config_prints_every_field_with_its_default_and_meaning(capsys):
    assert main(["train", "--config", "pcam_p4m_densenet_cpu", "--set", "lr=0.01", "--show-config"]) == 0
    out = capsys.readouterr().out
    keys = _every_key(TrainConfig)
    assert len(keys) == len(dataclasses.fields(TrainConfig)) - 1 + len(dataclasses.fields(DataConfig))
    lines = {m.group(1): m.group(2) for m in re.finditer(r"^  ([\w.]+) = (.*)$", out, re.M)}
    assert sorted(lines) == sorted(keys)
    for key in keys:  # a one-line meaning for every key
        assert len(lines[key].split("  ", 1)[-1].strip()) > 10, key
    assert lines["lr"].startswith("0.01 ") and "[default 0.001]" in lines["lr"]
    assert lines["data.dataset"].startswith('"synthetic_pcam"') and lines["model"].startswith('"p4m_densenet"')
    with pytest.raises(SystemExit):
        main(["train", "-h"])
    help_text = capsys.readouterr().out
    for key in keys:
        assert re.search(rf"^  {re.escape(key)} = ", help_text, re.M), key


def test_train_refuses_a_config_that_is_neither_file_nor_name(capsys):
    assert main(["train", "--config", "pcam_p4m_densnet", "--show-config"]) == 2
    assert "equipath configs" in capsys.readouterr().err


@pytest.fixture(scope="module")
def shared_data(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic")


@pytest.mark.slow
@pytest.mark.parametrize("name", CPU_CONFIGS)
def test_cpu_config_trains_one_step(name, tmp_path, shared_data, capsys):
    config = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
    args = ["train", "--config", name, "--out", str(tmp_path / "run"), "--no-progress",
            "--set", "epochs=1", "--set", "batches_per_epoch=1", "--set", "data.val_samples=8"]
    if config["data"]["dataset"] == "synthetic_pcam":  # one synthetic PCam set for all of them
        args += ["--set", f"data.root={shared_data / 'pcam'}"]
    assert main(args) == 0, capsys.readouterr()
    assert "best validation loss" in capsys.readouterr().out
    assert (tmp_path / "run" / "best.pt").is_file()
