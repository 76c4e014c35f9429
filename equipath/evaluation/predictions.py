"""What ``equipath evaluate`` keeps of each item besides the pooled metrics: one CSV row per image with its
own scores, and with ``save_dir`` the predictions themselves.

| task | CSV row (one per) | ``save_dir`` |
|---|---|---|
| classification | patch: ``index, label, probability, prediction, nll`` | ``probabilities.npy`` ``(N,) float32`` |
| segmentation | image (its grid patches stitched back): ``image, height, width`` and the metrics of :mod:`equipath.evaluation.segmentation` for that image alone | ``masks/NAME.png`` (class indices) and ``overlays/NAME.png`` (ground truth beside prediction) |
| OCELOT | image, as segmentation, plus ``cells_true``, ``cells_found`` and the per-image cell ``mf1`` | as segmentation |

Items arrive in data-set order (``add(index, ...)``); a segmentation image is finished when the first patch
of the next one arrives, so memory holds one image at a time.

Example:
    >>> import torch, tempfile, pathlib
    >>> recorder = PredictionRecorder(None, "classification", 1)
    >>> recorder.add(0, None, torch.tensor([2.0]), torch.tensor([1]))
    >>> row = recorder.finish()[0]
    >>> row["label"], row["prediction"], round(row["probability"], 3)
    (1, 1, 0.881)
"""

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from equipath.atomic import atomic_path
from equipath.evaluation.cells import cell_detection_f1
from equipath.evaluation.segmentation import segmentation_metrics

__all__ = ["PredictionRecorder", "CLASS_COLOURS"]

# class 0 (background) is never tinted
CLASS_COLOURS = ((0, 0, 0), (230, 30, 30), (30, 200, 60), (40, 90, 255), (250, 200, 0), (200, 0, 200))


def _tint(rgb: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    out = rgb.astype(np.float32)
    for c in range(1, int(labels.max(initial=0)) + 1):
        where = labels == c
        out[where] = (1 - alpha) * out[where] + alpha * np.asarray(CLASS_COLOURS[c % len(CLASS_COLOURS) or 1])
    return np.round(out).astype(np.uint8)


def overlay_picture(rgb: np.ndarray, truth: np.ndarray, pred: np.ndarray, title: str) -> np.ndarray:
    """``rgb (H, W, 3) uint8`` tinted by the true classes (left) and the predicted ones (right), with a title
    line above and the class colours named."""
    h, w = truth.shape
    gap, top = 8, 22
    canvas = Image.new("RGB", (2 * w + gap, h + top), (255, 255, 255))
    canvas.paste(Image.fromarray(_tint(rgb, truth)), (0, top))
    canvas.paste(Image.fromarray(_tint(rgb, pred)), (w + gap, top))
    draw = ImageDraw.Draw(canvas)
    draw.text((2, 4), "ground truth", fill=(0, 0, 0))
    draw.text((w + gap + 2, 4), f"prediction - {title}", fill=(0, 0, 0))
    x = 2 * w + gap - 2
    for c in range(max(int(truth.max(initial=0)), int(pred.max(initial=0))), 0, -1):
        label = f"class {c}"
        x -= 8 + 6 * len(label)
        draw.rectangle((x, 6, x + 8, 14), fill=CLASS_COLOURS[c % len(CLASS_COLOURS) or 1])
        draw.text((x + 11, 4), label, fill=(0, 0, 0))
    return np.asarray(canvas)


class PredictionRecorder:
    """Per-item rows and saved predictions of one evaluation (see the module docstring).

    Args:
        dataset: the evaluated data set (a grid :class:`~equipath.data.SegmentationDataset`, an
            :class:`~equipath.data.OcelotDataset`, or anything else: items then stand alone).
        task: ``classification`` or ``segmentation``.
        num_classes: the model's classes.
        save_dir: folder for the saved predictions, or None. Defaults to None.
        synthetic: the data are synthetic (said on every overlay). Defaults to False.
    """

    def __init__(self, dataset, task: str, num_classes: int, save_dir=None, synthetic: bool = False):
        self.dataset, self.task, self.num_classes = dataset, task, num_classes
        self.save_dir = None if save_dir is None else Path(save_dir)
        self.synthetic = synthetic
        self.rows, self._probabilities = [], []
        self._open = None  # the segmentation image being stitched: dict

    def add(self, index: int, image, logits: torch.Tensor, target, cells=None) -> None:
        """One item: ``image (3, h, w)`` in [0, 1], ``logits`` (``(1,)`` / ``(C,)`` for a classifier,
        ``(C, h, w)`` for segmentation), ``target`` (label, or ``(h, w)`` classes); for OCELOT ``cells`` =
        ``(predicted rows x, y, class, confidence; true rows x, y, class)``."""
        if self.task == "classification":
            self._add_patch(index, logits, target)
        else:
            self._add_segmentation(index, image, logits.argmax(0).numpy(), np.asarray(target), cells)

    def _add_patch(self, index: int, logits: torch.Tensor, target) -> None:
        logits = logits.reshape(-1).float()
        label = int(torch.as_tensor(target).reshape(-1)[0])
        if logits.numel() == 1:
            p = float(torch.sigmoid(logits[0]))
            prediction, nll = int(p >= 0.5), -math.log(max(p if label == 1 else 1 - p, 1e-12))
        else:
            probs = logits.softmax(0)
            p, prediction = float(probs[-1]) if len(probs) == 2 else float(probs.max()), int(probs.argmax())
            nll = -math.log(max(float(probs[label]), 1e-12))
        self._probabilities.append(p)
        self.rows.append({"index": index, "label": label, "probability": p, "prediction": prediction, "nll": nll})

    def _where(self, index: int):
        """``(image key, name, full (H, W), (y, x))`` of item ``index``."""
        grid = getattr(self.dataset, "grid", None)
        if grid is not None:
            k, y, x = grid[index]
            return k, Path(self.dataset.pairs[k][0]).stem, tuple(self.dataset.sizes[k]), (y, x)
        ids = getattr(self.dataset, "ids", None)
        name = str(ids[index]) if ids is not None else f"item_{index:05d}"
        return index, name, None, (0, 0)

    def _add_segmentation(self, index, image, pred, truth, cells) -> None:
        key, name, size, (y, x) = self._where(index)
        if self._open is not None and self._open["key"] != key:
            self._flush()
        if self._open is None:
            shape = size or pred.shape
            self._open = {"key": key, "name": name, "pred": np.zeros(shape, np.int64),
                          "truth": np.zeros(shape, np.int64), "rgb": np.zeros(shape + (3,), np.uint8), "cells": cells}
        h, w = pred.shape
        self._open["pred"][y:y + h, x:x + w] = pred
        self._open["truth"][y:y + h, x:x + w] = truth
        rgb = np.asarray(image, np.float32).transpose(1, 2, 0)
        self._open["rgb"][y:y + h, x:x + w] = np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)

    def _flush(self) -> None:
        item, self._open = self._open, None
        pred, truth = item["pred"], item["truth"]
        row = {"image": item["name"], "height": pred.shape[0], "width": pred.shape[1]}
        row.update(segmentation_metrics(pred[None], truth[None], self.num_classes))
        if item["cells"] is not None:
            found, true = item["cells"]
            row.update(cells_true=len(true), cells_found=len(found))
            row.update({f"cells_{k}": v for k, v in cell_detection_f1([found], [true]).items()})
        self.rows.append(row)
        if self.save_dir is not None:
            for sub, picture in (("masks", pred.astype(np.uint8)),
                                 ("overlays", overlay_picture(item["rgb"], truth, pred, "SYNTHETIC data" if
                                                              self.synthetic else item["name"]))):
                with atomic_path(self.save_dir / sub / f"{item['name']}.png") as tmp:
                    Image.fromarray(picture).save(tmp, format="PNG")

    def finish(self) -> list[dict]:
        """Finish the last image, write ``probabilities.npy`` for a classifier (with ``save_dir``), and
        return the rows."""
        if self._open is not None:
            self._flush()
        if self.save_dir is not None and self.task == "classification":
            with atomic_path(self.save_dir / "probabilities.npy") as tmp:
                np.save(tmp, np.asarray(self._probabilities, np.float32))
        return self.rows
