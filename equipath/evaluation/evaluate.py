"""Evaluate a checkpoint on a data set: every metric of its task with percentile-bootstrap intervals.

The checkpoint says everything about the model (name, arguments, normalisation, task); the data set is
read in its original format:

    pcam          PCam h5 files of ``split`` in ``root`` (also the synthetic PCam-format set):
                  NLL, accuracy, AUC (seed 000), patches resampled for the intervals
    segmentation  ``root/<split>/{images,masks}/`` or ``root/{images,masks}/``, cut into a grid of
                  ``patch_size`` patches: Dice, Jaccard, Hausdorff, HD95, Precision, Recall, Specificity,
                  F1 (seed 004) and mIoU, per patch; patches resampled
    ocelot        OCELOT 2023 ``split`` (train / val / test): the segmentation metrics on the disc masks and
                  the per-cell F1 of the challenge (cells found as peaks of the predicted class regions,
                  matched within 15 px), images resampled

Beside the pooled metrics, ``items_csv`` gets one row per image (per patch for a classifier) with its own
scores, and ``save_dir`` the predictions (:mod:`equipath.evaluation.predictions`).

Example:
    >>> result = evaluate_checkpoint("runs/train/best.pt", "data/pcam", split="test")  # doctest: +SKIP
    >>> result["metrics"]["auc"], result["ci95"]["auc"]  # doctest: +SKIP
"""

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from equipath.checkpoint import load_model
from equipath.data import OcelotDataset, PCamDataset, SegmentationDataset, folder_pairs, mask_to_points
from equipath.data.stain import StainTransform, stain_from_checkpoint
from equipath.evaluation.cells import CellDetectionMetric
from equipath.evaluation.classification import ClassificationMetric
from equipath.atomic import write_csv
from equipath.evaluation.predictions import PredictionRecorder
from equipath.evaluation.segmentation import SegmentationMetric

__all__ = ["evaluate_model", "evaluate_checkpoint", "open_dataset", "EVAL_DATASETS"]

log = logging.getLogger(__name__)

EVAL_DATASETS = ("pcam", "segmentation", "ocelot")


def _pairs(root: Path, split: str, mask_suffix: str = "") -> list:
    base = root / split if (root / split / "images").is_dir() else root
    return folder_pairs(base / "images", base / "masks", mask_suffix)


def open_dataset(kind: str, root, split: str = "test", patch_size: int = 320, cell_radius: float = 30.0,
                 mask_suffix: str = "", grey_to_rgb: bool = False, transform=None):
    """The evaluation data set of ``kind`` (one of :data:`EVAL_DATASETS`); errors name the missing file.
    ``mask_suffix`` and ``grey_to_rgb`` as the training config's ``data.*`` keys (segmentation folders);
    ``transform`` a joint ``(image, mask)`` transform applied to every item (e.g. the checkpoint's stain
    normalisation)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist")
    if kind == "pcam":
        return PCamDataset(root, split, transform=transform)
    if kind == "segmentation":
        return SegmentationDataset(_pairs(root, split, mask_suffix), patch_size, "grid", transform=transform,
                                   grey_to_rgb=grey_to_rgb)
    if kind == "ocelot":
        return OcelotDataset(root, split, radius=cell_radius, transform=transform)
    raise ValueError(f"unknown evaluation data set {kind!r}: expected one of {', '.join(EVAL_DATASETS)}")


def _cells(probs: torch.Tensor, radius: float) -> np.ndarray:
    """Cells found in one predicted probability map ``(C, H, W)``: rows ``x, y, class, confidence``."""
    classes = probs.argmax(0).numpy()
    points, labels, _ = mask_to_points(classes, min_distance=max(1, int(radius // 2)))
    rows = np.rint(points[:, 1]).astype(int), np.rint(points[:, 0]).astype(int)
    scores = probs.numpy()[labels, rows[0], rows[1]]
    return np.column_stack([points, labels, scores]) if len(points) else np.zeros((0, 4))


@torch.no_grad()
def evaluate_model(model, dataset, *, batch_size: int = 64, device="cpu", progress: bool = True,
                   n_bootstrap: int = 2000, seed: int = 0, num_workers: int = 0, cell_radius: float = 30.0,
                   recorder: PredictionRecorder | None = None) -> dict:
    """Run ``model`` (in eval mode) over ``dataset`` and compute the metrics of its task.

    Args:
        model: a registered model (``task``, ``num_classes`` attributes) taking float RGB in [0, 1]: the model
            :func:`equipath.models.load_model` returns carries its checkpoint's normalisation.
        dataset: items ``(image (3, H, W), target)``; an :class:`~equipath.data.OcelotDataset` also gets the
            per-cell F1.
        batch_size, device, num_workers: of the forward passes. Default to 64, CPU, 0.
        progress: show a progress bar. Defaults to True.
        n_bootstrap: bootstrap resamples of the 95 % intervals (0: none). Defaults to 2000 (seed 000).
        seed: seed of the resampling. Defaults to 0.
        cell_radius: disc radius of the OCELOT masks; cells closer than half of it are merged. Defaults to 30.
        recorder: gets every item (its image, logits and target) for per-image rows and saved predictions.
            Defaults to None.

    Returns:
        ``{"metrics": {name: value}, "ci95": {name: [low, high]}, "n": items, "synthetic": bool}``.
    """
    device = torch.device(device)
    model = model.to(device).eval()
    metrics = [ClassificationMetric()] if model.task == "classification" else [SegmentationMetric(model.num_classes)]
    is_ocelot = isinstance(dataset, OcelotDataset)
    if is_ocelot:
        metrics.append(CellDetectionMetric(radius=15.0))
    loader = DataLoader(dataset, batch_size=1 if is_ocelot else batch_size, num_workers=num_workers)
    index = 0
    for x, y in tqdm(loader, desc="evaluate", disable=not progress):
        logits = model(x.to(device)).float().cpu()
        if model.task == "classification":
            metrics[0](logits, y)
        else:
            metrics[0](logits.argmax(1), y)
        cells = None
        if is_ocelot:
            sample = dataset.sample(index)
            gt = np.column_stack([sample.points, sample.classes]) if len(sample.points) else np.zeros((0, 3))
            cells = (_cells(logits[0].softmax(0), cell_radius), gt)
            metrics[1](*cells)
        if recorder is not None:
            for b in range(len(x)):
                recorder.add(index + b, x[b], logits[b], y[b], cells)
        index += len(x)
    values, intervals = {}, {}
    for metric in metrics:
        values.update(metric.aggregate())
        if n_bootstrap:
            intervals.update({k: list(v) for k, v in metric.bootstrap(n_bootstrap, seed=seed).items()})
    return {"metrics": values, "ci95": intervals, "n": index, "synthetic": bool(getattr(dataset, "synthetic", False))}


def evaluate_checkpoint(checkpoint, root, dataset: str | None = None, split: str = "test", *, patch_size=None,
                        device="cpu", items_csv=None, save_dir=None, **kwargs) -> dict:
    """Load ``checkpoint`` and evaluate it on ``split`` of the data in ``root``.

    ``dataset`` defaults to ``pcam`` for classifiers and, for segmentation models, to the kind the model was
    trained on (``ocelot`` or ``segmentation``); ``patch_size`` to the training patch size, and the mask
    suffix and greyscale option to the training config's. ``items_csv``: a CSV path for the per-image rows;
    ``save_dir``: a folder for the predictions. Other keyword arguments go to :func:`evaluate_model`. The
    result also names the checkpoint, model, data, split and the files written.
    """
    model, state = load_model(checkpoint, map_location=device)
    data_config = state.get("config", {}).get("data", {})
    if dataset is None:
        trained_on = data_config.get("dataset", "")
        dataset = "pcam" if state["task"] == "classification" else ("ocelot" if trained_on == "ocelot" else "segmentation")
    expected = "classification" if dataset == "pcam" else "segmentation"
    if dataset in EVAL_DATASETS and expected != state["task"]:
        raise ValueError(f"checkpoint {checkpoint} holds a {state['task']} model; data set {dataset!r} is for "
                         f"{expected}")
    stain = stain_from_checkpoint(state)  # the normalisation the model was trained with, as predict applies it
    data = open_dataset(dataset, root, split, patch_size or data_config.get("patch_size", 320),
                        data_config.get("cell_radius", 30), data_config.get("mask_suffix") or "",
                        bool(data_config.get("grey_to_rgb")), StainTransform(stain) if stain is not None else None)
    if isinstance(data, SegmentationDataset):  # mask values outside the model's classes: now, in one line
        data.check_classes(model.num_classes)
    log.info("evaluating %s (%s) on %d items of %s %s", checkpoint, state["model"]["name"], len(data), dataset, split)
    recorder = None
    if items_csv is not None or save_dir is not None:
        recorder = PredictionRecorder(data, state["task"], model.num_classes if state["task"] != "classification"
                                      else 1, save_dir, synthetic=bool(getattr(data, "synthetic", False)))
    result = evaluate_model(model, data, device=device,
                            cell_radius=data_config.get("cell_radius", 30), recorder=recorder, **kwargs)
    files = {}
    if recorder is not None:
        rows = recorder.finish()
        if items_csv is not None:
            files["items_csv"] = str(write_csv(items_csv, rows))
        if save_dir is not None:
            files["predictions"] = str(save_dir)
    return {"checkpoint": str(checkpoint), "model": state["model"]["name"], "group": state.get("group"),
            "data": str(root), "dataset": dataset, "split": split, **result, **files}
