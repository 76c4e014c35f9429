"""``breakhis``: seed 000 section 3.3, benign / malignant BreakHis images by a patch classifier pre-trained on
Camelyon16 patches and fine-tuned, accuracy as mean and SD over Spanhol et al.'s 5 patient-wise folds.

The chain of one cell (row x magnification x fold):

1. **pre-training** (once per row, in ``prepare``): the row's PCam config (``pcam_p4m_densenet``,
   ``pcam_densenet`` with D4 augmentation) trained on PCam, which is Camelyon16 at 0.972 um/px; or the
   checkpoint ``DATA_ROOT/pretrained/{config}.pt`` when it exists (e.g. the ``best.pt`` of pcam-table1);
2. **folds**: :func:`~equipath.data.breakhis.patient_splits`, patient-wise 70 / 30 per class, one split per
   fold (seeded by the fold), the same patients at every magnification, no patient in both parts;
3. **resolution matched**: every image is resampled from its magnification's acquisition resolution
   (:func:`~equipath.data.breakhis.breakhis_mpp`, 0.49 um/px at 40X) to the pre-training's 0.972 um/px
   (``BreakHisDataset(mpp=0.972)``), so the model sees the cells at the size it learnt them;
4. **fine-tuning**: random 96 x 96 crops of the fold's training images (labelled with their image's
   class) written once as a PCam-format set (training patients; 20 % of them, at least one per class,
   held out for the validation loss), then the row's config trained from the pre-trained weights
   (``init_from``) with lr 1e-4 (the paper gives no fine-tuning schedule: ours);
5. **prediction**: an image is malignant when the maximum probability over 1000 random crops exceeds
   0.5 (:func:`~equipath.data.breakhis.split_accuracy`); image- and patient-level accuracy of the fold.

Table: mean over folds (the "seed" of a cell is its fold: ``--n-seeds`` sets the number of folds, 5 by
default), the SD over folds (the paper's +-), and a percentile bootstrap interval of the mean over the
folds' test images. The paper reports 40X only (96.1 +- 3.2 and 93.5 +- 4.7); the other magnifications are
run because the protocol is per magnification.

``--synthetic``: a SYNTHETIC BreakHis tree (8 patients per class, 2 images per patient and magnification,
40X and 100X, procedural tissue upsampled to each magnification's resolution), pre-training on 256 SYNTHETIC
PCam patches (the pcam-table1 synthetic widths), 8 crops per training image, 16 crops per test image.
"""

import copy
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from equipath.atomic import atomic_path
from equipath.data.breakhis import BreakHisDataset, breakhis_mpp, patient_splits, predict_max_over_crops
from equipath.data.pcam import PCamWriter
from equipath.data.synthetic import synthetic_tile
from equipath.data.synthetic_sets import write_synthetic_pcam
from equipath.models import load_model
from equipath.reproduce.common import prepared, read_config, train_cell, write_scores
from equipath.reproduce.pcam import SYNTHETIC as PCAM_SYNTHETIC
from equipath.reproduce.plan import Cell, Table
from equipath.training import TrainConfig, train
from equipath.training.config import apply_overrides
from equipath.training.distributed import resolve_device

__all__ = ["BREAKHIS", "ROWS", "SYNTHETIC", "write_synthetic_breakhis"]

log = logging.getLogger(__name__)

PCAM_MPP = 0.972  # PCam: Camelyon16 level 2 (seed 000)
CROP = 96

# row -> (pre-training / fine-tuning config, the paper's 40X accuracy as printed in seed 000 section 3.3)
ROWS = {"P4M-DenseNet": ("pcam_p4m_densenet", "96.1 ± 3.2"), "DenseNet": ("pcam_densenet", "93.5 ± 4.7")}
MAGNIFICATIONS = ("40X", "100X", "200X", "400X")
REAL = {"crops_per_image": 64, "test_crops": 1000, "finetune": {"lr": 1e-4, "epochs": 20, "batches_per_epoch": 50}}
SYNTHETIC = {"patients": 8, "images": 2, "tile": (112, 144), "magnifications": ("40X", "100X"),
             "pretrain_sizes": {"train": 256, "valid": 64, "test": 64}, "crops_per_image": 8, "test_crops": 16,
             "pretrain": {"epochs": 2, "batch_size": 16, "batches_per_epoch": 6, "eval_batch_size": 64},
             "finetune": {"lr": 1e-4, "epochs": 1, "batch_size": 16, "batches_per_epoch": 3, "eval_batch_size": 64}}


# --------------------------------------------------------------------------------------------- synthetic data
def _tile(index: int, malignant: bool, size) -> tuple[np.ndarray, int]:
    """The first synthetic tile from ``index`` on whose tumour fraction fits the class (benign: none;
    malignant: at least 15 %), and the index after it."""
    while True:
        tile = synthetic_tile(index, seed=7, size=size, split="train")
        index += 1
        fraction = float(tile.mask.mean())
        if (malignant and fraction >= 0.15) or (not malignant and fraction == 0.0):
            return tile.image, index


def write_synthetic_breakhis(root, patients: int = 8, images: int = 2, magnifications=("40X",),
                             size=(112, 144)) -> Path:
    """A SYNTHETIC tree in BreakHis's layout (``{benign,malignant}/SOB/<type>/<patient>/<mag>/SOB_...png``):
    ``patients`` per class, ``images`` per patient and magnification, each a procedural tile of ``size`` at
    0.972 um/px (benign: no tumour region; malignant: one) upsampled to the magnification's acquisition
    resolution (:func:`breakhis_mpp`), so ``BreakHisDataset(mpp=0.972)`` gives it back at ``size``."""
    root = Path(root)
    index = 0
    for label, letter, kind in (("benign", "B", "A"), ("malignant", "M", "DC")):
        for p in range(patients):
            patient = f"14-{letter}{p:03d}"
            for mag in magnifications:
                folder = root / label / "SOB" / kind / f"SOB_{letter}_{kind}_{patient}" / mag
                folder.mkdir(parents=True, exist_ok=True)
                factor = PCAM_MPP / breakhis_mpp(mag)
                for k in range(images):
                    image, index = _tile(index, label == "malignant", size)
                    big = Image.fromarray(image).resize((round(size[1] * factor), round(size[0] * factor)),
                                                        Image.Resampling.BICUBIC)
                    name = f"SOB_{letter}_{kind}-{patient}-{mag[:-1]}-{k + 1:03d}.png"
                    with atomic_path(folder / name) as tmp:
                        big.save(tmp, format="PNG")
    return root


# --------------------------------------------------------------------------------------------- prepare
def _pretrain_config(row: str, context, root: str) -> dict:
    config, _ = read_config(ROWS[row][0])
    config = copy.deepcopy(config)
    config["data"]["root"] = root
    if context.synthetic:
        config["model_kwargs"] = {"growth": PCAM_SYNTHETIC["growth"][config["model"]]}
        config["data"].update(val_samples=PCAM_SYNTHETIC["val_samples"], num_workers=0)
        config.update(SYNTHETIC["pretrain"])
    return config


def _prepare(context) -> dict:
    out = context.out / "data"
    if context.synthetic:
        s = SYNTHETIC
        breakhis = prepared(out / "breakhis", lambda f: write_synthetic_breakhis(
            f, s["patients"], s["images"], s["magnifications"], s["tile"]), patients=s["patients"])
        pcam = prepared(out / "pcam", lambda f: write_synthetic_pcam(f, s["pretrain_sizes"], seed=0, progress=False),
                        sizes=s["pretrain_sizes"])
    else:
        breakhis, pcam = context.data_root / "breakhis", context.data_root / "pcam"
        if not breakhis.is_dir():
            raise FileNotFoundError(f"reproduce breakhis: {breakhis} does not exist (expected {BREAKHIS.needs})")
    pretrained = {}
    for row, (config_file, _) in ROWS.items():
        given = None if context.synthetic else context.data_root / "pretrained" / f"{config_file}.pt"
        if given is not None and given.is_file():
            pretrained[row] = str(given)
            continue
        if not context.synthetic and not pcam.is_dir():
            raise FileNotFoundError(f"reproduce breakhis: neither {given} nor the PCam folder {pcam} exists "
                                    f"(expected {BREAKHIS.needs})")
        config = _pretrain_config(row, context, str(pcam))
        config.update(out_dir=str(out / "pretrain" / config_file), seed=0, device=context.device,
                      progress=context.progress)
        apply_overrides(config, dict(context.overrides), TrainConfig)
        pretrained[row] = str(train(TrainConfig.from_dict(config)).best)
    return {"breakhis": str(breakhis), "pretrained": pretrained, "synthetic": context.synthetic,
            "magnifications": list(SYNTHETIC["magnifications"] if context.synthetic else MAGNIFICATIONS)}


# --------------------------------------------------------------------------------------------- cells
def _cells(context, seeds: int) -> list[Cell]:
    cells = []
    magnifications = context.data.get("magnifications") or (SYNTHETIC["magnifications"] if context.synthetic
                                                            else MAGNIFICATIONS)
    for row, (config_file, _) in ROWS.items():
        base, path = read_config(config_file)
        for mag in magnifications:
            for fold in range(seeds):
                config = copy.deepcopy(base)
                config["init_from"] = context.data.get("pretrained", {}).get(row)
                config["data"].update(root=str(context.out / "data" / f"crops_{mag}_fold{fold}"), val_samples=None)
                if context.synthetic:
                    config["model_kwargs"] = {"growth": PCAM_SYNTHETIC["growth"][config["model"]]}
                    config["data"]["num_workers"] = 0
                config.update((SYNTHETIC if context.synthetic else REAL)["finetune"])
                cells.append(Cell(row, mag, fold, config, path.name, {"magnification": mag, "fold": fold,
                                                                      "folds": seeds}))
    return cells


def _dataset(context, mag: str) -> BreakHisDataset:
    return BreakHisDataset(context.data["breakhis"], mag, mpp=PCAM_MPP)


def _folds(dataset: BreakHisDataset, folds: int) -> list:
    return patient_splits(dataset.patients, dataset.labels, repetitions=folds, seed=0)


def _write_crops(folder: Path, dataset: BreakHisDataset, train_idx, fold: int, per_image: int, synthetic: bool):
    """Random crops of the training images as a PCam-format set; 20 % of the training patients of each class
    (at least one) validate."""
    rng = np.random.default_rng(1000 + fold)
    patients = np.array(dataset.patients)[train_idx]
    labels = dataset.labels[train_idx]
    held = []
    for cls in (0, 1):
        names = np.unique(patients[labels == cls])
        held += list(rng.permutation(names)[:max(1, round(0.2 * len(names)))])
    parts = {"valid": train_idx[np.isin(patients, held)], "train": train_idx[~np.isin(patients, held)]}
    attrs = {"synthetic": bool(synthetic), "description": "random crops of BreakHis training images"}
    for split, indices in parts.items():
        with PCamWriter(folder, split, len(indices) * per_image, attrs) as writer:  # one image's crops at a time
            for k, index in enumerate(indices):
                image, label = dataset[int(index)]
                array = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
                h, w = array.shape[:2]
                ys, xs = rng.integers(0, h - CROP + 1, per_image), rng.integers(0, w - CROP + 1, per_image)
                crops = np.stack([array[y:y + CROP, x:x + CROP] for y, x in zip(ys, xs)])
                writer.write(k * per_image, crops, np.full(per_image, int(label)))


def _run(cell: Cell, folder, context) -> None:
    settings = SYNTHETIC if context.synthetic else REAL
    mag, fold = cell.options["magnification"], cell.options["fold"]
    dataset = _dataset(context, mag)
    split = _folds(dataset, cell.options["folds"])[fold]
    prepared(Path(cell.config["data"]["root"]),
             lambda f: _write_crops(f, dataset, split["train"], fold, settings["crops_per_image"], context.synthetic),
             magnification=mag, fold=fold)
    best = train_cell(cell, folder, context)
    device = str(resolve_device(context.device))
    model, _ = load_model(best, map_location=device)

    def model_fn(batch):
        with torch.no_grad():
            return torch.sigmoid(model(batch.to(device)).float()).cpu().reshape(-1)

    correct = _correct(model_fn, dataset, split["test"], settings["test_crops"], fold)
    patients = np.array(dataset.patients)[split["test"]]
    np.savez(folder / "test_correct.npz", correct=correct, patients=patients)
    write_scores(folder, _accuracies([(correct, patients)]), checkpoint=str(best), n_test=int(len(correct)),
                 n_test_patients=int(len(np.unique(patients))), n_train=int(len(split["train"])))


def _correct(model_fn, dataset, indices, n_crops: int, seed: int) -> np.ndarray:
    """1 / 0 per test image: malignant when the max over ``n_crops`` random crops exceeds 0.5, right or not
    (the crops of :func:`~equipath.data.breakhis.split_accuracy`)."""
    out = []
    for k, index in enumerate(indices):
        image, label = dataset[int(index)]
        out.append(float((predict_max_over_crops(model_fn, image, n_crops, CROP, seed + k) > 0.5) == bool(label)))
    return np.array(out)


def _accuracies(folds) -> dict:
    """Mean over folds of the image-level accuracy and of the patient-level one (Spanhol et al.: the mean over
    patients of the fraction of their images classified right); ``folds``: ``[(correct, patients), ...]``."""
    image = np.mean([c.mean() for c, _ in folds])
    patient = np.mean([np.mean([c[p == name].mean() for name in np.unique(p)]) for c, p in folds])
    return {"accuracy": float(image), "patient_accuracy": float(patient)}


def _score(folders, context):
    """Mean over folds of image- and patient-level accuracy, with a percentile bootstrap interval of that
    mean (test images resampled within each fold, patients' rates recomputed)."""
    folds = []
    for folder in folders:
        with np.load(folder / "test_correct.npz") as data:
            folds.append((data["correct"], data["patients"]))

    values = _accuracies(folds)
    if not context.n_bootstrap:
        return values, {}
    rng = np.random.default_rng(0)
    draws = []
    for _ in range(context.n_bootstrap):
        sample = []
        for c, p in folds:
            pick = rng.integers(0, len(c), len(c))
            sample.append((c[pick], p[pick]))
        draws.append(_accuracies(sample))
    intervals = {k: tuple(float(v) for v in np.percentile([d[k] for d in draws], [2.5, 97.5])) for k in values}
    return values, intervals


BREAKHIS = Table(
    name="breakhis",
    title="Seed 000 (Veeling et al. 2018), section 3.3: BreakHis benign / malignant, accuracy (%) over 5 "
          "patient-wise folds",
    metrics=(("accuracy", "Acc", 100), ("patient_accuracy", "Patient acc", 100)),
    paper={(row, "40X"): {"accuracy": acc} for row, (_, acc) in ROWS.items()},
    cells=_cells, prepare=_prepare, run_cell=_run, score=_score, default_seeds=5,
    needs="DATA_ROOT/breakhis/ (the BreaKHis_v1 tree: .../{benign,malignant}/SOB/<type>/<patient>/<mag>/*.png) "
          "and either DATA_ROOT/pretrained/{pcam_p4m_densenet,pcam_densenet}.pt (pre-trained checkpoints) or "
          "DATA_ROOT/pcam/ (the PCam h5 files, to pre-train on)",
    notes="Paper column: seed 000 section 3.3 as printed, 40X only, mean +- SD over the folds (it does not say "
          "whether image- or patient-level; quoted under image-level). Our 'seed SD' is the SD over folds "
          "(a cell's seed is its fold). Pre-training: the row's PCam config (Camelyon16 patches at 0.972 um/px); "
          "BreakHis images resampled to 0.972 um/px; fine-tuning lr 1e-4 is ours (the paper gives none); "
          "prediction: max over random 96 px crops.",
)
