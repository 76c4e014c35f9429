"""``equipath cells``: rotation-invariant cell representations (seed 003) on procedural or user cell patches.

    equipath cells synth OUT --n 600                     procedural labelled patches (PNG folders) + preview.png
    equipath cells train --config configs/cells_inv_hnet.yaml [--set epochs=5 ...]
    equipath cells evaluate --checkpoint runs/cells/inv_hnet/model.pt
    equipath cells experiment [--config configs/cells_experiment.yaml] [--set epochs=5 ...]

Data sources are ``synthetic`` (the procedural set, labelled SYNTHETIC in every output) or a folder of
square RGB patches, ``root/<class>/*.png`` (labelled) or ``root/*.png``.
"""

import argparse
import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from equipath.cells.data import SYNTHETIC, load_cells, write_cell_folder
from equipath.cells.evaluation import evaluate_cell_vae
from equipath.atomic import atomic_write
from equipath.cells.experiment import LABEL, CellExperimentConfig, format_table, run_experiment
from equipath.cells.synthetic import CELL_TYPES, make_cell_patches
from equipath.cells.train import CellTrainConfig, load_cell_vae, save_cell_vae, train_cell_vae
from equipath.training.config import load_yaml

_DATA_DEFAULTS = {"train": SYNTHETIC, "val": SYNTHETIC, "n_train": 800, "n_val": 300, "seed": 0}


def _read_config(path, overrides: list[str], known: dict) -> dict:
    """A YAML mapping with ``key=value`` / ``data.key=value`` overrides; ``ValueError`` for unknown keys."""
    values = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        values = load_yaml(path.read_text(), str(path)) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a mapping of config keys, got {type(values).__name__}")
    for item in overrides or []:
        key, eq, text = item.partition("=")
        if not eq:
            raise ValueError(f"--set {item}: expected KEY=VALUE")
        value = load_yaml(text, f"--set {key}")
        if "." in key:
            parent, child = key.split(".", 1)
            values.setdefault(parent, {})[child] = value
        else:
            values[key] = value
    source = path or "--set"
    for key, value in values.items():
        if key not in known:
            raise ValueError(f"{source}: unknown config key {key!r}; valid keys: {', '.join(known)}")
        if isinstance(known[key], dict):
            if not isinstance(value, dict):
                raise ValueError(f"{source}: {key} must be a mapping with keys {', '.join(known[key])}")
            for child in value:
                if child not in known[key]:
                    raise ValueError(f"{source}: unknown config key {key}.{child}; valid: {', '.join(known[key])}")
    return values


def _build(cls, values: dict, what: str):
    try:
        return cls(**values)
    except TypeError as exc:
        raise ValueError(f"{what}: {exc}") from None


def _keys(cls) -> dict:
    return {f.name: None for f in dataclasses.fields(cls)}


def _run_synth(args) -> int:
    images, labels = make_cell_patches(args.n, args.size, args.seed, progress=not args.no_progress)
    out = write_cell_folder(args.out, images, labels)
    per_class = min(8, args.n // len(CELL_TYPES)) or 1
    rows = [np.concatenate([images[c + len(CELL_TYPES) * k] if c + len(CELL_TYPES) * k < len(images)
                            else np.ones_like(images[0]) for k in range(per_class)], 2) for c in range(len(CELL_TYPES))]
    grid = np.round(np.concatenate(rows, 1).transpose(1, 2, 0) * 255).astype(np.uint8)  # (6 S, k S, 3)
    buffer = io.BytesIO()
    Image.fromarray(grid).save(buffer, format="PNG")
    preview = atomic_write(out / "preview.png", buffer.getvalue())
    atomic_write(out / "README.txt", f"{LABEL}\nrows of preview.png, top to bottom: {', '.join(CELL_TYPES)}\n")
    print(f"wrote {len(images)} SYNTHETIC cell patches to {out}/<class>/ and a preview to {preview}")
    return 0


def _threads(args) -> None:
    if args.threads is not None:
        torch.set_num_threads(args.threads)


def _run_train(args) -> int:
    _threads(args)
    known = {**_keys(CellTrainConfig), "out_dir": None, "data": _DATA_DEFAULTS}
    values = _read_config(args.config, args.set, known)
    data = {**_DATA_DEFAULTS, **values.pop("data", {})}
    config_out = values.pop("out_dir", None)
    out = Path(args.out or config_out or f"runs/cells/{values.get('variant', 'inv-HNet')}")
    config = _build(CellTrainConfig, values, "cell training config")
    train, _ = load_cells(data["train"], data["n_train"], config.size, data["seed"])
    val, _ = load_cells(data["val"], data["n_val"], config.size, data["seed"] + 1)
    resolved = {**dataclasses.asdict(config), "out_dir": str(out), "data": data}
    atomic_write(out / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    result = train_cell_vae(train, val, config, progress=not args.no_progress)
    checkpoint = save_cell_vae(out / "model.pt", result.model, config, result.history)
    lines = [",".join(result.history[0])] + [",".join(f"{v:g}" for v in row.values()) for row in result.history]
    atomic_write(out / "history.csv", "\n".join(lines) + "\n")
    best = result.history[result.best_epoch - 1]
    synthetic = " (SYNTHETIC data)" if SYNTHETIC in (data["train"], data["val"]) else ""
    print(f"{config.variant} w={config.rotation_weight:g}: best validation loss {best['val_loss']:.2f} at epoch "
          f"{result.best_epoch}{synthetic}; checkpoint {checkpoint}")
    return 0


def _run_evaluate(args) -> int:
    model, state = load_cell_vae(args.checkpoint, args.device)
    test, _ = load_cells(args.test, args.n_test, model.size, args.seed + 2)
    labelled, labels = load_cells(args.labelled, args.n_labelled, model.size, args.seed + 3)
    if labels is None:
        raise ValueError(f"--labelled {args.labelled}: expected class sub-folders (root/<class>/*.png) for the probe")
    metrics = evaluate_cell_vae(model, test, labelled, labels, args.angles, args.folds, args.seed)
    synthetic = SYNTHETIC in (args.test, args.labelled)
    report = {"checkpoint": str(args.checkpoint), "model": state["model"], "test": args.test, "labelled": args.labelled,
              "label": LABEL if synthetic else "user data", **metrics}
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / "metrics.json"
    atomic_write(out, json.dumps(report, indent=1))
    print(f"{'SYNTHETIC ' if synthetic else ''}{state['model']['kwargs']['variant']}: KL under rotation "
          f"{metrics['kl_rotation']:.4f}, SSIM {metrics['ssim']:.4f}, macro F1 {metrics['f1_mean']:.4f} "
          f"± {metrics['f1_std']:.4f} ({args.folds}-fold); wrote {out}")
    return 0


def _run_experiment(args) -> int:
    _threads(args)
    values = _read_config(args.config, args.set, {**_keys(CellExperimentConfig), "out_dir": None})
    config_out = values.pop("out_dir", None)
    out = Path(args.out or config_out or "runs/cells/experiment")
    config = _build(CellExperimentConfig, values, "cell experiment config")
    atomic_write(out / "config.yaml", yaml.safe_dump({**dataclasses.asdict(config), "variants": list(config.variants),
                                                      "weights": list(config.weights), "out_dir": str(out)},
                                                     sort_keys=False))
    rows = run_experiment(config, out, progress=not args.no_progress)
    print(format_table(rows), end="")
    print(f"wrote {out}/results.md, results.csv, results.json, results.png and checkpoints/")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "cells", help="rotation-invariant cell representations: VAEs with STN and harmonic encoders (seed 003)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", metavar="WHAT", required=True)

    synth = sub.add_parser("synth", help="write procedural labelled cell patches (SYNTHETIC) as PNG folders")
    synth.add_argument("out", help="output folder")
    synth.add_argument("--n", type=_positive, default=600, help="patches, balanced over the cell types (default: 600)")
    synth.add_argument("--size", type=_positive, default=32, help="patch side in pixels (default: 32)")
    synth.add_argument("--seed", type=int, default=0, help="generator seed (default: 0)")
    synth.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    synth.set_defaults(func=_run_synth)

    train = sub.add_parser("train", help="train one cell VAE from a YAML config",
                           description="Keys: the fields of equipath.cells.CellTrainConfig, out_dir, and data "
                                       "(train, val: 'synthetic' or a folder; n_train, n_val, seed: synthetic "
                                       "only). Writes config.yaml, model.pt and history.csv to out_dir.")
    train.add_argument("--config", help="YAML config (see configs/cells_*.yaml)")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key, e.g. epochs=3 or data.n_train=500")
    train.add_argument("--out", help="output folder, overriding the config's out_dir (default: runs/cells/<variant>)")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.add_argument("--threads", type=_positive, help="torch CPU threads (default: torch's choice)")
    train.set_defaults(func=_run_train)

    evaluate = sub.add_parser("evaluate", help="KL under rotation, SSIM and probe F1 of a trained cell VAE")
    evaluate.add_argument("--checkpoint", required=True, help="model.pt written by 'equipath cells train'")
    evaluate.add_argument("--test", default=SYNTHETIC, help="patches for KL and SSIM: 'synthetic' or a folder (default: synthetic)")
    evaluate.add_argument("--labelled", default=SYNTHETIC, help="labelled patches for the probe: 'synthetic' or a folder of class sub-folders (default: synthetic)")
    evaluate.add_argument("--n-test", type=_positive, default=300, help="synthetic test patches (default: 300)")
    evaluate.add_argument("--n-labelled", type=_positive, default=600, help="synthetic labelled patches (default: 600)")
    evaluate.add_argument("--angles", type=_positive, default=12, help="KL angles, every 360/N degrees (default: 12)")
    evaluate.add_argument("--folds", type=_positive, default=5, help="cross-validation folds of the probe (default: 5)")
    evaluate.add_argument("--seed", type=int, default=0, help="synthetic data seed base, as in training (default: 0)")
    evaluate.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    evaluate.add_argument("--out", help="metrics JSON (default: metrics.json beside the checkpoint)")
    evaluate.set_defaults(func=_run_evaluate)

    experiment = sub.add_parser("experiment", help="every variant and rotation weight on procedural cells; prints the table",
                                description="Keys: the fields of equipath.cells.CellExperimentConfig and out_dir.")
    experiment.add_argument("--config", help="YAML config (see configs/cells_experiment.yaml)")
    experiment.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key, e.g. epochs=3")
    experiment.add_argument("--out", help="output folder, overriding the config's out_dir (default: runs/cells/experiment)")
    experiment.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    experiment.add_argument("--threads", type=_positive, help="torch CPU threads (default: torch's choice)")
    experiment.set_defaults(func=_run_experiment)
