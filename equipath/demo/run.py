"""Running the quick-start experiment: data, then models x data fractions x seeds for each task.

Each task ("arm") is an :class:`~equipath.analysis.efficiency.EfficiencyPlan`: every run is one
:func:`equipath.training.train` call (its config and folder come from the plan), then one forward pass of
its best-validation checkpoint over the held-out test split that keeps the per-item *records* of the
task's metric (:class:`~equipath.evaluation.ClassificationMetric`: logit and label per patch;
:class:`~equipath.evaluation.SegmentationMetric`: confusion counts per tile). The metrics are computed
from those records, and the report pairs the records of two models over the same test items and seeds.

Example:
    >>> from equipath.demo import DemoConfig
    >>> config = DemoConfig(out_dir="runs/demo")
    >>> len(config.fractions) * len(config.seeds) * (len(config.classifiers) + len(config.segmenters))
    54
"""

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from equipath import __version__
from equipath.analysis.efficiency import EfficiencyPlan, ModelRun
from equipath.atomic import atomic_path, atomic_write, write_json
from equipath.checkpoint import check_writable, load_model
from equipath.data import PCamDataset, regime_indices, write_synthetic_pcam, write_synthetic_tiles
from equipath.data.synthetic import DEFAULT_DIFFICULTY, check_difficulty
from equipath.evaluation import ClassificationMetric, SegmentationMetric, open_dataset
from equipath.training import train
from equipath.training.distributed import resolve_device

__all__ = ["DemoConfig", "DemoRun", "RunRecord", "Arm", "run_experiment", "load_experiment", "test_records",
           "config_dict", "CLASSIFIERS", "SEGMENTERS", "MARKER"]

log = logging.getLogger(__name__)

MARKER = ".equipath-demo"

#: The classification arm: the equivariant DenseNet and its planar counterpart of the same weight count
#: (2.7K: K = 8 and K = 3 maps per layer; the papers' widths cost 20x more CPU), with and without D4
#: augmentation.
CLASSIFIERS = (ModelRun("p4m_densenet", model_kwargs={"growth": 8}),
               ModelRun("densenet", model_kwargs={"growth": 3}, augment=("d4",)),
               ModelRun("densenet", model_kwargs={"growth": 3}))
#: The segmentation arm: P4M U-Net and U-Net of the same width (parameter-matched by construction).
SEGMENTERS = (ModelRun("p4m_unet", model_kwargs={"width": 3}),
              ModelRun("unet", model_kwargs={"width": 3}, augment=("d4",)),
              ModelRun("unet", model_kwargs={"width": 3}))


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the quick-start experiment (defaults: about 10 minutes on a 2-core CPU; :meth:`full`
    is longer and more decisive).

    Attributes:
        out_dir: output folder. Defaults to ``runs/demo``.
        difficulty: of the synthetic generator (:mod:`equipath.data.synthetic`). Defaults to its default.
        classifiers, segmenters: the models of each arm (:class:`~equipath.analysis.efficiency.ModelRun`);
            the first of an arm is compared with each of the others. Default to :data:`CLASSIFIERS`,
            :data:`SEGMENTERS`; an empty tuple skips the arm.
        fractions: data regimes (nested subsets of the training split). Defaults to 1, 1/4, 1/16.
        seeds: training seeds per model and fraction (initialisation and batch order). Defaults to 0, 1, 2.
        n_train, n_valid, n_test: synthetic patches per split. Default to 512, 128, 512.
        epochs, batch_size, batches_per_epoch: training length of a classifier, the same at every fraction.
            Default to 4, 32, 8 (1,024 patches seen).
        tiles: synthetic segmentation tiles for train / valid / test. Defaults to (64, 16, 32).
        tile_size: side of a tile. Defaults to 65.
        seg_epochs, seg_batch_size, seg_batches_per_epoch: training length of a segmenter. Default to 4, 8, 8.
        bootstrap: resamples of the paired intervals. Defaults to 1000.
        stability_cells: the stability region holds this many output cells across for each model.
            Defaults to 12.
        seed: seed of the synthetic data. Defaults to 0.
        device: ``auto``, ``cpu`` or ``cuda``. Defaults to ``auto``.
        progress: progress bars. Defaults to True.
    """

    out_dir: str = "runs/demo"
    difficulty: float = DEFAULT_DIFFICULTY
    classifiers: tuple = CLASSIFIERS
    segmenters: tuple = SEGMENTERS
    fractions: tuple = (1.0, 0.25, 0.0625)
    seeds: tuple = (0, 1, 2)
    n_train: int = 512
    n_valid: int = 128
    n_test: int = 512
    epochs: int = 4
    batch_size: int = 32
    batches_per_epoch: int = 8
    tiles: tuple = (64, 16, 32)
    tile_size: int = 65
    seg_epochs: int = 4
    seg_batch_size: int = 8
    seg_batches_per_epoch: int = 8
    bootstrap: int = 1000
    stability_cells: int = 12
    seed: int = 0
    device: str = "auto"
    progress: bool = True

    def __post_init__(self):
        check_difficulty(self.difficulty)
        if len(self.seeds) < 1 or not self.fractions or len(self.tiles) != 3:
            raise ValueError("demo: expected at least one seed and one fraction, and three tile counts")

    def full(self) -> "DemoConfig":
        """The longer run of ``equipath demo --full``: wider models (9K weights: K = 16 and K = 6), 5
        fractions down to 1/16 of 2,048 patches, 5 seeds, four times the training."""
        wide = (ModelRun("p4m_densenet", model_kwargs={"growth": 16}),
                ModelRun("densenet", model_kwargs={"growth": 6}, augment=("d4",)),
                ModelRun("densenet", model_kwargs={"growth": 6}))
        return replace(self, classifiers=wide, fractions=(1.0, 0.5, 0.25, 0.125, 0.0625), seeds=(0, 1, 2, 3, 4),
                       n_train=2048, n_valid=256, n_test=1024, epochs=16, tiles=(128, 32, 64), seg_epochs=16,
                       bootstrap=2000)


@dataclass
class RunRecord:
    """One trained model at one fraction and seed, evaluated on the test split."""

    arm: str
    label: str
    model: str
    fraction: float
    seed: int
    params: int
    augment: tuple
    train_items: int
    train_seconds: float
    checkpoint: Path
    metrics: dict
    records: dict = field(repr=False)

    def row(self) -> dict:
        """The run as a flat row (no records), in the columns of :func:`~equipath.analysis.efficiency.summarize`."""
        return {"label": self.label, "model": self.model, "fraction": self.fraction, "seed": self.seed,
                "train_items": self.train_items, "params": self.params, "synthetic": True,
                "train_seconds": self.train_seconds, **self.metrics}


@dataclass(frozen=True)
class Arm:
    """One task of the experiment: its plan, metric and test split."""

    name: str
    plan: EfficiencyPlan
    metric: str
    test_set: object
    make_metric: object


@dataclass
class DemoRun:
    """Everything the report reads: the config, where things are, the runs, the timings."""

    config: DemoConfig
    out_dir: Path
    device: torch.device
    started: float = field(default_factory=time.perf_counter)
    arms: dict = field(default_factory=dict)
    runs: list = field(default_factory=list)
    comparisons: dict = field(default_factory=dict)
    planned: int = 0
    timings: dict = field(default_factory=dict)
    report_path: Path | None = None

    def arm_runs(self, arm: str) -> list:
        return [r for r in self.runs if r.arm == arm]


def _prepare(config: DemoConfig, keep_runs: bool = False) -> Path:
    out = Path(config.out_dir)
    check_writable(out)
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise ValueError(f"{out} is not an equipath demo folder (it has files but no {MARKER}); "
                         "choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / MARKER, f"equipath {__version__} demo output folder; `equipath demo` replaces runs/\n")
    if not keep_runs:
        shutil.rmtree(out / "runs", ignore_errors=True)
    return out


def _data_is(folder: Path, recipe: dict) -> bool:
    stamp = folder / "recipe.json"
    return stamp.is_file() and json.loads(stamp.read_text()) == recipe


def _write_data(config: DemoConfig, root: Path) -> None:
    """The synthetic PCam set and tiles, rewritten only when their recipe (sizes, seed, difficulty) changed."""
    sizes = {"train": config.n_train, "valid": config.n_valid, "test": config.n_test}
    recipe = {"sizes": sizes, "seed": config.seed, "difficulty": config.difficulty}
    if config.classifiers and not _data_is(root / "pcam", recipe):
        shutil.rmtree(root / "pcam", ignore_errors=True)
        write_synthetic_pcam(root / "pcam", sizes, seed=config.seed, progress=config.progress, workers=2,
                             difficulty=config.difficulty)
        write_json(root / "pcam" / "recipe.json", recipe)
    tiles = dict(zip(("train", "valid", "test"), config.tiles))
    recipe = {"tiles": tiles, "size": config.tile_size, "seed": config.seed, "difficulty": config.difficulty}
    if config.segmenters and not _data_is(root / "tiles", recipe):
        shutil.rmtree(root / "tiles", ignore_errors=True)
        for split, n in tiles.items():
            write_synthetic_tiles(root / "tiles" / split, n, (config.tile_size, config.tile_size), config.seed,
                                  split, progress=config.progress, difficulty=config.difficulty)
        write_json(root / "tiles" / "recipe.json", recipe)


def _arms(config: DemoConfig, out: Path) -> dict:
    common = {"device": config.device, "progress": config.progress, "resume": True, "eval_batch_size": 64}
    arms = {}
    if config.classifiers:
        sizes = {"train": config.n_train, "valid": config.n_valid, "test": config.n_test}
        base = {**common, "epochs": config.epochs, "batch_size": config.batch_size,
                "batches_per_epoch": config.batches_per_epoch,
                "data": {"dataset": "synthetic_pcam", "root": str(out / "data" / "pcam"), "val_samples": None,
                         "synthetic_size": sizes}}
        plan = EfficiencyPlan(config.classifiers, base, str(out / "runs" / "classification"), config.fractions,
                              config.seeds)
        arms["classification"] = Arm("classification", plan, "auc", PCamDataset(out / "data" / "pcam", "test"),
                                     ClassificationMetric)
    if config.segmenters:
        base = {**common, "epochs": config.seg_epochs, "batch_size": config.seg_batch_size,
                "batches_per_epoch": config.seg_batches_per_epoch,
                "data": {"dataset": "segmentation", "root": str(out / "data" / "tiles"), "val_samples": None,
                         "patch_size": config.tile_size}}
        plan = EfficiencyPlan(config.segmenters, base, str(out / "runs" / "segmentation"), config.fractions,
                              config.seeds)
        test = open_dataset("segmentation", out / "data" / "tiles", "test", config.tile_size)
        arms["segmentation"] = Arm("segmentation", plan, "dice", test,
                                   lambda: SegmentationMetric(2, distances=False))
    return arms


@torch.no_grad()
def test_records(model, dataset, metric, device, batch_size: int = 64) -> dict:
    """One pass of ``model`` (from :func:`equipath.models.load_model`: it normalises its input) over
    ``dataset``: the ``metric``'s per-item records (its ``records`` method on every batch, concatenated)."""
    model = model.to(device).eval()
    parts = []
    for x, y in DataLoader(dataset, batch_size=batch_size):
        logits = model(x.to(device)).float().cpu()
        parts.append(metric.records(logits if model.task == "classification" else logits.argmax(1), y))
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def _run_one(run: DemoRun, arm: Arm, model_run: ModelRun, fraction: float, seed: int) -> RunRecord:
    config = arm.plan.config(model_run, fraction, seed)
    start = time.perf_counter()
    result = train(config)
    seconds = time.perf_counter() - start
    model, state = load_model(result.best, map_location=run.device)
    metric = arm.make_metric()
    records = test_records(model, arm.test_set, metric, run.device)
    if arm.name == "classification":  # the trainer's regime: by pseudo-slide
        slides = PCamDataset(config.data.root, "train").slides
        train_items = len(regime_indices(len(slides), fraction, config.data.regime_seed, slides))
    else:
        train_items = len(regime_indices(run.config.tiles[0], fraction, config.data.regime_seed))
    record = RunRecord(arm.name, model_run.name, model_run.model, float(fraction), int(seed),
                       sum(p.numel() for p in model.parameters()), tuple(model_run.augment), train_items, seconds,
                       Path(result.best), type(metric).compute(records), records)
    _save_record(record, arm.plan.run_dir(model_run, fraction, seed), _train_config(arm, model_run, fraction, seed))
    return record


def _save_record(record: RunRecord, folder: Path, train_config: dict) -> None:
    """``demo_result.json`` (everything but the records) and ``demo_records.npz`` beside the checkpoint."""
    with atomic_path(folder / "demo_records.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **record.records)
    write_json(folder / "demo_result.json", {**record.row(), "arm": record.arm, "augment": list(record.augment),
                                             "checkpoint": str(record.checkpoint), "metrics": record.metrics,
                                             "train_config": train_config})


def _load_record(arm: str, folder: Path, train_config: dict) -> RunRecord | None:
    """The saved run in ``folder``, or None when there is none or it was trained with another config."""
    path = folder / "demo_result.json"
    if not path.is_file() or not (folder / "demo_records.npz").is_file():
        return None
    row = json.loads(path.read_text())
    if not _same_settings(row.get("train_config"), train_config):
        return None
    with np.load(folder / "demo_records.npz") as data:
        records = {k: data[k] for k in data.files}
    metrics = {k: (float("nan") if v is None else v) for k, v in row["metrics"].items()}
    return RunRecord(arm, row["label"], row["model"], row["fraction"], row["seed"], row["params"],
                     tuple(row["augment"]), row["train_items"], row["train_seconds"], Path(row["checkpoint"]),
                     metrics, records)


def _same_settings(saved, now) -> bool:
    """Whether a saved training config agrees with the current one on every key both have (keys that a
    later equipath added to the config are not in old records and are ignored)."""
    if isinstance(saved, dict) and isinstance(now, dict):
        return all(_same_settings(saved[k], now[k]) for k in saved.keys() & now.keys())
    return saved == now


def _train_config(arm: Arm, model_run: ModelRun, fraction: float, seed: int) -> dict:
    """The run's training config as JSON values, less what does not change the result (what a saved run
    must match to be reused)."""
    values = json.loads(json.dumps(asdict(arm.plan.config(model_run, fraction, seed)), default=str))
    return {k: v for k, v in values.items() if k not in ("resume", "progress", "device", "eval_batch_size")}


def _schedule(arms: dict) -> list:
    """Every ``(arm, model run, fraction, seed)``, seeds outermost, then fractions, arms and models, so an
    interrupted experiment has whole seeds of every cell."""
    jobs = [(arm, m, f, s) for arm in arms.values() for m, f, s in arm.plan.runs()]
    order = {arm.name: i for i, arm in enumerate(arms.values())}

    def key(job):
        arm, m, f, s = job
        return (arm.plan.seeds.index(s), arm.plan.fractions.index(f), order[arm.name], arm.plan.models.index(m))

    return sorted(jobs, key=key)


def load_experiment(config: DemoConfig, partial: bool = False) -> DemoRun:
    """The :class:`DemoRun` of the experiment in ``config.out_dir``, read back from its run folders (a new
    report without retraining: ``equipath demo --report-only``). A missing run is an error unless
    ``partial``, which reads the runs that finished (the report then says how many)."""
    out = Path(config.out_dir)
    if not (out / MARKER).is_file():
        raise ValueError(f"{out} is not an equipath demo folder (no {MARKER}); run `equipath demo --out {out}` first")
    run = DemoRun(config, out, resolve_device(config.device), time.perf_counter())
    run.arms = _arms(config, out)
    jobs = _schedule(run.arms)
    for arm, m, f, s in jobs:
        record = _load_record(arm.name, arm.plan.run_dir(m, f, s), _train_config(arm, m, f, s))
        if record is None and not partial:
            raise FileNotFoundError(f"{arm.plan.run_dir(m, f, s)} holds no finished run of these settings: "
                                    "run the demo again (or pass --partial)")
        if record is not None:
            run.runs.append(record)
    run.planned = len(jobs)
    timings = out / "runs" / "timings.json"
    run.timings = json.loads(timings.read_text()) if timings.is_file() else {}
    run.timings.pop("figures and report", None)
    run.timings.pop("total", None)
    run.started -= sum(run.timings.values())  # the total counts the experiment's stages and this report
    return run


def run_experiment(config: DemoConfig, resume: bool = False) -> DemoRun:
    """Write the data and train and test every run of every arm (with ``resume``, reuse the finished runs
    of the same settings in ``config.out_dir``); returns the :class:`DemoRun` (no report)."""
    started = time.perf_counter()
    out = _prepare(config, keep_runs=resume)
    run = DemoRun(config, out, resolve_device(config.device), started)
    start = time.perf_counter()
    _write_data(config, out / "data")
    run.timings["synthetic data"] = time.perf_counter() - start
    run.arms = _arms(config, out)
    jobs = _schedule(run.arms)
    run.planned = len(jobs)
    spent = {name: 0.0 for name in run.arms}
    for i, (arm, model_run, fraction, seed) in enumerate(jobs):
        start = time.perf_counter()
        folder = arm.plan.run_dir(model_run, fraction, seed)
        record = _load_record(arm.name, folder, _train_config(arm, model_run, fraction, seed)) if resume else None
        log.info("demo run %d/%d (%s): %s at fraction %g, seed %d%s", i + 1, len(jobs), arm.name, model_run.name,
                 fraction, seed, ", finished earlier" if record else "")
        run.runs.append(record or _run_one(run, arm, model_run, fraction, seed))
        spent[arm.name] += time.perf_counter() - start
        write_json(out / "runs" / "timings.json", {**run.timings, **{f"{k}: runs": v for k, v in spent.items()}})
    run.timings.update({f"{k}: {len(run.arm_runs(k))} runs": v for k, v in spent.items()})
    write_json(out / "runs" / "timings.json", run.timings)
    return run


def config_dict(config: DemoConfig) -> dict:
    """The config as plain JSON values."""
    values = asdict(config)
    for key in ("classifiers", "segmenters"):
        values[key] = [{"label": m.name, "model": m.model, "model_kwargs": m.model_kwargs, "augment": list(m.augment)}
                       for m in getattr(config, key)]
    return values
