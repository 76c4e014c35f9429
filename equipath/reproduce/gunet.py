"""Segmentation tables: ``gunet-dice`` (seed 001 Table 1: Dice by data regime, P4M U-Net against the
D4-augmented U-Net, and the p4 U-Net on the full training set, 82.5 in seed 001's text) and
``gerunet-table1`` (seed 004 Table 1, its ablation rows: Regular R-UNet, GER-UNet with additive and with
concatenated skips; seven metrics).

A cell trains the row's shipped config on its regime (``data.fraction``, nested and seeded) and scores the
lowest-validation-loss weights on the test split with ``SegmentationMetric`` (Dice, Jaccard and Hausdorff
distance in pixels: means over test images of per-image values; precision, recall, specificity, F1: from
the pooled counts), with bootstrap intervals over test images.

Data (``--data-root R``): ``R/{train,valid,test}/{images,masks}/`` (the ``segmentation`` data set of the
training config). ``--synthetic``: the CPU-sized siblings of the configs (``*_cpu``: width 8, 49 or 57 px
patches, 2 epochs of 4 batches) on the SYNTHETIC segmentation generator, 32 test tiles.
"""

import copy

import numpy as np

from equipath.data.synthetic_sets import SyntheticSegmentation
from equipath.evaluation.evaluate import open_dataset
from equipath.evaluation.segmentation import SegmentationMetric
from equipath.reproduce.common import forward_batches, pooled_scores, read_config, train_cell, write_scores
from equipath.reproduce.plan import Cell, Table
from equipath.training.distributed import resolve_device

__all__ = ["GUNET_DICE", "GERUNET_TABLE1", "segmentation_table"]

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
                raise FileNotFoundError(f"{context.data_root / split / kind} does not exist "
                                        "(expected R/{train,valid,test}/{images,masks}/)")
    return {"root": str(context.data_root), "synthetic": False}


def _test_set(cell: Cell, context):
    data = cell.config["data"]
    if context.synthetic:  # the same test tiles for every seed and regime
        return SyntheticSegmentation(SYNTHETIC_TEST, (data["patch_size"],) * 2, 0, "test")
    return open_dataset("segmentation", context.data["root"], "test", data.get("patch_size", 320))


def segmentation_table(name: str, title: str, rows: dict, paper: dict, metrics: tuple, notes: str,
                       distances: bool) -> Table:
    """A table of segmentation cells: ``rows`` maps a row to ``(config name, regimes)``; ``paper`` maps
    ``(row, regime)`` to ``{metric: value as printed}``; ``distances``: compute Hausdorff distances."""
    keys = [key for key, _, _ in metrics]

    def cells(context, seeds: int) -> list[Cell]:
        out = []
        for row, (config_name, columns) in rows.items():
            base, path = read_config(f"{config_name}_cpu" if context.synthetic else config_name)
            for column in columns:
                config = copy.deepcopy(base)
                config["data"]["fraction"] = REGIMES[column]
                config["data"]["root"] = str(context.out / "data" / "synthetic_segmentation") \
                    if context.synthetic else context.data["root"]
                out += [Cell(row, column, seed, config, path.name) for seed in range(seeds)]
        return out

    def score_records(records) -> dict:
        values = SegmentationMetric.compute(records)
        return {key: values[key] for key in keys}

    def run(cell: Cell, folder, context) -> None:
        best = train_cell(cell, folder, context)
        device = str(resolve_device(context.device))
        parts = []
        for logits, y in forward_batches(best, _test_set(cell, context), device, batch_size=16):
            parts.append(SegmentationMetric(logits.shape[1], distances=distances).records(logits.argmax(1), y))
        records = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}  # per test image
        np.savez(folder / "test_records.npz", **records)
        write_scores(folder, score_records(records), checkpoint=str(best), n_test=len(records["counts"]))

    def score(folders, context):
        per_seed = []
        for folder in folders:
            with np.load(folder / "test_records.npz") as data:
                per_seed.append({k: data[k] for k in data.files})
        return pooled_scores(score_records, per_seed, context.n_bootstrap)

    return Table(name=name, title=title, metrics=metrics, paper=paper, cells=cells, prepare=_prepare,
                 run_cell=run, score=score, notes=notes,
                 needs="R/{train,valid,test}/{images,masks}/ (image and mask files of the same names)")


GUNET_DICE = segmentation_table(
    "gunet-dice", "Seed 001 (Linmans et al. 2018), Table 1: Dice (%) by data regime, P4M U-Net and U-Net (+ p4, text)",
    ROWS, {key: {"dice": value} for key, value in PAPER.items()}, (("dice", "Dice", 100),),
    "Paper column: seed 001 Table 1 as printed (DSC); the p4 row is from its text (full test set). The U-Net "
    "baseline is trained with D4 augmentation as the paper says.", distances=False)

GERUNET_ROWS = {"Regular R-UNet": ("seg_resunet", ("100%",)), "GER-UNet (ours-w-add)": ("seg_p4m_gerunet", ("100%",)),
                "GER-UNet (ours-w-concat)": ("seg_p4m_gerunet_concat", ("100%",))}
GERUNET_METRICS = (("dice", "Dice", 100), ("hausdorff", "HD (px)", 1), ("jaccard", "Jaccard", 100),
                   ("precision", "Precision", 100), ("recall", "Recall", 100), ("specificity", "Specificity", 100),
                   ("f1", "F1", 100))
GERUNET_PAPER = {  # seed 004 Table 1, ablation rows, as printed
    ("Regular R-UNet", "100%"): ("82.60", "32.44", "74.77", "79.82", "88.52", "99.90", "83.95"),
    ("GER-UNet (ours-w-add)", "100%"): ("86.63", "24.79", "80.31", "87.23", "87.79", "99.95", "87.51"),
    ("GER-UNet (ours-w-concat)", "100%"): ("86.16", "26.83", "79.77", "86.27", "88.18", "99.94", "87.21"),
}
GERUNET_TABLE1 = segmentation_table(
    "gerunet-table1", "Seed 004 (Pang et al.), Table 1 ablation: hepatic tumour segmentation, seven metrics",
    GERUNET_ROWS, {key: dict(zip([k for k, _, _ in GERUNET_METRICS], values)) for key, values in GERUNET_PAPER.items()},
    GERUNET_METRICS,
    "Paper column: seed 004 Table 1 as printed (Hausdorff distance in pixels, the others %), its ablation rows; "
    "the state-of-the-art rows are other papers' models, not reproduced.", distances=True)
