"""``gunet-dice``: seed 001 Table 1, Dice by data regime, P4M U-Net against the D4-augmented U-Net, and the
p4 U-Net on the full training set (seed 001's text: 82.5).

A cell trains the row's shipped config on the regime (``data.fraction``, nested and seeded) and scores the
lowest-validation-loss weights on the test split: Dice as ``SegmentationMetric`` defines it (mean over test
images of the per-image foreground Dice), with bootstrap intervals over test images.

Data (``--data-root R``): ``R/{train,valid,test}/{images,masks}/`` (the ``segmentation`` data set of the
training config). ``--synthetic``: the CPU-sized siblings of the configs (``seg_*_cpu``: width 8, 49 x 49
patches, 2 epochs of 4 batches) on the SYNTHETIC segmentation generator, 32 test tiles.
"""

import copy

import numpy as np

from equipath.data.synthetic_sets import SyntheticSegmentation
from equipath.evaluation.evaluate import open_dataset
from equipath.evaluation.segmentation import SegmentationMetric, confusion_counts
from equipath.reproduce.common import forward_batches, pooled_scores, read_config, train_cell, write_scores
from equipath.reproduce.plan import Cell, Table
from equipath.training.distributed import resolve_device

__all__ = ["GUNET_DICE"]

REGIMES = {"100%": 1.0, "50%": 0.5, "25%": 0.25, "12.5%": 0.125}
ROWS = {"P4M U-Net": ("seg_p4m_unet", tuple(REGIMES)), "U-Net": ("seg_unet", tuple(REGIMES)),
        "P4 U-Net": ("seg_p4_unet", ("100%",))}
PAPER = {("P4M U-Net", "100%"): "83.7", ("P4M U-Net", "50%"): "82.1", ("P4M U-Net", "25%"): "81.6",
         ("P4M U-Net", "12.5%"): "79.6", ("U-Net", "100%"): "79.8", ("U-Net", "50%"): "78.5",
         ("U-Net", "25%"): "77.6", ("U-Net", "12.5%"): "74.2", ("P4 U-Net", "100%"): "82.5 (text)"}
SYNTHETIC_TEST = 32


def _prepare(context) -> dict:
    if context.synthetic:
        return {"synthetic": True, "test_items": SYNTHETIC_TEST}
    for split in ("train", "valid", "test"):
        for kind in ("images", "masks"):
            if not (context.data_root / split / kind).is_dir():
                raise FileNotFoundError(f"reproduce gunet-dice: {context.data_root / split / kind} does not exist "
                                        "(expected R/{train,valid,test}/{images,masks}/)")
    return {"root": str(context.data_root), "synthetic": False}


def _cells(context, seeds: int) -> list[Cell]:
    cells = []
    for row, (name, columns) in ROWS.items():
        base, path = read_config(f"{name}_cpu" if context.synthetic else name)
        for column in columns:
            config = copy.deepcopy(base)
            config["data"]["fraction"] = REGIMES[column]
            if context.synthetic:
                config["data"]["root"] = str(context.out / "data" / "synthetic_segmentation")
            else:
                config["data"]["root"] = context.data["root"]
            cells += [Cell(row, column, seed, config, path.name) for seed in range(seeds)]
    return cells


def _test_set(cell: Cell, context):
    data = cell.config["data"]
    if context.synthetic:  # the same test tiles for every seed and regime
        return SyntheticSegmentation(SYNTHETIC_TEST, (data["patch_size"],) * 2, 0, "test")
    return open_dataset("segmentation", context.data["root"], "test", data.get("patch_size", 320))


def _run(cell: Cell, folder, context) -> None:
    best = train_cell(cell, folder, context)
    device = str(resolve_device(context.device))
    counts = [confusion_counts(logits.argmax(1), y, logits.shape[1])
              for logits, y in forward_batches(best, _test_set(cell, context), device, batch_size=16)]
    counts = np.concatenate(counts)  # (images, classes, [TP, FP, FN, TN])
    np.savez(folder / "test_counts.npz", counts=counts)
    write_scores(folder, _dice({"counts": counts}), checkpoint=str(best), n_test=len(counts))


def _dice(records) -> dict:
    counts = records["counts"]
    none = np.full((len(counts), counts.shape[1] - 1), np.nan)
    return {"dice": SegmentationMetric.compute({"counts": counts, "hd": none, "hd95": none})["dice"]}


def _score(folders, context):
    records = []
    for folder in folders:
        with np.load(folder / "test_counts.npz") as data:
            records.append({"counts": data["counts"]})
    return pooled_scores(_dice, records, context.n_bootstrap)


GUNET_DICE = Table(
    name="gunet-dice",
    title="Seed 001 (Linmans et al. 2018), Table 1: Dice (%) by data regime, P4M U-Net and U-Net (+ p4, text)",
    metrics=(("dice", "Dice", 100),),
    paper={key: {"dice": value} for key, value in PAPER.items()},
    cells=_cells, prepare=_prepare, run_cell=_run, score=_score,
    needs="R/{train,valid,test}/{images,masks}/ (image and mask files of the same names)",
    notes="Paper column: seed 001 Table 1 as printed (DSC); the p4 row is from its text (full test set). The "
          "U-Net baseline is trained with D4 augmentation as the paper says.",
)
