"""``equipath cells``: rotation-invariant cell representations (seed 003) on procedural or user cell patches.

    equipath cells synth --out OUT --n 600               procedural labelled patches (PNG folders) + preview.png
    equipath cells train --config cells_inv_hnet [--set epochs=5 ...]
    equipath cells evaluate --checkpoint runs/cells/inv_hnet/model.pt
    equipath cells experiment [--config cells_experiment] [--set epochs=5 ...]

Data sources are ``synthetic`` (the procedural set, labelled SYNTHETIC in every output) or a folder of
square RGB patches, ``root/<class>/*.png`` (labelled) or ``root/*.png``.
"""

import argparse
import dataclasses
import io
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from equipath.atomic import atomic_write, write_json
from equipath.cells.data import SYNTHETIC, load_cells, write_cell_folder
from equipath.cells.metrics import evaluate_cell_vae
from equipath.cells.experiment import LABEL, CellExperimentConfig, format_table, run_experiment
from equipath.cells.procedural import CELL_TYPES, make_cell_patches
from equipath.cells.train import CellTrainConfig, load_cell_vae, save_cell_vae, train_cell_vae
from equipath.cli import _options
from equipath.training.config import apply_overrides, build_config, read_config_file


@dataclasses.dataclass(frozen=True)
class _Data:
    """The ``data`` keys of a cell training config: sources (``synthetic`` or a folder), synthetic sizes, seed."""

    train: str = SYNTHETIC
    val: str = SYNTHETIC
    n_train: int = 800
    n_val: int = 300
    seed: int = 0


def _file_schema(cls, name: str, extra: list) -> type:
    """The keys of a config file of ``cls``: its fields, ``out_dir`` and ``extra``, built and checked by the
    package's one config builder (:func:`equipath.training.config.build_config`)."""
    own = [(f.name, f.type, dataclasses.field(default=f.default, default_factory=f.default_factory))
           for f in dataclasses.fields(cls)]
    return dataclasses.make_dataclass(name, own + [("out_dir", str | None, dataclasses.field(default=None))] + extra,
                                      frozen=True)


_TrainFile = _file_schema(CellTrainConfig, "CellTrainFile", [("data", _Data, dataclasses.field(default_factory=_Data))])
_ExperimentFile = _file_schema(CellExperimentConfig, "CellExperimentFile", [])


def _read_config(path, pairs, schema, shortcuts: dict) -> object:
    """A YAML file (or none) with ``--set KEY=VALUE`` and the shortcut flags applied, built as ``schema``."""
    values = read_config_file(path) if path is not None else {}
    overrides = _options.parse_sets(pairs)
    overrides.update({key: str(value) for key, value in shortcuts.items() if value is not None})
    return build_config(schema, apply_overrides(values, overrides, schema))


def _fields(run, cls) -> dict:
    return {f.name: getattr(run, f.name) for f in dataclasses.fields(cls)}


def _run_synth(args) -> int:
    images, labels = make_cell_patches(args.n, args.size, args.seed, progress=args.progress)
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
    run = _read_config(args.config, args.set, _TrainFile, {"device": args.device, "seed": args.seed,
                                                          "batch_size": args.batch_size})
    data = dataclasses.asdict(run.data)
    out = Path(args.out or run.out_dir or f"runs/cells/{run.variant}")
    config = CellTrainConfig(**_fields(run, CellTrainConfig))
    train, _ = load_cells(data["train"], data["n_train"], config.size, data["seed"])
    val, _ = load_cells(data["val"], data["n_val"], config.size, data["seed"] + 1)
    resolved = {**dataclasses.asdict(config), "out_dir": str(out), "data": data}
    atomic_write(out / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    result = train_cell_vae(train, val, config, progress=args.progress)
    checkpoint = save_cell_vae(out / "model.pt", result.model, config, result.history)
    lines = [",".join(result.history[0])] + [",".join(f"{v:g}" for v in row.values()) for row in result.history]
    atomic_write(out / "history.csv", "\n".join(lines) + "\n")
    best = result.history[result.best_epoch - 1]
    synthetic = " (SYNTHETIC data)" if SYNTHETIC in (data["train"], data["val"]) else ""
    print(f"{config.variant} w={config.rotation_weight:g}: best validation loss {best['val_loss']:.2f} at epoch "
          f"{result.best_epoch}{synthetic}; checkpoint {checkpoint}")
    return 0


def _run_evaluate(args) -> int:
    model, state = load_cell_vae(args.checkpoint, _options.resolve_device(args.device))
    test, _ = load_cells(args.test, args.n_test, model.size, args.seed + 2)
    labelled, labels = load_cells(args.labelled, args.n_labelled, model.size, args.seed + 3)
    if labels is None:
        raise ValueError(f"--labelled {args.labelled}: expected class sub-folders (root/<class>/*.png) for the probe")
    metrics = evaluate_cell_vae(model, test, labelled, labels, args.angles, args.folds, args.seed)
    synthetic = SYNTHETIC in (args.test, args.labelled)
    report = {"checkpoint": str(args.checkpoint), "model": state["model"], "test": args.test, "labelled": args.labelled,
              "label": LABEL if synthetic else "user data", **metrics}
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / "metrics.json"
    write_json(out, report)
    print(f"{'SYNTHETIC ' if synthetic else ''}{state['model']['kwargs']['variant']}: KL under rotation "
          f"{metrics['kl_rotation']:.4f}, SSIM {metrics['ssim']:.4f}, macro F1 {metrics['f1_mean']:.4f} "
          f"± {metrics['f1_std']:.4f} ({args.folds}-fold); wrote {out}")
    return 0


def _run_experiment(args) -> int:
    _threads(args)
    run = _read_config(args.config, args.set, _ExperimentFile, {"train.device": args.device, "seed": args.seed,
                                                               "train.batch_size": args.batch_size})
    out = Path(args.out or run.out_dir or "runs/cells/experiment")
    config = CellExperimentConfig(**_fields(run, CellExperimentConfig))
    atomic_write(out / "config.yaml", yaml.safe_dump({**dataclasses.asdict(config), "variants": list(config.variants),
                                                      "weights": list(config.weights), "out_dir": str(out)},
                                                     sort_keys=False))
    rows = run_experiment(config, out, progress=args.progress)
    print(format_table(rows), end="")
    print(f"wrote {out}/results.md, results.csv, results.json, results.png and checkpoints/")
    return 0


def _run_flags(parser, default_out: str) -> None:
    parser.add_argument("--config", help="a YAML file, or a shipped config by name (equipath configs: cells_*)")
    _options.add_set(parser, help="override a key (repeatable), e.g. epochs=3 or data.n_train=500")
    _options.add_out(parser, help=f"output folder, overriding the config's out_dir (default: {default_out})")
    parser.add_argument("--device", help="the config's device: auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--seed", type=int, help="the config's seed (default: 0)")
    parser.add_argument("--batch-size", type=_options.positive_int, help="the config's batch_size (default: 64)")
    _options.add_progress(parser)
    parser.add_argument("--threads", type=_options.positive_int, help="torch CPU threads (default: torch's choice)")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "cells", help="rotation-invariant cell representations: VAEs with STN and harmonic encoders (seed 003)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", metavar="WHAT", required=True)

    synth = sub.add_parser("synth", help="write procedural labelled cell patches (SYNTHETIC) as PNG folders")
    _options.add_out(synth, required=True, help="output folder")
    synth.add_argument("--n", type=_options.positive_int, default=600,
                       help="patches, balanced over the cell types (default: 600)")
    synth.add_argument("--size", type=_options.positive_int, default=32, help="patch side in pixels (default: 32)")
    _options.add_seed(synth, help="generator seed (default: 0)")
    _options.add_progress(synth)
    synth.set_defaults(func=_run_synth)

    train = sub.add_parser("train", help="train one cell VAE from a YAML config",
                           description="Keys: the fields of equipath.cells.CellTrainConfig, out_dir, and data "
                                       "(train, val: 'synthetic' or a folder; n_train, n_val, seed: synthetic "
                                       "only). Writes config.yaml, model.pt and history.csv to out_dir.")
    _run_flags(train, "runs/cells/<variant>")
    train.set_defaults(func=_run_train)

    evaluate = sub.add_parser("evaluate", help="KL under rotation, SSIM and probe F1 of a trained cell VAE")
    evaluate.add_argument("--checkpoint", required=True, help="model.pt written by 'equipath cells train'")
    evaluate.add_argument("--test", default=SYNTHETIC, help="patches for KL and SSIM: 'synthetic' or a folder (default: synthetic)")
    evaluate.add_argument("--labelled", default=SYNTHETIC, help="labelled patches for the probe: 'synthetic' or a folder of class sub-folders (default: synthetic)")
    evaluate.add_argument("--n-test", type=_options.positive_int, default=300, help="synthetic test patches (default: 300)")
    evaluate.add_argument("--n-labelled", type=_options.positive_int, default=600, help="synthetic labelled patches (default: 600)")
    evaluate.add_argument("--angles", type=_options.positive_int, default=12, help="KL angles, every 360/N degrees (default: 12)")
    evaluate.add_argument("--folds", type=_options.positive_int, default=5, help="cross-validation folds of the probe (default: 5)")
    _options.add_seed(evaluate, help="synthetic data seed base, as in training (default: 0)")
    _options.add_device(evaluate)
    _options.add_out(evaluate, help="metrics JSON (default: metrics.json beside the checkpoint)")
    evaluate.set_defaults(func=_run_evaluate)

    experiment = sub.add_parser("experiment", help="every variant and rotation weight on procedural cells; prints the table",
                                description="Keys: the fields of equipath.cells.CellExperimentConfig and out_dir.")
    _run_flags(experiment, "runs/cells/experiment")
    experiment.set_defaults(func=_run_experiment)
