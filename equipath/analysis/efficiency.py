"""Sample efficiency (seed 000 Table 2, seed 001 Table 1): train models on nested data regimes with
several seeds and plot a test metric against the fraction of training data, with error bars.

A plan is a list of runs ``models x fractions x seeds``. Each run is one :func:`equipath.training.train`
call in ``<out_dir>/<label>/f<fraction>/s<seed>/`` whose config is the base config with ``model``,
``model_kwargs``, ``data.augment``, ``data.fraction`` and ``seed`` set (the regime subsets are nested and
fixed by ``data.regime_seed``, so seeds vary initialisation and batch order only), followed by an
evaluation of its ``best.pt`` (lowest validation loss) on the test split. ``result.json`` marks a finished
run: running the plan again skips finished runs, and the trainer resumes an interrupted one from its
``last.pt``. A synthetic data set is written once, to ``<out_dir>/data``, and shared by every run.

Outputs: ``runs.csv`` (one row per run), ``summary.csv`` (mean, standard deviation over seeds and count
per model and fraction for every metric), ``summary.md`` and ``efficiency.png`` (the chosen metric against
the data fraction, mean +- standard deviation), all labelled synthetic when the data are.

Example:
    >>> plan = EfficiencyPlan(models=(ModelRun("p4m_densenet"), ModelRun("densenet", augment=("d4",))),
    ...                       base={"epochs": 100}, out_dir="runs/efficiency")
    >>> len(plan.runs())   # 2 models x 4 fractions x 3 seeds
    24
"""

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from equipath.analysis.io import SYNTHETIC_LABEL
from equipath.atomic import atomic_write, save_figure, write_csv, write_json
from equipath.checkpoint import load_model
from equipath.data import REGIME_FRACTIONS, PCamDataset, SyntheticSegmentation
from equipath.evaluation import evaluate_model, open_dataset
from equipath.training import TrainConfig, train
from equipath.training.datasets import build_datasets
from equipath.training.distributed import resolve_device

__all__ = ["ModelRun", "EfficiencyPlan", "run_efficiency", "summarize", "efficiency_figure", "write_outputs"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelRun:
    """One model of a plan.

    Attributes:
        model: registered model name.
        label: name of the line in the plot and of its folder. Defaults to ``model`` (plus ``+`` and the
            augmentations when there are any, e.g. ``densenet+d4`` for seed 000's "DenseNet+").
        model_kwargs: arguments of ``create_model``. Defaults to none.
        augment: training augmentations (``d4``, ``elastic``, ``noise``, ``stain``). Defaults to none.
    """

    model: str
    label: str | None = None
    model_kwargs: dict = field(default_factory=dict)
    augment: tuple = ()

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        return self.model + ("+" + "+".join(self.augment) if self.augment else "")


@dataclass(frozen=True)
class EfficiencyPlan:
    """Models x data fractions x seeds, trained from one base config.

    Attributes:
        models: the :class:`ModelRun` s.
        base: a :class:`~equipath.training.TrainConfig` dict without ``model`` (epochs, data, ...).
        out_dir: the plan's folder.
        fractions: data regimes. Defaults to 1, 0.5, 0.25, 0.125 (seeds 000 and 001).
        seeds: training seeds per model and fraction. Defaults to 0, 1, 2.
        metric: the plotted test metric (``auc``, ``accuracy``, ``nll``, ``dice``, ...). Defaults to ``auc``
            for classifiers and ``dice`` for segmentation when None.
        split: the evaluation split. Defaults to ``test``.
    """

    models: tuple
    base: dict
    out_dir: str
    fractions: tuple = REGIME_FRACTIONS
    seeds: tuple = (0, 1, 2)
    metric: str | None = None
    split: str = "test"

    def __post_init__(self):
        if not self.models or not self.fractions or not self.seeds:
            raise ValueError("efficiency plan: expected at least one model, one fraction and one seed")
        for f in self.fractions:
            if not 0 < f <= 1:
                raise ValueError(f"efficiency plan: fractions must be in (0, 1], got {f}")
        labels = [m.name for m in self.models]
        if len(set(labels)) != len(labels):
            raise ValueError(f"efficiency plan: model labels must be distinct, got {labels}")
        if "model" in self.base:
            raise ValueError("efficiency plan: the base config must not name a model (give them in `models`)")

    def run_dir(self, run: ModelRun, fraction: float, seed: int) -> Path:
        return Path(self.out_dir) / run.name / f"f{fraction:g}" / f"s{seed}"

    def config(self, run: ModelRun, fraction: float, seed: int) -> TrainConfig:
        """The training config of one run (validated by ``TrainConfig.from_dict``)."""
        values = dict(self.base)
        data = dict(values.get("data", {}))
        if data.get("root") is None and data.get("dataset", "synthetic_pcam").startswith("synthetic"):
            data["root"] = str(Path(self.out_dir) / "data")
        data.update(fraction=float(fraction), augment=list(run.augment))
        values.update(model=run.model, model_kwargs=dict(run.model_kwargs), data=data, seed=int(seed),
                      out_dir=str(self.run_dir(run, fraction, seed)))
        return TrainConfig.from_dict(values)

    def runs(self) -> list[tuple]:
        """``(ModelRun, fraction, seed)`` for every run, models outermost."""
        return [(m, f, s) for m in self.models for f in self.fractions for s in self.seeds]


def _test_set(config: TrainConfig, split: str):
    data = config.data
    if data.dataset in ("pcam", "synthetic_pcam"):
        return PCamDataset(data.root, split)
    if data.dataset == "synthetic_segmentation":
        size = data.synthetic_size.get(split)
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"config: data.synthetic_size has no positive {split!r} size: {data.synthetic_size}")
        return SyntheticSegmentation(size, (data.patch_size, data.patch_size), config.seed, split)
    return open_dataset(data.dataset, data.root, split, data.patch_size, data.cell_radius)


def _run_one(plan: EfficiencyPlan, run: ModelRun, fraction: float, seed: int, progress: bool) -> dict:
    config = plan.config(run, fraction, seed)
    result = train(config)
    model, state = load_model(result.best, map_location=resolve_device(config.device))
    test = _test_set(config, plan.split)
    evaluation = evaluate_model(model, test, batch_size=config.eval_batch_size,
                                device=resolve_device(config.device), progress=progress, n_bootstrap=0)
    train_items = len(build_datasets(config, model)[0])
    return {"label": run.name, "model": run.model, "fraction": float(fraction), "seed": int(seed),
            "train_items": train_items, "best_epoch": state.get("epoch"), "epochs": config.epochs,
            "split": plan.split, "test_items": evaluation["n"], "synthetic": evaluation["synthetic"],
            **evaluation["metrics"]}


def run_efficiency(plan: EfficiencyPlan, progress: bool = True) -> list[dict]:
    """Run every unfinished run of ``plan``, then write its outputs (:func:`write_outputs`) into
    ``plan.out_dir``; returns the rows of every run (finished earlier or now)."""
    for run in plan.models:  # fail on a bad config before any training starts
        plan.config(run, plan.fractions[0], plan.seeds[0])
    rows, runs = [], plan.runs()
    for i, (run, fraction, seed) in enumerate(runs):
        marker = plan.run_dir(run, fraction, seed) / "result.json"
        if marker.is_file():
            log.info("run %d/%d %s fraction %g seed %d: finished, skipped", i + 1, len(runs), run.name, fraction, seed)
            rows.append(_read_result(marker))
            continue
        log.info("run %d/%d %s fraction %g seed %d", i + 1, len(runs), run.name, fraction, seed)
        row = _run_one(plan, run, fraction, seed, progress)
        write_json(marker, row)
        rows.append(row)
    write_outputs(plan, rows)
    return rows


def _read_result(path: Path) -> dict:
    try:
        row = json.loads(path.read_text())
    except ValueError:
        raise ValueError(f"{path} is not a finished-run record (invalid JSON); delete it to rerun that run") from None
    return {k: (math.nan if v is None else v) for k, v in row.items()}


def summarize(rows: list[dict]) -> list[dict]:
    """Per ``(label, fraction)``: ``<metric>_mean``, ``<metric>_std`` (over seeds, ``ddof=1``; 0 for one
    seed) and ``n`` for every numeric metric of the rows."""
    skip = {"label", "model", "fraction", "seed", "split", "synthetic", "train_items", "best_epoch", "epochs",
            "test_items"}
    groups: dict = {}
    for row in rows:
        groups.setdefault((row["label"], row["fraction"]), []).append(row)
    out = []
    for (label, fraction), members in groups.items():
        entry = {"label": label, "fraction": fraction, "n": len(members),
                 "train_items": members[0].get("train_items"),
                 "synthetic": any(bool(m.get("synthetic")) for m in members)}
        for key in members[0]:
            if key in skip or not isinstance(members[0][key], (int, float)):
                continue
            values = np.array([m[key] for m in members], dtype=np.float64)
            entry[f"{key}_mean"] = float(values.mean())
            entry[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        out.append(entry)
    return out


def _metric(plan: EfficiencyPlan, summary: list[dict]) -> str:
    if plan.metric:
        return plan.metric
    return "auc" if summary and "auc_mean" in summary[0] else "dice"


def efficiency_figure(summary: list[dict], metric: str, synthetic: bool) -> Figure:
    """``metric`` (mean +- std over seeds) against the fraction of training data, one line per model."""
    fig = Figure(figsize=(5.5, 4))
    ax = fig.subplots()
    for label in dict.fromkeys(r["label"] for r in summary):
        points = sorted((r["fraction"], r.get(f"{metric}_mean", math.nan), r.get(f"{metric}_std", math.nan))
                        for r in summary if r["label"] == label)
        f, mean, std = (np.array(v) for v in zip(*points))
        ax.errorbar(f * 100, mean, yerr=std, marker="o", capsize=3, label=label)
    ax.set_xscale("log", base=2)
    fractions = sorted({r["fraction"] for r in summary})
    ax.set_xticks([f * 100 for f in fractions], [f"{f * 100:g}%" for f in fractions])
    ax.set_xlabel("training data")
    ax.set_ylabel(f"test {metric} (mean +- std over seeds)")
    ax.legend(fontsize=8)
    ax.set_title(f"sample efficiency{' - ' + SYNTHETIC_LABEL if synthetic else ''}", fontsize=10)
    return fig


def _markdown(summary: list[dict], metric: str, synthetic: bool) -> str:
    lines = [f"# Sample efficiency{' (' + SYNTHETIC_LABEL + ')' if synthetic else ''}", "",
             f"| model | data | {metric} (mean +- std) | seeds |", "|---|---|---|---|"]
    for r in summary:
        lines.append(f"| {r['label']} | {r['fraction'] * 100:g}% | {r.get(metric + '_mean', math.nan):.4f} "
                     f"+- {r.get(metric + '_std', math.nan):.4f} | {r['n']} |")
    return "\n".join(lines) + "\n"


def write_outputs(plan: EfficiencyPlan, rows: list[dict]) -> None:
    """``runs.csv``, ``summary.csv``, ``summary.md``, ``summary.json`` and ``efficiency.png`` of ``rows``."""
    out = Path(plan.out_dir)
    summary = summarize(rows)
    metric = _metric(plan, summary)
    synthetic = any(bool(r.get("synthetic")) for r in rows)
    write_csv(out / "runs.csv", rows)
    write_csv(out / "summary.csv", summary)
    write_json(out / "summary.json", {"metric": metric, "synthetic": synthetic, "summary": summary})
    atomic_write(out / "summary.md", _markdown(summary, metric, synthetic))
    save_figure(efficiency_figure(summary, metric, synthetic), out / "efficiency.png")
