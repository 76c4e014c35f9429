"""``ocelot-mf1``: seed 002 (Liem 2025), the C4 isotropic U-Net against the parameter-matched U-Net on OCELOT
2023 cell segmentation: test Dice (the paper: 0.62 against 0.68) and the per-cell mF1 the paper plans
(scored with the official OCELOT rules, ties included: :mod:`equipath.evaluation.cells`).

A cell trains the row's shipped config and evaluates ``best.pt`` on the test split with
``equipath.evaluation.evaluate_checkpoint`` (cells found in the predicted class map, matched within 15 px).
Intervals: bootstrap over test images (one seed; with several seeds the table gives their mean and SD).

Data (``--data-root R``): the OCELOT 2023 release, ``R/images/{train,val,test}/cell/*.jpg``,
``R/annotations/{train,val,test}/cell/*.csv`` and ``R/metadata.json``. ``--synthetic``: 12 SYNTHETIC
128 x 128 samples per split in that layout (``write_synthetic_ocelot``), width 8, discs of radius 6,
2 epochs of 4 batches of 4.
"""

import copy
import json
import math

import numpy as np

from equipath.data.synthetic_sets import write_synthetic_ocelot
from equipath.evaluation.evaluate import evaluate_checkpoint
from equipath.reproduce.common import prepared, read_config, train_cell, write_scores
from equipath.reproduce.plan import Cell, Table
from equipath.training.distributed import resolve_device

__all__ = ["OCELOT_MF1"]

ROWS = {"C4 isotropic U-Net": "ocelot_iso_unet", "U-Net (baseline)": "ocelot_iso_unet_baseline"}
PAPER = {"C4 isotropic U-Net": {"dice": "0.62", "mf1": "not reported (planned)"},
         "U-Net (baseline)": {"dice": "0.68", "mf1": "not reported (planned)"}}
SYNTHETIC = {"n": 12, "size": 128, "width": 8, "cell_radius": 6,
             "train": {"epochs": 2, "batch_size": 4, "batches_per_epoch": 4, "eval_batch_size": 4}}


def _prepare(context) -> dict:
    if context.synthetic:
        root = prepared(context.out / "data" / "ocelot",
                        lambda f: write_synthetic_ocelot(f, SYNTHETIC["n"], SYNTHETIC["size"], progress=False),
                        synthetic=True)
        return {"root": str(root), "synthetic": True}
    if not (context.data_root / "metadata.json").is_file():
        raise FileNotFoundError(f"reproduce ocelot-mf1: {context.data_root}/metadata.json does not exist (expected "
                                "the OCELOT 2023 release: metadata.json, images/, annotations/)")
    return {"root": str(context.data_root), "synthetic": False}


def _cells(context, seeds: int) -> list[Cell]:
    cells = []
    for row, name in ROWS.items():
        config, path = read_config(name)
        config = copy.deepcopy(config)
        config["data"].update(dataset="ocelot", root=context.data["root"])
        if context.synthetic:
            config["model_kwargs"] = {**config.get("model_kwargs", {}), "width": SYNTHETIC["width"]}
            config["data"].update(cell_radius=SYNTHETIC["cell_radius"], num_workers=0, augment=[],
                                  val_samples=None)
            config.update(SYNTHETIC["train"])
        cells += [Cell(row, "", seed, config, path.name) for seed in range(seeds)]
    return cells


def _run(cell: Cell, folder, context) -> None:
    best = train_cell(cell, folder, context)
    result = evaluate_checkpoint(best, context.data["root"], "ocelot", "test",
                                 device=str(resolve_device(context.device)), progress=False,
                                 n_bootstrap=context.n_bootstrap)
    metrics = {"dice": result["metrics"]["dice"], "mf1": result["metrics"]["mf1"]}
    write_scores(folder, metrics, ci95={k: result["ci95"].get(k) for k in metrics}, checkpoint=str(best),
                 n_test=result["n"])


def _score(folders, context):
    scores = [json.loads((f / "scores.json").read_text()) for f in folders]
    values = {k: float(np.mean([s["metrics"][k] for s in scores])) for k in ("dice", "mf1")}
    if len(scores) == 1:
        return values, {k: tuple(v) for k, v in scores[0]["ci95"].items() if v}
    return values, {k: (math.nan, math.nan) for k in values}


OCELOT_MF1 = Table(
    name="ocelot-mf1",
    title="Seed 002 (Liem 2025): OCELOT 2023 test set, Dice and per-cell mF1 (official rules), C4 isotropic "
          "U-Net vs U-Net",
    metrics=(("dice", "Dice", 1), ("mf1", "mF1", 1)),
    paper={(row, ""): values for row, values in PAPER.items()},
    cells=_cells, prepare=_prepare, run_cell=_run, score=_score,
    needs="R/metadata.json, R/images/{train,val,test}/cell/*.jpg, R/annotations/{train,val,test}/cell/*.csv "
          "(the OCELOT 2023 release)",
    notes="Paper column: seed 002's text (test Dice 0.62 equivariant, 0.68 baseline; mF1 planned, not reported). "
          "mF1 follows the official OCELOT evaluation exactly (float32, numpy's default argsort, 1e-7, rounding).",
)
