"""The seed 003 experiment on the procedural cells (SYNTHETIC): every encoder variant, and each rotation
loss weight ``w`` for the variants with a spatial transformer, trained and evaluated with the same data
and settings; one table of representation KL under rotation (seed 003 Fig. 3), SSIM and probe F1
(Fig. 5).

Example (a few seconds; real runs use the defaults):
    >>> import tempfile
    >>> config = CellExperimentConfig(variants=("baseline",), n_train=24, n_val=12, n_test=12, n_labelled=24,
    ...                               n_angles=4, folds=2, train=CellTrainConfig(width=2, latent_dim=4, epochs=1))
    >>> rows = run_experiment(config, tempfile.mkdtemp(), progress=False)
    >>> [(r["variant"], r["rotation_weight"]) for r in rows]
    [('baseline', 0.0)]
"""

import logging
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from equipath.atomic import atomic_write, save_figure, write_csv, write_json
from equipath.cells.data import SYNTHETIC, load_cells
from equipath.cells.metrics import evaluate_cell_vae
from equipath.cells.train import CellTrainConfig, save_cell_vae, train_cell_vae
from equipath.cells.vae import VARIANTS
from equipath.training.config import check_types

__all__ = ["CellExperimentConfig", "run_experiment", "format_table"]

log = logging.getLogger(__name__)

LABEL = "SYNTHETIC procedural cell patches (equipath.cells.procedural), not seed 003's bone-marrow data"


@dataclass
class CellExperimentConfig:
    """Settings of :func:`run_experiment`.

    Attributes:
        variants: encoder variants to run. Defaults to all of ``equipath.cells.vae.VARIANTS``.
        weights: rotation loss weights for every variant but the baseline (which has none). Defaults to
            (0.2, 0.5, 0.9) as in seed 003.
        n_train, n_val, n_test, n_labelled: procedural patches for training, early stopping, KL and SSIM,
            and the cross-validated probe; each set has its own seed. Defaults to 800, 300, 300, 600.
        n_angles: angles of the KL evaluation (every ``360 / n_angles`` degrees). Defaults to 12.
        folds: cross-validation folds of the probe. Defaults to 5.
        seed: seeds the data (``seed`` .. ``seed + 3``) and training (it replaces ``train.seed``). Defaults to 0.
        train: the training settings of every run, a :class:`~equipath.cells.train.CellTrainConfig` whose
            ``variant`` and ``rotation_weight`` each run sets (declared once, there). Defaults to its
            defaults with ``patience=4``.
    """

    variants: tuple[str, ...] = VARIANTS
    weights: tuple[float, ...] = (0.2, 0.5, 0.9)
    n_train: int = 800
    n_val: int = 300
    n_test: int = 300
    n_labelled: int = 600
    n_angles: int = 12
    folds: int = 5
    seed: int = 0
    train: CellTrainConfig = field(default_factory=lambda: CellTrainConfig(patience=4))

    def __post_init__(self):
        check_types(self, "cell experiment")  # the package's one set of config rules
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown or not self.variants:
            raise ValueError(f"cell experiment: variants must be a non-empty list of {', '.join(VARIANTS)}, got {list(self.variants)}")
        if not self.weights or any(w <= 0 for w in self.weights):
            raise ValueError(f"cell experiment: weights must be a non-empty list of positive numbers, got {list(self.weights)}")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type is int and value < (f.name != "seed"):
                raise ValueError(f"cell experiment: {f.name} must be a {'non-negative' if f.name == 'seed' else 'positive'} "
                                 f"int, got {value!r}")

    def runs(self) -> list[tuple[str, float]]:
        """``(variant, w)`` of every run: the baseline once with ``w = 0``, the others once per weight."""
        return [(v, 0.0) for v in self.variants if v == "baseline"] + [
            (v, w) for v in self.variants if v != "baseline" for w in self.weights]

    def train_config(self, variant: str, weight: float) -> CellTrainConfig:
        return replace(self.train, variant=variant, rotation_weight=weight, seed=self.seed)


_COLUMNS = ("variant", "rotation_weight", "kl_rotation", "ssim", "f1_mean", "f1_std", "best_epoch", "epochs_run",
            "train_seconds")


def format_table(rows: list[dict]) -> str:
    """A Markdown table of the runs, headed by the synthetic-data label."""
    lines = [f"Cell representations on {LABEL}.", "",
             "| variant | w | KL under rotation | SSIM | macro F1 (k-fold) | best epoch | train s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['rotation_weight']:g} | {r['kl_rotation']:.3f} | {r['ssim']:.3f} | "
                     f"{r['f1_mean']:.3f} ± {r['f1_std']:.3f} | {r['best_epoch']}/{r['epochs_run']} | "
                     f"{r['train_seconds']:.0f} |")
    trends = []
    for v in dict.fromkeys(r["variant"] for r in rows if r["rotation_weight"] > 0):
        kls = [r["kl_rotation"] for r in sorted(rows, key=lambda r: r["rotation_weight"]) if r["variant"] == v]
        if len(kls) > 1:
            falls = all(b <= a for a, b in zip(kls, kls[1:]))
            trends.append(f"{v}: KL {' -> '.join(f'{k:.3f}' for k in kls)} as w grows "
                          f"({'falls monotonically' if falls else 'does NOT fall monotonically'})")
    return "\n".join(lines + ([""] + trends if trends else [])) + "\n"


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for ax, key, title in zip(axes, ("kl_rotation", "ssim", "f1_mean"),
                              ("KL under rotation (log)", "SSIM", "probe macro F1")):
        for v in dict.fromkeys(r["variant"] for r in rows):
            pts = sorted((r["rotation_weight"], r[key]) for r in rows if r["variant"] == v)
            if v == "baseline":
                ax.axhline(pts[0][1], color="k", ls="--", label="baseline (w = 0)")
            else:
                ax.plot(*zip(*pts), "o-", label=v)
        ax.set_xlabel("rotation loss weight w")
        ax.set_title(title)
        if key == "kl_rotation":
            ax.set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.suptitle("SYNTHETIC procedural cells", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def _write(rows: list[dict], config: CellExperimentConfig, out: Path) -> None:
    write_json(out / "results.json", {"label": LABEL, "config": asdict(config), "runs": rows})
    write_csv(out / "results.csv", rows, _COLUMNS)
    atomic_write(out / "results.md", format_table(rows))


def run_experiment(config: CellExperimentConfig, out_dir, progress: bool = True) -> list[dict]:
    """Train and evaluate every run of ``config`` on procedural cells; write ``results.json``,
    ``results.csv``, ``results.md`` (after every run), ``results.png`` and one checkpoint per run under
    ``out_dir/checkpoints``. Returns one row per run (metrics of
    :func:`~equipath.cells.metrics.evaluate_cell_vae`, training time and history)."""
    out = Path(out_dir)
    s = config.seed
    size = config.train.size
    train, _ = load_cells(SYNTHETIC, config.n_train, size, s)
    val, _ = load_cells(SYNTHETIC, config.n_val, size, s + 1)
    test, _ = load_cells(SYNTHETIC, config.n_test, size, s + 2)
    labelled, labels = load_cells(SYNTHETIC, config.n_labelled, size, s + 3)
    rows = []
    for variant, weight in config.runs():
        train_config = config.train_config(variant, weight)
        start = time.perf_counter()
        result = train_cell_vae(train, val, train_config, progress)
        seconds = time.perf_counter() - start
        save_cell_vae(out / "checkpoints" / f"{variant}_w{weight:g}.pt", result.model, train_config, result.history)
        metrics = evaluate_cell_vae(result.model, test, labelled, labels, config.n_angles, config.folds, s)
        row = {"variant": variant, "rotation_weight": weight, **metrics, "best_epoch": result.best_epoch,
               "epochs_run": len(result.history), "train_seconds": seconds, "history": result.history}
        rows.append(row)
        log.info("%s w=%g: KL %.3f, SSIM %.3f, F1 %.3f (%.0f s)", variant, weight, row["kl_rotation"], row["ssim"],
                 row["f1_mean"], seconds)
        _write(rows, config, out)
    _plot(rows, out / "results.png")
    return rows
