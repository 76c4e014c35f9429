"""``equipath train --config X.yaml [--key value ...]``: train a model (resumable; DDP under ``torchrun``).

Every key of the config can be set or overridden by a flag, nested keys with dots:
``--lr 1e-4 --epochs 50 --data.root /data/pcam --data.augment d4,noise --model_kwargs.growth 32``.
"""

import argparse
import dataclasses
import re
import types
import typing
from pathlib import Path

import yaml

from equipath.training import TrainConfig, train
from equipath.training.config import DataConfig, field_type


class _YamlLoader(yaml.SafeLoader):
    """YAML 1.2 floats: ``1e-3`` is a number (PyYAML's YAML 1.1 reads it as a string)."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
               |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
               |\.[0-9_]+(?:[eE][-+][0-9]+)?
               |[-+]?\.(?:inf|Inf|INF)
               |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def load_yaml(text: str, source: str):
    """Parse YAML text; ``ValueError`` naming ``source`` when it is not valid YAML."""
    try:
        return yaml.load(text, Loader=_YamlLoader)
    except yaml.YAMLError as exc:
        raise ValueError(f"{source}: not valid YAML ({str(exc).splitlines()[0]})") from None


def _override_value(key: str, text: str):
    """The value of ``--key text``: raw text for string keys, YAML for the rest (a comma list for lists)."""
    tp = dict if key.startswith("model_kwargs.") else field_type(TrainConfig, key)
    members = typing.get_args(tp) if isinstance(tp, types.UnionType) else (tp,)
    if str in members and text not in ("null", "~"):
        return text
    if any(typing.get_origin(m) is tuple for m in members) and not text.lstrip().startswith("["):
        return [load_yaml(part, f"--{key}") for part in text.split(",") if part.strip()]
    return load_yaml(text, f"--{key}")


def _set(config: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"--{dotted}: {part} is not a mapping in the config")
    node[leaf] = value


def parse_overrides(tokens: list[str]) -> dict:
    """``["--a.b", "1", "--c=x"]`` -> ``{"a.b": "1", "c": "x"}``; ``ValueError`` for anything else."""
    out, i = {}, 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or token == "--":
            raise ValueError(f"unexpected argument {token!r}: expected --key value")
        key, eq, value = token[2:].partition("=")
        if not eq:
            if i + 1 >= len(tokens):
                raise ValueError(f"--{key} needs a value")
            value, i = tokens[i + 1], i + 1
        out[key] = value
        i += 1
    return out


def resolve_config(config_path, overrides: dict) -> TrainConfig:
    """The config of a YAML file (or none) with ``--key value`` overrides applied, validated."""
    values = {}
    if config_path is not None:
        path = Path(config_path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        values = load_yaml(path.read_text(), str(path)) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a mapping of config keys, got {type(values).__name__}")
    for key, text in overrides.items():
        if key.split(".")[0] not in {f.name for f in dataclasses.fields(TrainConfig)}:
            raise ValueError(f"unknown config key --{key}; valid keys: "
                             + ", ".join(f.name for f in dataclasses.fields(TrainConfig)))
        _set(values, key, _override_value(key, text))
    return TrainConfig.from_dict(values)


class _OverridesParser(argparse.ArgumentParser):
    """Keeps the flags it does not define as config overrides (validated later, with one-line errors)."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        namespace.overrides = extras
        return namespace, []


def _keys() -> str:
    top = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "data"]
    return ", ".join(top + [f"data.{f.name}" for f in dataclasses.fields(DataConfig)])


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a model from a YAML config (resumable; DDP under torchrun)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"config keys: {_keys()}. Outputs: config.yaml, best.pt, last.pt, metrics.csv in out_dir.")
    parser.__class__ = _OverridesParser
    parser.add_argument("--config", help="YAML file of config keys (see configs/)")
    parser.set_defaults(func=run)


def run(args) -> int:
    config = resolve_config(args.config, parse_overrides(args.overrides))
    result = train(config)
    if result.history:
        best = min(result.history, key=lambda row: row["val_loss"])
        print(f"best validation loss {best['val_loss']:.4f} at epoch {best['epoch']}: {result.best}")
    return 0
