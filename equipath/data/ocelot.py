"""OCELOT 2023 (cell detection from cell-tissue interaction) in its original folder layout.

::

    root/metadata.json                          {"sample_pairs": {"001": {...}, ...}}
    root/images/{split}/cell/001.jpg            1024 x 1024 RGB cell patch
    root/images/{split}/tissue/001.jpg          1024 x 1024 RGB tissue patch (larger field of view)
    root/annotations/{split}/cell/001.csv       rows "x,y,class", no header; 1 = background cell, 2 = tumour cell
    root/annotations/{split}/tissue/001.png     1 = background, 2 = cancer area, 255 = unknown

Each entry of ``sample_pairs`` gives ``cell.resized_mpp_x``, ``tissue.resized_mpp_x`` and the centre of the
cell patch inside the tissue patch as fractions ``patch_x_offset``, ``patch_y_offset``.

For segmentation (seed 002) the cell points become a mask: each pixel within ``radius`` (default 30 px)
of a cell takes the class of the nearest cell (so touching discs split along the bisector), 0 elsewhere;
or a soft target, one channel per class, ``exp(-d^2 / (2 sigma^2))`` with ``d`` the distance to the
nearest cell of that class. :func:`mask_to_points` turns either back into cell points by peak detection,
for the per-cell F1 of the evaluation. A disc mask keeps cell centres only where cells are at least
``2 * radius`` apart; denser cells come back shifted (use the soft target, or a smaller radius).

Example:
    >>> import numpy as np
    >>> from equipath.data.ocelot import points_to_mask, mask_to_points
    >>> mask = points_to_mask(np.array([[20.0, 30.0], [90.0, 70.0]]), np.array([1, 2]), (128, 128), radius=12)
    >>> points, classes, scores = mask_to_points(mask, min_distance=5)
    >>> points.tolist(), classes.tolist()
    ([[20.0, 30.0], [90.0, 70.0]], [1, 2])
"""

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from skimage.feature import peak_local_max
from torch.utils.data import Dataset

__all__ = ["OcelotDataset", "OcelotSample", "read_cell_csv", "read_tissue_mask", "points_to_mask",
           "points_to_heatmap", "mask_to_points", "tissue_in_cell_frame", "CELL_CLASSES", "TISSUE_VALUES"]

CELL_CLASSES = {1: "background cell", 2: "tumour cell"}
TISSUE_VALUES = {1: "background", 2: "cancer area", 255: "unknown"}


def read_cell_csv(path, shape=None) -> tuple:
    """Cell points of an OCELOT CSV (rows ``x,y,class``, no header): ``(points (N, 2) float64 as (x, y),
    classes (N,) int64)``. With ``shape = (H, W)`` points must lie inside the image."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    points, classes = [], []
    with open(path, newline="") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if not row or not "".join(row).strip():
                continue
            try:
                if len(row) != 3:
                    raise ValueError(f"{len(row)} fields")
                x, y, c = float(row[0]), float(row[1]), int(float(row[2]))
            except ValueError as exc:
                raise ValueError(f"{path} line {line}: expected 'x,y,class' numbers, got {row} ({exc})") from None
            if c not in CELL_CLASSES:
                raise ValueError(f"{path} line {line}: class {c}, expected 1 (background cell) or 2 (tumour cell)")
            if shape is not None and not (0 <= x < shape[1] and 0 <= y < shape[0]):
                raise ValueError(f"{path} line {line}: point ({x}, {y}) outside the {shape[1]}x{shape[0]} image")
            points.append((x, y))
            classes.append(c)
    return np.array(points, dtype=np.float64).reshape(-1, 2), np.array(classes, dtype=np.int64)


def read_tissue_mask(path) -> np.ndarray:
    """An OCELOT tissue annotation PNG as uint8 ``(H, W)`` with values in {1, 2, 255}."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        with Image.open(path) as im:
            mask = np.asarray(im)
    except OSError as exc:
        raise ValueError(f"{path}: not a readable PNG ({exc})") from None
    if mask.ndim != 2:
        raise ValueError(f"{path}: expected a single-channel tissue mask (H, W), got shape {mask.shape}")
    bad = ~np.isin(mask, list(TISSUE_VALUES))
    if bad.any():
        raise ValueError(f"{path}: expected values 1 (background), 2 (cancer area) or 255 (unknown), "
                         f"found {int(mask[bad][0])}")
    return mask.astype(np.uint8)


def _nearest(points: np.ndarray, shape) -> tuple:
    """Distance to the nearest point and that point's index, per pixel; points rounded to pixels."""
    h, w = shape
    index = np.full(shape, -1, dtype=np.int64)
    rc = np.rint(points[:, ::-1]).astype(int)  # (N, 2) as (row, col)
    inside = (rc[:, 0] >= 0) & (rc[:, 0] < h) & (rc[:, 1] >= 0) & (rc[:, 1] < w)
    if not inside.all():
        raise ValueError(f"cell point {points[~inside][0].tolist()} (x, y) outside the {w}x{h} image")
    index[rc[:, 0], rc[:, 1]] = np.arange(len(points))
    dist, (ri, ci) = ndimage.distance_transform_edt(index < 0, return_indices=True)
    return dist, index[ri, ci]


def points_to_mask(points, classes, shape, radius: float = 30.0) -> np.ndarray:
    """Disc mask int64 ``shape``: class of the nearest cell where it is within ``radius`` pixels, else 0.

    Args:
        points: ``(N, 2)`` cell centres as (x, y) pixels.
        classes: ``(N,)`` classes (>= 1).
        shape: ``(H, W)``.
        radius: disc radius in pixels. Defaults to 30 (seed 002).
    """
    points, classes = np.asarray(points, dtype=np.float64).reshape(-1, 2), np.asarray(classes, dtype=np.int64)
    if len(points) != len(classes):
        raise ValueError(f"expected one class per point, got {len(points)} points and {len(classes)} classes")
    if len(points) == 0:
        return np.zeros(shape, dtype=np.int64)
    dist, nearest = _nearest(points, shape)
    return np.where(dist <= radius, classes[nearest], 0).astype(np.int64)


def points_to_heatmap(points, classes, shape, sigma: float = 5.0, n_classes: int = 2) -> np.ndarray:
    """Soft target float32 ``(n_classes, H, W)``: channel ``c - 1`` is ``exp(-d_c^2 / (2 sigma^2))``, with
    ``d_c`` the distance to the nearest cell of class ``c`` (the maximum of the cells' Gaussians)."""
    points, classes = np.asarray(points, dtype=np.float64).reshape(-1, 2), np.asarray(classes, dtype=np.int64)
    if len(points) != len(classes):
        raise ValueError(f"expected one class per point, got {len(points)} points and {len(classes)} classes")
    out = np.zeros((n_classes, *shape), dtype=np.float32)
    for c in range(1, n_classes + 1):
        sel = classes == c
        if sel.any():
            dist, _ = _nearest(points[sel], shape)
            out[c - 1] = np.exp(-dist ** 2 / (2 * sigma ** 2))
    return out


def mask_to_points(target, min_distance: int = 8, threshold: float = 0.5, smooth: float = 0.0) -> tuple:
    """Cell points from a segmentation target or prediction by peak detection.

    Args:
        target: int ``(H, W)`` class mask (0 = no cell), whose peaks are the maxima of each class region's
            distance to its border; or float ``(C, H, W)`` per-class scores (channel ``c - 1`` is class
            ``c``), e.g. probabilities or a :func:`points_to_heatmap` target.
        min_distance: least distance in pixels between two peaks of a class. Defaults to 8.
        threshold: least score of a peak in float maps. Defaults to 0.5.
        smooth: Gaussian smoothing (pixels) of float maps before detection, for flat plateaus.
            Defaults to 0.

    Returns:
        ``(points (K, 2) float64 as (x, y), classes (K,) int64, scores (K,) float64)``; scores are the map
        values (1 for a class mask).
    """
    target = np.asarray(target)
    if target.ndim == 2 and target.dtype.kind in "uib":
        maps = [(c, ndimage.distance_transform_edt(target == c)) for c in np.unique(target) if c > 0]
        floor = 1.0
    elif target.ndim == 3 and target.dtype.kind == "f":
        maps = [(c + 1, ndimage.gaussian_filter(m, smooth) if smooth > 0 else m) for c, m in enumerate(target)]
        floor = threshold
    else:
        raise ValueError(f"expected an integer mask (H, W) or float scores (C, H, W), got {target.dtype} "
                         f"{target.shape}")
    points, classes, scores = [], [], []
    for c, score in maps:
        peaks = peak_local_max(score, min_distance=min_distance, threshold_abs=floor, exclude_border=False)
        points.append(peaks[:, ::-1].astype(np.float64))
        classes.append(np.full(len(peaks), c, dtype=np.int64))
        scores.append(np.ones(len(peaks)) if target.ndim == 2 else score[peaks[:, 0], peaks[:, 1]].astype(np.float64))
    if not points:
        return np.zeros((0, 2)), np.zeros(0, dtype=np.int64), np.zeros(0)
    return np.concatenate(points), np.concatenate(classes), np.concatenate(scores)


def tissue_in_cell_frame(tissue, meta: dict, cell_shape) -> np.ndarray:
    """The part of a tissue patch (mask ``(H, W)`` or image ``(H, W, 3)``) that the cell patch covers,
    resized by nearest neighbour to ``cell_shape``: a box of ``cell_shape * cell_mpp / tissue_mpp`` tissue
    pixels centred at ``(patch_y_offset * H, patch_x_offset * W)``."""
    try:
        scale = meta["cell"]["resized_mpp_x"] / meta["tissue"]["resized_mpp_x"]
        centre = (meta["patch_y_offset"] * tissue.shape[0], meta["patch_x_offset"] * tissue.shape[1])
    except (KeyError, TypeError) as exc:
        raise ValueError(f"OCELOT sample metadata lacks {exc}: expected cell/tissue resized_mpp_x and "
                         f"patch_x_offset / patch_y_offset") from None
    rows = centre[0] + (np.arange(cell_shape[0]) + 0.5 - cell_shape[0] / 2) * scale
    cols = centre[1] + (np.arange(cell_shape[1]) + 0.5 - cell_shape[1] / 2) * scale
    r = np.clip(np.floor(rows).astype(int), 0, tissue.shape[0] - 1)
    c = np.clip(np.floor(cols).astype(int), 0, tissue.shape[1] - 1)
    return tissue[r[:, None], c[None, :]]


@dataclass(frozen=True)
class OcelotSample:
    """One OCELOT pair: ``cell_image`` / ``tissue_image`` uint8 ``(H, W, 3)``, ``tissue_mask`` uint8
    ``(H, W)``, cell ``points`` ``(N, 2)`` (x, y) with ``classes`` ``(N,)``, and its ``meta`` entry."""

    sample_id: str
    cell_image: np.ndarray
    tissue_image: np.ndarray
    tissue_mask: np.ndarray
    points: np.ndarray
    classes: np.ndarray
    meta: dict


def _read_rgb(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError as exc:
        raise ValueError(f"{path}: not a readable image ({exc})") from None


class OcelotDataset(Dataset):
    """One split of OCELOT 2023 as ``(image, target)`` for cell segmentation: ``image`` float32
    ``(3, 1024, 1024)`` in [0, 1], ``target`` int64 ``(1024, 1024)`` disc mask (``target="disk"``, 0 = no
    cell, 1 = background cell, 2 = tumour cell) or float32 ``(2, 1024, 1024)`` (``target="gaussian"``).

    Args:
        root: the OCELOT folder (with ``metadata.json``).
        split: ``"train"``, ``"val"`` or ``"test"``. Defaults to ``"train"``.
        target: ``"disk"`` or ``"gaussian"``. Defaults to ``"disk"``.
        radius: disc radius in pixels. Defaults to 30.
        sigma: Gaussian width in pixels. Defaults to 5.
        transform: joint transform ``(image, target) -> (image, target)``. Defaults to None.

    Example:
        >>> from equipath.data import OcelotDataset
        >>> data = OcelotDataset("ocelot2023_v1.0.1", "train")  # doctest: +SKIP
        >>> image, mask = data[0]; sample = data.sample(0)  # doctest: +SKIP
    """

    def __init__(self, root, split: str = "train", target: str = "disk", radius: float = 30.0,
                 sigma: float = 5.0, transform=None):
        self.root = Path(root)
        if target not in ("disk", "gaussian"):
            raise ValueError(f"target must be 'disk' or 'gaussian', got {target!r}")
        self.split, self.target, self.radius, self.sigma, self.transform = split, target, radius, sigma, transform
        meta_path = self.root / "metadata.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path} does not exist: expected the OCELOT 2023 metadata file")
        try:
            with open(meta_path) as f:
                pairs = json.load(f)["sample_pairs"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{meta_path}: expected JSON with a 'sample_pairs' object ({exc!r})") from None
        cell_dir = self.root / "images" / split / "cell"
        if not cell_dir.is_dir():
            raise FileNotFoundError(f"{cell_dir} is not a folder: expected OCELOT {split!r} cell images")
        self.ids = sorted(p.stem for p in cell_dir.glob("*.jpg"))
        if not self.ids:
            raise ValueError(f"{cell_dir}: expected cell images NNN.jpg, found none")
        missing = [i for i in self.ids if i not in pairs]
        if missing:
            raise ValueError(f"{meta_path}: no sample_pairs entry for {split} image {missing[0]!r}")
        self.meta = {i: pairs[i] for i in self.ids}
        for i in self.ids:
            for p in self._paths(i).values():
                if not p.is_file():
                    raise FileNotFoundError(f"{p} does not exist: expected it for OCELOT sample {i!r}")

    def _paths(self, sample_id: str) -> dict:
        images, notes = self.root / "images" / self.split, self.root / "annotations" / self.split
        return {"cell": images / "cell" / f"{sample_id}.jpg", "tissue": images / "tissue" / f"{sample_id}.jpg",
                "cells": notes / "cell" / f"{sample_id}.csv", "tissue_mask": notes / "tissue" / f"{sample_id}.png"}

    def __len__(self) -> int:
        return len(self.ids)

    def sample(self, index: int) -> OcelotSample:
        """Everything stored for pair ``index``."""
        sample_id = self.ids[index]
        p = self._paths(sample_id)
        cell = _read_rgb(p["cell"])
        points, classes = read_cell_csv(p["cells"], cell.shape[:2])
        return OcelotSample(sample_id, cell, _read_rgb(p["tissue"]), read_tissue_mask(p["tissue_mask"]),
                            points, classes, self.meta[sample_id])

    def __getitem__(self, index: int):
        p = self._paths(self.ids[index])
        cell = _read_rgb(p["cell"])
        points, classes = read_cell_csv(p["cells"], cell.shape[:2])
        image = torch.from_numpy(cell.transpose(2, 0, 1).astype(np.float32) / 255)  # (3, H, W)
        if self.target == "disk":
            target = torch.from_numpy(points_to_mask(points, classes, cell.shape[:2], self.radius))
        else:
            target = torch.from_numpy(points_to_heatmap(points, classes, cell.shape[:2], self.sigma))
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target
