"""``cells``: seed 003's experiment (Figs. 3 and 5): rotation-invariant cell VAEs (baseline, only-STN,
inv-HNet, equ-HNet; rotation loss weight w in 0.2, 0.5, 0.9) on 256 x 256 cell patches, each trained in
six-fold cross-validation of the unlabelled patches, measured by KL under rotation, SSIM and the macro F1 of
a probe on the labelled patches in five-fold cross-validation (:mod:`equipath.cells`).

A cell of the plan is one (variant, w) and one VAE fold k of 6 (its "seed"): the unlabelled patches are cut
once into 6 seeded folds; fold k is the test set (KL, SSIM), 10 % of the rest (seeded) is the "separated
validation set" of the early stop, the remainder trains. The probe's five-fold F1 uses the labelled patches.
The table gives the mean over the VAE folds and their SD; the paper reports figures, not numbers, so the
paper column says so. A killed cell is retrained from its start (the cell VAE trainer does not resume).

``--synthetic``: SYNTHETIC procedural cells (:mod:`equipath.cells.procedural`) at 32 px instead of 256, a
tiny VAE, 2 epochs, 2 VAE folds: the plan runs end to end; its numbers say nothing about the paper.
"""

import copy
import dataclasses
import logging

import numpy as np
import torch

from equipath.cells.data import SYNTHETIC as SYNTHETIC_SOURCE
from equipath.cells.data import load_cells
from equipath.cells.metrics import evaluate_cell_vae
from equipath.cells.train import CellTrainConfig, save_cell_vae, train_cell_vae
from equipath.reproduce.common import read_config, write_scores
from equipath.reproduce.plan import Cell, Table
from equipath.training.config import build_config

__all__ = ["CELLS", "SYNTHETIC", "VAE_FOLDS"]

log = logging.getLogger(__name__)

VAE_FOLDS = 6  # seed 003: "the dataset with unlabeled cell patches is employed in six-fold cross-validation"
PROBE_FOLDS = 5  # seed 003: the probe "is evaluated in terms of F1-score in five-fold cross-validation"
REAL = {"size": 256, "n_angles": 12}
SYNTHETIC = {"size": 32, "n_unlabelled": 72, "n_labelled": 60, "n_angles": 4, "folds": 2,
             "train": {"latent_dim": 4, "width": 2, "epochs": 2, "batch_size": 16, "patience": 2,
                       "calibration_images": 32}}


def _runs(config: dict) -> list[tuple[str, float]]:
    variants, weights = config["variants"], config["weights"]
    return [(v, 0.0) for v in variants if v == "baseline"] + [(v, float(w)) for v in variants if v != "baseline"
                                                                for w in weights]


def _prepare(context) -> dict:
    if context.synthetic:
        return {"unlabelled": SYNTHETIC_SOURCE, "labelled": SYNTHETIC_SOURCE, "size": SYNTHETIC["size"],
                "synthetic": True}
    unlabelled, labelled = context.data_root / "unlabelled", context.data_root / "labelled"
    for folder in (unlabelled, labelled):
        if not folder.is_dir():
            raise FileNotFoundError(f"reproduce cells: {folder} does not exist (expected {CELLS.needs})")
    return {"unlabelled": str(unlabelled), "labelled": str(labelled), "size": REAL["size"], "synthetic": False}


def _cells(context, seeds: int) -> list[Cell]:
    base, path = read_config("cells_experiment")
    train = dict(base["train"], size=context.data.get("size", REAL["size"]), device=context.device)
    if context.synthetic:
        train.update(SYNTHETIC["train"])
    folds = SYNTHETIC["folds"] if context.synthetic and seeds == VAE_FOLDS else seeds
    cells = []
    for variant, weight in _runs(base):
        row = variant if variant == "baseline" else f"{variant} w={weight:g}"
        for fold in range(folds):
            config = copy.deepcopy(train)
            config.update(variant=variant, rotation_weight=weight, seed=fold)
            cells.append(Cell(row, "", fold, config, path.name, {"fold": fold, "folds": folds}))
    return cells


def _load(context, which: str, n: int, seed: int):
    return load_cells(context.data[which], n, context.data["size"], seed)


def _run(cell: Cell, folder, context) -> None:
    synthetic = context.synthetic
    unlabelled, _ = _load(context, "unlabelled", SYNTHETIC["n_unlabelled"], 0)
    labelled, labels = _load(context, "labelled", SYNTHETIC["n_labelled"], 1)
    if labels is None:
        raise ValueError(f"reproduce cells: {context.data['labelled']} has no labels (expected class folders)")
    fold, folds = cell.options["fold"], cell.options["folds"]
    order = np.random.default_rng(0).permutation(len(unlabelled))
    parts = np.array_split(order, folds)
    test = parts[fold]
    rest = np.random.default_rng(100 + fold).permutation(np.concatenate([p for k, p in enumerate(parts) if k != fold]))
    n_val = max(1, round(0.1 * len(rest)))
    val, train = rest[:n_val], rest[n_val:]
    config = build_config(CellTrainConfig, {**cell.config, **_overrides(context)})
    result = train_cell_vae(unlabelled[torch.as_tensor(train)], unlabelled[torch.as_tensor(val)], config,
                            context.progress)
    save_cell_vae(folder / "vae.pt", result.model, config, result.history)
    metrics = evaluate_cell_vae(result.model, unlabelled[torch.as_tensor(test)], labelled, labels,
                                SYNTHETIC["n_angles"] if synthetic else REAL["n_angles"], PROBE_FOLDS, fold)
    keep = {k: float(metrics[k]) for k in ("kl_rotation", "ssim", "f1_mean")}
    write_scores(folder, keep, f1_std=float(metrics["f1_std"]), best_epoch=result.best_epoch,
                 n_train=int(len(train)), n_val=int(len(val)), n_test=int(len(test)),
                 synthetic=synthetic)


def _overrides(context) -> dict:
    """``--set KEY=VALUE`` of the cell VAE's training keys (e.g. ``epochs=3``), typed by CellTrainConfig."""
    from equipath.training.config import load_yaml

    names = {f.name for f in dataclasses.fields(CellTrainConfig)}
    unknown = [k for k in context.overrides if k not in names]
    if unknown:
        raise ValueError(f"reproduce cells: --set {unknown[0]}: not a cell VAE training key; expected one of "
                         f"{', '.join(sorted(names))}")
    return {k: load_yaml(v, f"--set {k}") if isinstance(v, str) and k not in ("variant", "device") else v
            for k, v in context.overrides.items()}


def _score(folders, context):
    """Mean over the VAE folds (no bootstrap: the spread is the SD over folds)."""
    from equipath.reproduce.common import read_scores

    scores = [read_scores(f)["metrics"] for f in folders]
    return {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}, {}


_FIGURE = "figure only"
CELLS = Table(
    name="cells",
    title="Seed 003 (rotation-invariant cell VAEs), Figs. 3 and 5: KL under rotation, SSIM, probe macro F1",
    metrics=(("kl_rotation", "KL rot", 1), ("ssim", "SSIM", 1), ("f1_mean", "Probe F1", 1)),
    paper={(row, ""): {"kl_rotation": _FIGURE, "ssim": _FIGURE, "f1_mean": _FIGURE}
           for row in ["baseline"] + [f"{v} w={w:g}" for v in ("only-STN", "inv-HNet", "equ-HNet")
                                      for w in (0.2, 0.5, 0.9)]},
    cells=_cells, prepare=_prepare, run_cell=_run, score=_score, default_seeds=VAE_FOLDS,
    needs="DATA_ROOT/unlabelled/ (256 x 256 cell patches, images in one folder or class folders) and "
          "DATA_ROOT/labelled/<class>/*.png (256 x 256 labelled patches), as equipath.cells.data reads them",
    notes="Paper column: seed 003 reports these as figures (Figs. 3 and 5), not numbers. A cell's 'seed' is "
          "its VAE fold (six-fold cross-validation of the unlabelled patches; --n-seeds sets the number); the "
          "'seed SD' column is the SD over those folds. The probe: five-fold cross-validated macro F1 on the "
          "labelled patches. No bootstrap interval: the spread is the fold SD.",
)
