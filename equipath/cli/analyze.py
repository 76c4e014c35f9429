"""``equipath analyze equivariance|stability|tta|efficiency|redundancy``: the papers' analyses as commands.

Every command takes models as ``--model SPEC`` (repeatable): a checkpoint file (``best.pt``; its
normalisation is applied) or a registered model name (random weights; ``--model-arg key=value`` sets the
arguments of every named model, ``--model-arg densenet:growth=4`` those of one). Numbers go to JSON / CSV /
markdown and figures to PNG in ``--out``; everything computed from synthetic data (or with models trained
on it) is labelled SYNTHETIC. See docs/analysis.md.
"""

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image
from torch.utils.data import Subset

from equipath.analysis import (EfficiencyPlan, ModelRun, compare_tta, layer_report, model_redundancy,
                               run_efficiency, stability_section)
from equipath.analysis.equivariance import equivariance_figure, format_error
from equipath.analysis.io import SYNTHETIC_LABEL
from equipath.analysis.redundancy import redundancy_figure
from equipath.analysis.report import common_size
from equipath.analysis.tta import tta_figure
from equipath.atomic import atomic_write, save_figure, write_csv, write_json
from equipath.checkpoint import check_writable, load_model
from equipath.cli import _options
from equipath.training.config import TrainConfig, apply_overrides, load_yaml, read_config_file
from equipath.data import PCamDataset, write_synthetic_pcam
from equipath.data.pcam import pcam_path
from equipath.data.synthetic import synthetic_tile
from equipath.evaluation import EVAL_DATASETS, open_dataset
from equipath.groups import GROUP_NAMES
from equipath.models import create_model
from equipath.wsi.pipeline import trained_on_synthetic

log = logging.getLogger(__name__)

MODEL_MPP = 0.972  # um/px the models are trained at: seed 000's 10x, PCam's resolution


@dataclass
class _Model:
    label: str
    model: torch.nn.Module  # takes RGB in [0, 1]: a checkpoint's model carries its normalisation
    synthetic: bool  # trained on synthetic data
    source: str


def _model_args(pairs, name: str) -> dict:
    """The ``--model-arg [model:]key=value`` pairs that apply to the registered model ``name``."""
    out = {}
    for pair in pairs or []:
        key, eq, value = pair.partition("=")
        target, colon, key = key.rpartition(":")
        if not eq or not key:
            raise ValueError(f"--model-arg {pair!r}: expected key=value or model:key=value")
        if not colon or target == name:
            out[key] = load_yaml(value, f"--model-arg {pair}")
    return out


def _load_models(args) -> list[_Model]:
    if not args.model:
        raise ValueError("give at least one --model (a checkpoint file or a registered model name)")
    device = _options.resolve_device(args.device)
    loaded, labels = [], {}
    for spec in args.model:
        path = Path(spec)
        if path.suffix in (".pt", ".pth") or path.is_file():
            model, state = load_model(path, map_location=device)
            data = state.get("config", {}).get("data", {})
            name = "+".join([state["model"]["name"], *data.get("augment", ())])  # densenet+d4: seed 000's DenseNet+
            entry = _Model(name, model, trained_on_synthetic(state), str(path))
        else:
            model = create_model(spec, **_model_args(args.model_arg, spec)).to(device).eval()
            entry = _Model(spec, model, False, "random weights")
        count = labels.get(entry.label, 0)
        labels[entry.label] = count + 1
        if count:
            entry.label = f"{entry.label}#{count + 1}"
        loaded.append(entry)
    return loaded


def _out(args, name: str) -> Path:
    out = Path(args.out or Path("runs/analysis") / name)
    check_writable(out)
    return out


def _title(model: _Model) -> str:
    return f"{model.label} ({model.source})"


# ------------------------------------------------------------------------------------------ equivariance
def _equivariance(args) -> int:
    models, out = _load_models(args), _out(args, "equivariance")
    generator = torch.Generator().manual_seed(args.seed)
    summaries = []
    for m in models:
        size = args.size or getattr(m.model, "input_size", (None,))[0]
        if not size:
            raise ValueError(f"{m.label}: the model has no input_size; give --size")
        x = torch.rand(args.batch_size, 3, size, size, generator=generator, dtype=torch.float64)
        own = getattr(m.model, "group", None)
        group = args.group or (own.name if own is not None and own.order > 1 else "p4m")
        report = layer_report(m.model, x, group, dtype=getattr(torch, args.dtype), local=not args.no_local)
        stem = out / f"equivariance_{m.label}"
        write_csv(stem.with_suffix(".csv"), report.rows())
        write_json(stem.with_suffix(".json"), {"model": m.label, "source": m.source, "synthetic": m.synthetic,
                                                **report.summary(), "layers": report.rows()})
        atomic_write(stem.with_suffix(".md"), f"# Equivariance of {_title(m)} under {report.group}"
                     f"{' (' + SYNTHETIC_LABEL + ')' if m.synthetic else ''}\n\n{report.to_markdown()}\n")
        save_figure(equivariance_figure(report, _title(m), m.synthetic), stem.with_suffix(".png"))
        summaries.append({"model": m.label, "source": m.source, **report.summary()})
        culprits = report.culprits()
        print(f"{m.label}: {report.group} max error {format_error(report.model.max_error)}, mean "
              f"{format_error(report.model.mean_error)} ({'exact' if report.exact else 'NOT exact'}"
              f"{'' if report.exact else ', lost at ' + str(report.first_broken().name)})"
              + (f"; layers that break it: {', '.join(r.name for r in culprits[:8])}"
                 f"{' ...' if len(culprits) > 8 else ''}" if culprits else ""))
    write_json(out / "equivariance.json", {"synthetic": any(m.synthetic for m in models), "models": summaries})
    print(f"equivariance reports: {out}")
    return 0


# --------------------------------------------------------------------------------------------- stability
def _region(args, models: list[_Model]) -> tuple[torch.Tensor, bool, str]:
    """``(image (3, S, S) in [0, 1], synthetic, description)``."""
    if args.image:
        path = Path(args.image)
        if not path.is_file():
            raise FileNotFoundError(f"--image {path} does not exist")
        try:
            with Image.open(path) as im:
                region = im.convert("RGB")
        except OSError:
            raise ValueError(f"--image {path} could not be read as an image") from None
        if args.mpp is not None:  # resample to the resolution the models were trained at
            if not args.mpp > 0:
                raise ValueError(f"--mpp must be positive, got {args.mpp}")
            scale = args.mpp / MODEL_MPP
            region = region.resize((max(1, round(region.width * scale)), max(1, round(region.height * scale))),
                                   Image.Resampling.LANCZOS)
        rgb = np.array(region)  # a writable copy (torch.from_numpy warns on PIL's read-only buffer)
        size = args.size or common_size([m.model for m in models], min(rgb.shape[:2]), below=True)
        if min(rgb.shape[:2]) < size:
            raise ValueError(f"--image {path} is {rgb.shape[1]}x{rgb.shape[0]}, smaller than the region side {size}")
        top, left = (rgb.shape[0] - size) // 2, (rgb.shape[1] - size) // 2
        rgb, source = rgb[top:top + size, left:left + size], f"{path} (centre {size} x {size})"
        synthetic = False
    else:
        size = args.size or common_size([m.model for m in models], 224)
        rgb = synthetic_tile(args.synthetic_index, seed=args.seed, size=(size, size), split="test").image
        source, synthetic = f"synthetic tile {args.synthetic_index} (seed {args.seed})", True
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() / 255, synthetic, source


def _stability(args) -> int:
    models, out = _load_models(args), _out(args, "stability")
    image, synthetic_data, source = _region(args, models)
    synthetic = synthetic_data or any(m.synthetic for m in models)
    text = stability_section({m.label: m.model for m in models}, image, out,
                             synthetic=synthetic,
                             rotations=args.rotations, group=args.group or "p4m", batch_size=args.batch_size,
                             heading="##")
    sources = "\n".join(f"- {m.label}: {m.source}" for m in models)
    atomic_write(out / "stability.md", f"# Prediction stability{' (' + SYNTHETIC_LABEL + ')' if synthetic else ''}"
                 f"\n\nRegion: {source}.\n\nModels:\n{sources}\n\n{text}")
    print(text)
    print(f"stability report: {out / 'stability.md'}")
    return 0


# --------------------------------------------------------------------------------------------------- tta
def _tta(args) -> int:
    models, out = _load_models(args), _out(args, "tta")
    if args.data:
        dataset = open_dataset(args.dataset, args.data, args.split)
    else:
        root = out / "data"
        if not pcam_path(root, "test", "y").is_file() or len(PCamDataset(root, "test")) != args.synthetic_size:
            write_synthetic_pcam(root, {"test": args.synthetic_size}, seed=args.seed, progress=args.progress)
        dataset = PCamDataset(root, "test")
    synthetic = bool(getattr(dataset, "synthetic", False)) or any(m.synthetic for m in models)
    if args.limit:
        dataset = Subset(dataset, range(min(args.limit, len(dataset))))
    rows = compare_tta({m.label: m.model for m in models}, dataset, args.group or "p4m",
                       rotations=args.rotations, stability_images=args.stability_images,
                       batch_size=args.batch_size, synthetic=synthetic, progress=args.progress)
    write_csv(out / "tta.csv", rows)
    write_json(out / "tta.json", {"synthetic": synthetic, "data": args.data or "synthetic PCam test split",
                                  "models": {m.label: m.source for m in models}, "rows": rows})
    save_figure(tta_figure(rows, synthetic), out / "tta.png")
    keys = [k for k in rows[0] if k not in ("model", "tta", "synthetic", "images")]
    lines = [f"# Test-time augmentation vs equivariance{' (' + SYNTHETIC_LABEL + ')' if synthetic else ''}", "",
             "| model | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    lines += ["| " + r["model"] + " | " + " | ".join(f"{r[k]:.4g}" for k in keys) + " |" for r in rows]
    atomic_write(out / "tta.md", "\n".join(lines) + "\n\n![tta](tta.png)\n")
    print("\n".join(lines[2:]))
    print(f"TTA comparison: {out}")
    return 0


# -------------------------------------------------------------------------------------------- efficiency
def _model_run(entry, model_args) -> ModelRun:
    if isinstance(entry, str):
        model, *augment = entry.split("+")
        return ModelRun(model, model_kwargs=_model_args(model_args, model), augment=tuple(augment))
    if isinstance(entry, dict) and "model" in entry:
        unknown = set(entry) - {"model", "label", "model_kwargs", "augment"}
        if unknown:
            raise ValueError(f"efficiency models: unknown key(s) {sorted(unknown)}; expected model, label, "
                             "model_kwargs, augment")
        return ModelRun(entry["model"], entry.get("label"), dict(entry.get("model_kwargs") or {}),
                        tuple(entry.get("augment") or ()))
    raise ValueError(f"efficiency models: expected a model name or a mapping with `model`, got {entry!r}")


def _plan(args) -> EfficiencyPlan:
    values = {}
    if args.config:
        path = Path(args.config)
        values = read_config_file(path)
        unknown = set(values) - {"models", "fractions", "seeds", "metric", "split", "out_dir", "train"}
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {sorted(unknown)}; expected models, fractions, seeds, metric, "
                             "split, out_dir, train")
    base = apply_overrides(dict(values.get("train") or {}), _options.parse_sets(args.set), TrainConfig)
    if not args.progress:
        base["progress"] = False
    entries = args.model or values.get("models") or []
    if not entries:
        raise ValueError("efficiency: give --model or `models` in the config")
    out_dir = args.out or values.get("out_dir") or "runs/analysis/efficiency"
    check_writable(out_dir)
    return EfficiencyPlan(models=tuple(_model_run(e, args.model_arg) for e in entries), base=base, out_dir=str(out_dir),
                          fractions=tuple(float(f) for f in (args.fractions or values.get("fractions")
                                                             or (1.0, 0.5, 0.25, 0.125))),
                          seeds=tuple(int(s) for s in (args.seed or values.get("seeds") or (0, 1, 2))),
                          metric=args.metric or values.get("metric"), split=values.get("split", "test"))


def _efficiency(args) -> int:
    plan = _plan(args)
    resolved = {"models": [{"model": m.model, "label": m.name, "model_kwargs": m.model_kwargs,
                            "augment": list(m.augment)} for m in plan.models],
                "fractions": list(plan.fractions), "seeds": list(plan.seeds), "metric": plan.metric,
                "split": plan.split, "out_dir": plan.out_dir, "train": plan.base}
    atomic_write(Path(plan.out_dir) / "plan.yaml", yaml.safe_dump(resolved, sort_keys=False))
    run_efficiency(plan, progress=args.progress)
    print((Path(plan.out_dir) / "summary.md").read_text())
    print(f"sample-efficiency results: {plan.out_dir}")
    return 0


# -------------------------------------------------------------------------------------------- redundancy
def _redundancy(args) -> int:
    models, out = _load_models(args), _out(args, "redundancy")
    reports = {m.label: model_redundancy(m.model, args.group or "p4m", args.threshold, args.seed) for m in models}
    synthetic = any(m.synthetic for m in models)
    rows = [{"model": name, **row} for name, report in reports.items() for row in report.rows()]
    write_csv(out / "redundancy.csv", rows)
    summary = [{"model": m.label, "source": m.source, **reports[m.label].summary()} for m in models]
    write_json(out / "redundancy.json", {"synthetic": synthetic, "models": summary, "layers": rows})
    save_figure(redundancy_figure(reports, synthetic), out / "redundancy.png")
    lines = [f"# Filter redundancy{' (' + SYNTHETIC_LABEL + ')' if synthetic else ''}", "",
             f"Fraction of filters whose cosine similarity to a rotated / mirrored copy of another filter is at "
             f"least {args.threshold:g}.", "", "| model | weights | filters | redundant fraction | chance |",
             "|---|---|---|---|---|"]
    lines += [f"| {s['model']} | {s['source']} | {s['filters']} | {s['fraction']:.3f} | {s['chance_fraction']:.3f} |"
              for s in summary]
    atomic_write(out / "redundancy.md", "\n".join(lines) + "\n\n![redundancy](redundancy.png)\n")
    print("\n".join(lines[4:]))
    print(f"redundancy report: {out}")
    return 0


# ------------------------------------------------------------------------------------------------ parser
def _common(parser, models: bool = True) -> None:
    _options.add_out(parser, help="output folder (default: runs/analysis/<analysis>)")
    _options.add_progress(parser)
    if models:
        _options.add_model(parser, metavar="SPEC",
                           help="a checkpoint file or a registered model name (repeat for several)")
        parser.add_argument("--model-arg", action="append", metavar="[MODEL:]KEY=VALUE",
                            help="argument of the named models, e.g. growth=8, or of one of them, e.g. "
                                 "densenet:growth=4 (repeatable)")
        _options.add_device(parser)
        _options.add_seed(parser, help="seed of random inputs, synthetic data and reference filters (default: 0)")


def register(subparsers) -> None:
    parser = subparsers.add_parser("analyze", help="equivariance, stability, TTA, sample-efficiency and "
                                   "filter-redundancy analyses", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True)

    p = sub.add_parser("equivariance", help="maximum and mean equivariance error, layer by layer")
    _common(p)
    p.add_argument("--group", choices=GROUP_NAMES, help="group to check (default: each model's own; p4m for z2 models)")
    p.add_argument("--size", type=int, help="side of the random square input (default: the model's input_size)")
    _options.add_batch_size(p, 1, help="inputs per check (default: 1)")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64", help="default: float64")
    p.add_argument("--no-local", action="store_true", help="skip running each layer alone on its transformed input")
    p.set_defaults(func=_equivariance)

    p = sub.add_parser("stability", help="mean / std maps under 32 sub-90-degree rotations and 8 roto-reflections")
    _common(p)
    p.add_argument("--image", help="RGB region to predict (PNG/TIFF/JPEG; centre-cropped), at the models' "
                                   f"resolution ({MODEL_MPP} um/px, 10x) or give --mpp; default: a synthetic tile")
    p.add_argument("--mpp", type=float, help=f"microns per pixel of --image; it is resampled to {MODEL_MPP} um/px "
                                             "(default: the image is taken to be at that resolution already)")
    p.add_argument("--size", type=int, help="side of the region (default: ~224, admissible for every model)")
    p.add_argument("--synthetic-index", type=int, default=0, help="which synthetic tile (default: 0)")
    p.add_argument("--rotations", type=int, default=32, help="rotations in [0, 90) degrees (default: 32)")
    p.add_argument("--group", choices=GROUP_NAMES, help="exact transformations (default: p4m)")
    _options.add_batch_size(p, 8)
    p.set_defaults(func=_stability)

    p = sub.add_parser("tta", help="8x D4 test-time augmentation vs equivariance: accuracy, stability, time")
    _common(p)
    p.add_argument("--data", help="data folder (default: a synthetic PCam test split written to <out>/data)")
    p.add_argument("--dataset", choices=EVAL_DATASETS, default="pcam", help="format of --data (default: pcam)")
    p.add_argument("--split", default="test", help="default: test")
    p.add_argument("--limit", type=int, help="use the first N items")
    p.add_argument("--synthetic-size", type=int, default=128, help="synthetic test patches (default: 128)")
    p.add_argument("--rotations", type=int, default=32, help="sub-90-degree rotations, 0 to skip (default: 32)")
    p.add_argument("--stability-images", type=int, default=16, help="images for the stability numbers (default: 16)")
    p.add_argument("--group", choices=GROUP_NAMES, help="TTA group (default: p4m, 8x)")
    _options.add_batch_size(p, 32)
    p.set_defaults(func=_tta)

    p = sub.add_parser("efficiency", help="models x data regimes x seeds; metric vs data fraction (resumable)")
    _common(p, models=False)
    p.add_argument("--config", help="YAML: models, fractions, seeds, metric, split, out_dir, train (a training config)")
    _options.add_model(p, help="registered name, '+aug' adds augmentation (e.g. densenet+d4); repeat for several")
    p.add_argument("--model-arg", action="append", metavar="[MODEL:]KEY=VALUE",
                   help="argument of the --model names (MODEL: restricts it to one of them)")
    p.add_argument("--fractions", nargs="+", type=float, help="data regimes (default: 1 0.5 0.25 0.125)")
    p.add_argument("--seed", type=int, action="append",
                   help="a training seed; repeat for several (default: 0, 1 and 2)")
    p.add_argument("--metric", help="plotted test metric (default: auc or dice)")
    _options.add_set(p, help="training config key, dots for nesting, e.g. epochs=5, device=cuda or "
                             "data.synthetic_size.train=512 (repeatable)")
    p.set_defaults(func=_efficiency)

    p = sub.add_parser("redundancy", help="fraction of filters close to a rotated / mirrored copy of another")
    _common(p)
    p.add_argument("--threshold", type=float, default=0.9, help="cosine similarity of a copy (default: 0.9)")
    p.add_argument("--group", choices=GROUP_NAMES, help="transformations of planar filters (default: p4m)")
    p.set_defaults(func=_redundancy)
