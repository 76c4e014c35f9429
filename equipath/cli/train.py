"""``equipath train --config X.yaml [--set KEY=VALUE ...]``: train a model (resumable; DDP under ``torchrun``).

Every key of the config can be set or overridden with ``--set``, nested keys with dots:
``--set lr=1e-4 --set epochs=50 --set data.root=/data/pcam --set data.augment=d4,noise --set model_kwargs.growth=32``.
``--out``, ``--device``, ``--seed``, ``--batch-size``, ``--workers`` and ``--no-progress`` are shortcuts for
``out_dir``, ``device``, ``seed``, ``batch_size``, ``data.num_workers`` and ``progress``.
"""

import argparse
import dataclasses

from equipath.cli import _options
from equipath.training import TrainConfig, train
from equipath.training.config import DataConfig, apply_overrides, read_config_file


def resolve_config(config_path, overrides: dict) -> TrainConfig:
    """The config of a YAML file (or none) with ``{key: text}`` overrides (``--set``) applied, validated."""
    values = read_config_file(config_path) if config_path is not None else {}
    return TrainConfig.from_dict(apply_overrides(values, overrides, TrainConfig))


def _keys() -> str:
    top = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "data"]
    return ", ".join(top + [f"data.{f.name}" for f in dataclasses.fields(DataConfig)])


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a model from a YAML config (resumable; DDP under torchrun)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"config keys: {_keys()}. Outputs: config.yaml, best.pt, last.pt, metrics.csv in out_dir.")
    parser.add_argument("--config", help="YAML file of config keys (see configs/)")
    _options.add_set(parser, help="set a config key (repeatable), e.g. lr=1e-4 or data.root=/data/pcam")
    _options.add_out(parser, help="output folder (the config's out_dir)")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: the config's device, auto)")
    parser.add_argument("--seed", type=int, help="seed (default: the config's seed, 0)")
    parser.add_argument("--batch-size", type=_options.positive_int, help="the config's batch_size (default: 64)")
    parser.add_argument("--workers", type=int, help="the config's data.num_workers (default: 0)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                        help="hide progress bars")
    parser.set_defaults(func=run)


_SHORTCUTS = {"out": "out_dir", "device": "device", "seed": "seed", "batch_size": "batch_size",
              "workers": "data.num_workers", "progress": "progress"}


def run(args) -> int:
    overrides = _options.parse_sets(args.set)
    for attr, key in _SHORTCUTS.items():
        if getattr(args, attr) is not None:
            overrides[key] = str(getattr(args, attr)).lower() if attr == "progress" else str(getattr(args, attr))
    config = resolve_config(args.config, overrides)
    result = train(config)
    if result.history:
        best = min(result.history, key=lambda row: row["val_loss"])
        print(f"best validation loss {best['val_loss']:.4f} at epoch {best['epoch']}: {result.best}")
    return 0
