"""``pcam-table1``: seed 000 Table 1, the five DenseNets (six rows) on PatchCamelyon.

Each row is a repository config (its header names the row); a cell trains it (seed 000's schedule) and
scores the lowest-validation-loss weights on the PCam test split: NLL, accuracy and AUC with bootstrap
intervals over test patches. The paper reports one run per row and no spread, so one seed is the default.

``--synthetic``: a SYNTHETIC PCam-format set (512 / 128 / 256 patches), every model at about 1/4 of its
width (its group kept), 2 epochs of 6 batches of 16.
"""

import copy

import numpy as np

from equipath.data import PCamDataset
from equipath.data.pcam import pcam_path
from equipath.data.synthetic_sets import write_synthetic_pcam
from equipath.evaluation.classification import classification_metrics
from equipath.training.distributed import resolve_device
from equipath.reproduce.common import (predict_logits, prepared, read_config, score_classification, train_cell,
                                       write_scores)
from equipath.reproduce.plan import Cell, Table

__all__ = ["PCAM_TABLE1", "ROWS", "SYNTHETIC"]

# row -> (config, the paper's K, #W, NLL, Acc, AUC as printed in seed 000 Table 1)
ROWS = {
    "P4M-DenseNet": ("pcam_p4m_densenet", "64", "119K", "0.260", "89.8", "96.3"),
    "P4M-DenseNet M": ("pcam_p4m_densenet_m", "24", "19K", "0.273", "89.3", "95.8"),
    "P4-DenseNet": ("pcam_p4_densenet", "48", "125K", "0.329", "89.0", "94.5"),
    "DenseNet+": ("pcam_densenet", "24", "128K", "0.306", "88.1", "95.1"),
    "DenseNet+ M": ("pcam_densenet_m", "64", "902K", "0.365", "87.2", "94.6"),
    "DenseNet": ("pcam_densenet_noaug", "24", "128K", "0.315", "87.6", "95.5"),
}

# the synthetic stand-in: set sizes, the training schedule, and K per model (a multiple of |G|, K's order kept)
SYNTHETIC = {"sizes": {"train": 512, "valid": 128, "test": 256},
             "train": {"epochs": 2, "batch_size": 16, "batches_per_epoch": 6, "eval_batch_size": 64},
             "val_samples": 128,
             "growth": {"p4m_densenet": 16, "p4m_densenet_m": 8, "p4_densenet": 8, "densenet": 8, "densenet_m": 16}}


def _prepare(context) -> dict:
    if context.synthetic:
        root = prepared(context.out / "data" / "pcam",
                        lambda folder: write_synthetic_pcam(folder, SYNTHETIC["sizes"], seed=0, progress=False),
                        sizes=SYNTHETIC["sizes"])
        return {"pcam": str(root), "synthetic": True, "sizes": SYNTHETIC["sizes"]}
    root = context.data_root
    missing = [pcam_path(root, s, k).name for s in ("train", "valid", "test") for k in ("x", "y")
               if not (pcam_path(root, s, k).is_file() or pcam_path(root, s, k, ".h5.gz").is_file())]
    if missing:
        raise FileNotFoundError(f"reproduce pcam-table1: {root} lacks {', '.join(missing)} (.h5 or .h5.gz); "
                                f"expected the PCam files in one folder")
    return {"pcam": str(root), "synthetic": False}


def _cells(context, seeds: int) -> list[Cell]:
    cells = []
    for row, (config_file, *_) in ROWS.items():
        config, path = read_config(config_file)
        config = copy.deepcopy(config)
        config["data"]["root"] = context.data["pcam"]
        if context.synthetic:
            config["model_kwargs"] = {"growth": SYNTHETIC["growth"][config["model"]]}
            config["data"].update(val_samples=SYNTHETIC["val_samples"], num_workers=0)
            config.update(SYNTHETIC["train"])
        cells += [Cell(row, "", seed, config, path.name) for seed in range(seeds)]
    return cells


def _run(cell: Cell, folder, context) -> None:
    best = train_cell(cell, folder, context)
    device = str(resolve_device(context.device))
    logits, labels = predict_logits(best, PCamDataset(context.data["pcam"], "test", progress=False), device)
    np.savez(folder / "test_logits.npz", logits=logits, labels=labels)
    write_scores(folder, classification_metrics(logits, labels), checkpoint=str(best), n_test=len(labels))


PCAM_TABLE1 = Table(
    name="pcam-table1",
    title="Seed 000 (Veeling et al. 2018), Table 1: PCam test set, NLL / accuracy (%) / AUC (%)",
    metrics=(("nll", "NLL", 1), ("accuracy", "Acc", 100), ("auc", "AUC", 100)),
    paper={(row, ""): {"nll": nll, "accuracy": acc, "auc": auc} for row, (_, _, _, nll, acc, auc) in ROWS.items()},
    cells=_cells, prepare=_prepare, run_cell=_run, score=score_classification,
    needs="DATA_ROOT/camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5 (or .h5.gz), as downloaded",
    notes="Paper column: seed 000 Table 1 as printed (one run per row; NLL, accuracy %, AUC %). Configs: "
          + ", ".join(f"{row}: {cfg}" for row, (cfg, *_) in ROWS.items()) + ".",
)
