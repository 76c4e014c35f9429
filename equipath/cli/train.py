"""``equipath train --config NAME|X.yaml [--set KEY=VALUE ...]``: train a model (resumable; DDP under ``torchrun``).

``--config`` takes a YAML file or the name of a config shipped in the package (``equipath configs`` lists
them, e.g. ``pcam_p4m_densenet`` or its CPU-sized sibling ``pcam_p4m_densenet_cpu``). ``--show-config``
prints the resolved config, every key with its value, default and meaning, and exits.

Every key of the config can be set or overridden with ``--set``, nested keys with dots:
``--set lr=1e-4 --set epochs=50 --set data.root=/data/pcam --set data.augment=d4,noise --set model_kwargs.growth=32``.
``--out``, ``--device``, ``--seed``, ``--batch-size``, ``--workers`` and ``--no-progress`` are shortcuts for
``out_dir``, ``device``, ``seed``, ``batch_size``, ``data.num_workers`` and ``progress``.
"""

import argparse
import dataclasses
import json
import os

from equipath.cli import _options
from equipath.training import TrainConfig, train
from equipath.training.config import apply_overrides, describe_keys, read_config_file


def resolve_config(config_path, overrides: dict) -> TrainConfig:
    """The config of a YAML file or shipped config name (or none) with ``{key: text}`` overrides (``--set``)
    applied, validated."""
    values = read_config_file(config_path) if config_path is not None else {}
    return TrainConfig.from_dict(apply_overrides(values, overrides, TrainConfig))


def _text(value) -> str:
    if value is dataclasses.MISSING:
        return "(required)"
    return json.dumps(value) if isinstance(value, (dict, list, str)) or value is None else str(value).lower() \
        if isinstance(value, bool) else str(value)


def key_table(config: TrainConfig | None = None) -> str:
    """One line per config key: ``key = value  (default ...)  meaning``; ``config`` None lists the defaults."""
    values = dict((k, v) for k, v, _ in describe_keys()) if config is None else _flat(config.to_dict())
    rows = [(key, _text(values.get(key, default)), _text(default), help) for key, default, help in describe_keys()]
    width = min(max(len(k) + len(v) for k, v, _, _ in rows) + 3, 44)
    lines = []
    for key, value, default, help in rows:
        shown = f"{key} = {value}"
        note = "" if config is None or value == default else f"  [default {default}]"
        lines.append(f"  {shown:<{width}}  {help}{note}")
    return "\n".join(lines)


def _flat(values: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in values.items():
        if key == "data" and not prefix:
            out.update(_flat(value, "data."))
        else:
            out[prefix + key] = value
    return out


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a model from a YAML config (resumable; DDP under torchrun)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"config keys (KEY = default, meaning):\n{key_table()}\n\nOutputs: config.yaml, best.pt, last.pt, "
               f"metrics.csv in out_dir.")
    parser.add_argument("--config", help="a YAML file of config keys, or a shipped config's name "
                                         "(equipath configs lists them)")
    parser.add_argument("--show-config", action="store_true",
                        help="print the resolved config (every key: value, default, meaning) and exit")
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
    if args.show_config:
        print(f"# equipath train config{' ' + args.config if args.config else ''} (KEY = value, meaning)")
        print(key_table(config))
        return 0
    result = train(config)
    if result.history and int(os.environ.get("RANK", 0)) == 0:  # under torchrun: rank 0 reports
        best = min(result.history, key=lambda row: row["val_loss"])
        print(f"best validation loss {best['val_loss']:.4f} at epoch {best['epoch']}: {result.best}")
    return 0
