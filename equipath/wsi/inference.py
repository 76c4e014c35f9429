"""Fully-convolutional whole-slide inference that reuses computation between neighbouring patches (seed 000).

A patch classifier with receptive field ``rf`` and output stride ``s`` (``model.receptive_field``,
``model.output_stride``) defines an output grid on a :class:`~equipath.wsi.reader.SlideView`: cell
``(i, j)`` is the ``rf x rf`` patch with top-left view pixel ``(j * s - pad, i * s - pad)``, ``pad = (rf - s)
// 2``, so the cell's centre ``s x s`` block ``[j * s, (j + 1) * s) x [i * s, (i + 1) * s)`` is the patch
centre (PCam's label region for rf = 96, s = 32). The grid covers the view: ``ceil(H / s) x ceil(W / s)``.

Instead of classifying every patch, the tissue is covered by tiles of at most ``T x T`` cells fitted
to it (:func:`plan_tiles`). A tile of ``h x w`` cells reads ``((h - 1) * s + rf) x ((w - 1) * s + rf)``
pixels: neighbouring tiles overlap by exactly ``rf - s`` pixels, what the receptive field needs, and
``model.forward_dense`` turns it into the ``h x w`` logits of all its patches at once, so

    P[i, j] = sigmoid(forward(x[..., i*s - pad : i*s - pad + rf, j*s - pad : j*s - pad + rf]))

for every cell, equal to patch-by-patch prediction (:func:`predict_patches`) up to float rounding. Only
tissue is read and run; the map is 0 elsewhere. Tiles are read ahead in threads while the
model runs, batched, and written into a map that lives on disk (``.npy`` memmap) when an ``out`` path is
given, so memory is bounded by the batch whatever the slide size.

With ``tta=True`` each tile is also run under the 8 elements of D4 by
:class:`~equipath.analysis.tta.GroupTTA` (the one TTA of the library) and the back-transformed
probabilities are averaged: the cost is 8x, and for a ``p4m``-equivariant model the result is the same map.
Device decisions (autocast, channels-last, ``non_blocking``) come from
:func:`~equipath.training.device.device_plan`, and the model runs folded to plain convolutions.

Example:
    >>> import numpy as np
    >>> from equipath.models import create_model
    >>> from equipath.wsi.reader import open_slide, SlideView
    >>> model = create_model("p4m_densenet", growth=8).eval()
    >>> view = SlideView.at(open_slide(np.full((150, 200, 3), 128, np.uint8)))
    >>> grid = Grid.for_view(view, model)
    >>> prob = predict_dense(model, view, grid, tile_cells=4, progress=False)
    >>> patch = predict_patches(model, view, grid, np.array([[2, 3]]), progress=False)
    >>> grid.shape, prob.shape, bool(abs(prob[2, 3] - patch[0]) < 1e-4)
    ((5, 7), (5, 7), True)
"""

import logging
import math
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from equipath.analysis.tta import GroupTTA
from equipath.nn import fold_model
from equipath.training.device import DevicePlan, device_plan
from equipath.wsi.reader import SlideView
from equipath.wsi.tissue import TissueOptions, tissue_mask

__all__ = ["Grid", "tissue_cells", "plan_tiles", "predict_dense", "predict_patches", "check_dense_model"]

log = logging.getLogger(__name__)


def check_dense_model(model) -> None:
    """Raise ``ValueError`` unless ``model`` is a fully-convolutional patch classifier."""
    missing = [a for a in ("forward_dense", "output_stride", "receptive_field", "dense_output_size")
               if not hasattr(model, a)]
    if missing:
        raise ValueError(f"{type(model).__name__} is not a fully-convolutional patch classifier "
                         f"(missing {', '.join(missing)}); slide inference needs e.g. p4m_densenet")


@dataclass(frozen=True)
class Grid:
    """The output grid of a patch classifier on a view (see the module docstring).

    Attributes:
        shape: ``(rows, cols)`` = ``(ceil(H / s), ceil(W / s))``.
        stride: ``s``, view pixels per cell.
        receptive_field: ``rf``, the patch side in view pixels.
        downsample: level-0 pixels per view pixel.
    """

    shape: tuple[int, int]
    stride: int
    receptive_field: int
    downsample: float

    @classmethod
    def for_view(cls, view: SlideView, model) -> "Grid":
        check_dense_model(model)
        s, rf = int(model.output_stride), int(model.receptive_field)
        H, W = view.shape
        return cls((math.ceil(H / s), math.ceil(W / s)), s, rf, view.downsample)

    @property
    def pad(self) -> int:
        return (self.receptive_field - self.stride) // 2

    def patch_origin(self, i, j):
        """View pixel ``(x, y)`` of the top-left corner of cell ``(i, j)``'s patch."""
        return np.asarray(j) * self.stride - self.pad, np.asarray(i) * self.stride - self.pad

    def cell_centre_level0(self, i, j):
        """Level-0 ``(X, Y)`` of the centre of cell ``(i, j)``."""
        return ((np.asarray(j) + 0.5) * self.stride * self.downsample,
                (np.asarray(i) + 0.5) * self.stride * self.downsample)


def tissue_cells(view: SlideView, grid: Grid, options: TissueOptions = TissueOptions()):
    """Tissue mask at about ``options.mpp`` and the cells of ``grid`` that hold tissue.

    The mask is computed on the view ``s / k`` times coarser, ``k = s * view.mpp / options.mpp`` rounded to
    an integer (4 when the resolution is unknown), so that ``k x k`` mask pixels tile one cell exactly; a
    cell holds tissue when any of its mask pixels does.

    Returns:
        ``(thumbnail (h, w, 3) uint8, mask (h, w) bool, cells (rows, cols) bool)``.
    """
    k = 4 if view.mpp is None else max(1, round(grid.stride * view.mpp / options.mpp))
    thumb_view = view.coarser(grid.stride / k)
    thumbnail = thumb_view.read_all()
    mask = tissue_mask(thumbnail, options)
    rows, cols = grid.shape
    padded = np.zeros((rows * k, cols * k), dtype=bool)
    h, w = min(mask.shape[0], rows * k), min(mask.shape[1], cols * k)
    padded[:h, :w] = mask[:h, :w]
    cells = padded.reshape(rows, k, cols, k).any(axis=(1, 3))
    return thumbnail, mask, cells


class _DenseLogits(nn.Module):
    """``model.forward_dense`` as a module, in float32: the map :class:`GroupTTA` averages over the group."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.forward_dense(x).float()  # (B, 1, h, w)


class _PatchLogits(_DenseLogits):
    def forward(self, x):
        return self.model(x).float()  # (B, 1)


def _predictor(model, dense: bool, tta: bool) -> nn.Module:
    """The function of the image to run: the model's logit map (``dense``) or patch logits, averaged over
    the 8 elements of D4 by :class:`~equipath.analysis.tta.GroupTTA` when ``tta``."""
    f = _DenseLogits(model) if dense else _PatchLogits(model)
    return GroupTTA(f, "p4m") if tta else f


class _Runner:
    """The device/AMP part: a predictor on the device as the :class:`DevicePlan` says (channels-last,
    autocast, ``non_blocking``), fed uint8 tiles and normalised on the device. The model is folded to
    plain convolutions (:func:`~equipath.nn.fold_model`) first when ``fold``: the same outputs, no filter
    expansion at run time."""

    def __init__(self, model, normalization: dict | None, plan: DevicePlan, fold: bool):
        self.plan = plan
        self.model = plan.apply(fold_model(model.eval()) if fold else model.eval())
        norm = normalization or {"mean": [0.0] * 3, "std": [1.0] * 3}
        self.mean = torch.tensor(norm["mean"], dtype=torch.float32, device=plan.device).view(1, 3, 1, 1)
        self.std = torch.tensor(norm["std"], dtype=torch.float32, device=plan.device).view(1, 3, 1, 1)

    def _prepare(self, pixels: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(pixels).to(self.plan.device, non_blocking=self.plan.non_blocking)  # (B, H, W, 3) uint8
        x = x.permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, H, W) in [0, 1]
        return self.plan.inputs((x - self.mean) / self.std)

    @torch.inference_mode()
    def probabilities(self, predictor: nn.Module, pixels: np.ndarray) -> np.ndarray:
        """Sigmoid of ``predictor`` on a batch of uint8 images ``(B, H, W, 3)``: ``(B, h, w)`` or ``(B,)``."""
        x = self._prepare(pixels)
        with self.plan.autocast():
            p = torch.sigmoid(predictor(x).float())
        return p[:, 0].cpu().numpy()


def _plan_for(device, amp: bool | None) -> DevicePlan:
    return device if isinstance(device, DevicePlan) else device_plan("auto" if device is None else device, amp)


def _prefetched(jobs, read, workers: int, depth: int):
    """Yield ``(job, read(job))`` in order, with up to ``depth`` reads running ahead in ``workers`` threads."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = deque()
        for job in jobs:
            pending.append((job, pool.submit(read, job)))
            if len(pending) >= depth:
                done_job, future = pending.popleft()
                yield done_job, future.result()
        while pending:
            done_job, future = pending.popleft()
            yield done_job, future.result()


def plan_tiles(cells: np.ndarray, tile_cells: int) -> list[tuple[int, int, int, int]]:
    """Tiles ``(i, j, h, w)`` (in cells, ``h, w <= tile_cells``) that cover every True cell of ``cells``.

    Bands of ``tile_cells`` rows are cut into runs of columns holding tissue (runs closer than 3 cells are
    merged: a gap of 1 or 2 cells costs less than a tile border), and each run into equal pieces, so
    tiles follow the tissue instead of a fixed lattice and little glass is computed.
    """
    rows, _ = cells.shape
    tiles = []
    for i in range(0, rows, tile_cells):
        h = min(tile_cells, rows - i)
        band = np.flatnonzero(cells[i:i + h].any(axis=0))
        if not len(band):
            continue
        for run in np.split(band, np.flatnonzero(np.diff(band) > 3) + 1):
            length = int(run[-1] + 1 - run[0])
            width = -(-length // -(-length // tile_cells))  # equal pieces of at most tile_cells
            tiles += [(i, int(j), h, min(width, int(run[-1]) + 1 - int(j))) for j in range(run[0], run[-1] + 1, width)]
    return tiles


def predict_dense(model, view: SlideView, grid: Grid, cells: np.ndarray | None = None, *,
                  normalization: dict | None = None, tile_cells: int = 16, batch_size: int = 2,
                  device=None, amp: bool | None = None, tta: bool = False, out: str | Path | None = None,
                  read_workers: int = 2, fold: bool = True, progress: bool = True) -> np.ndarray:
    """Tumour probability of every tissue cell of ``grid`` by tiled fully-convolutional inference.

    Args:
        model: a patch classifier with ``forward_dense`` (e.g. ``p4m_densenet``), returning logits.
        view: the slide at the model's resolution.
        grid: ``Grid.for_view(view, model)``.
        cells: ``(rows, cols)`` bool, the cells to predict (tissue); see :func:`plan_tiles`.
            Defaults to None (every cell).
        normalization: ``{"mean": [r, g, b], "std": [r, g, b]}`` for RGB in [0, 1] (the checkpoint's).
            Defaults to None (no normalisation).
        tile_cells: ``T``, the largest tile side in cells; a ``h x w``-cell tile reads
            ``((h - 1) * s + rf) x ((w - 1) * s + rf)`` pixels. Defaults to 16.
        batch_size: tiles of the same shape per forward pass. Defaults to 2.
        device: a torch device or a :class:`~equipath.training.device.DevicePlan` (which then also decides
            AMP and channels-last). Defaults to CUDA when available, else the CPU.
        amp: bf16 autocast. Defaults to True on CUDA, False on the CPU.
        tta: average over the 8 D4 transforms of every tile (:class:`~equipath.analysis.tta.GroupTTA`;
            tiles are then read square). Defaults to False.
        out: ``.npy`` path for an on-disk (memmap) map. Defaults to None (in memory).
        read_workers: threads reading tiles ahead of the model. Defaults to 2.
        fold: run the model folded to plain convolutions (same outputs). Defaults to True.
        progress: show a progress bar. Defaults to True.

    Returns:
        ``(rows, cols) float32`` probabilities (0 outside ``cells``), a memmap when ``out`` is given.
    """
    check_dense_model(model)
    if cells is None:
        cells = np.ones(grid.shape, dtype=bool)
    if cells.shape != grid.shape:
        raise ValueError(f"predict_dense: cells must have the grid's shape {grid.shape}, got {cells.shape}")
    if tile_cells < 1 or batch_size < 1:
        raise ValueError(f"predict_dense: tile_cells and batch_size must be >= 1, got {tile_cells}, {batch_size}")
    s, rf = grid.stride, grid.receptive_field
    tiles = plan_tiles(cells, tile_cells)
    by_shape = {}  # tiles by the shape they are computed at, (h, w) cells; square under TTA (GroupTTA rotates)
    for tile in tiles:
        by_shape.setdefault((max(tile[2:]),) * 2 if tta else tile[2:], []).append(tile)
    for h, w in by_shape:
        H, W = (h - 1) * s + rf, (w - 1) * s + rf
        if tuple(model.dense_output_size(H, W)) != (h, w):
            raise ValueError(f"predict_dense: a {H}x{W} tile gives {model.dense_output_size(H, W)} outputs, "
                             f"expected ({h}, {w}) for output stride {s} and receptive field {rf}")
    batches = [(shape, group[k:k + batch_size]) for shape, group in by_shape.items()
               for k in range(0, len(group), batch_size)]
    if out is None:
        prob = np.zeros(grid.shape, dtype=np.float32)
    else:
        prob = np.lib.format.open_memmap(Path(out), mode="w+", dtype=np.float32, shape=grid.shape)
    read_px = sum(((h - 1) * s + rf) * ((w - 1) * s + rf) for _, _, h, w in tiles)
    log.info("%d tiles over %d of %d cells (%.2f Mpx read, %s)", len(tiles), int(cells.sum()), cells.size,
             read_px / 1e6, "with D4 TTA" if tta else "no TTA")
    runner = _Runner(model, normalization, _plan_for(device, amp), fold)
    predictor = _predictor(runner.model, dense=True, tta=tta)

    def read(job):
        (h, w), batch = job
        return np.stack([view.read(*grid.patch_origin(i, j), (w - 1) * s + rf, (h - 1) * s + rf)
                         for i, j, _, _ in batch])

    bar = tqdm(total=len(tiles), desc="tiles", unit="tile", disable=not progress)
    for (_, batch), pixels in _prefetched(batches, read, read_workers, depth=read_workers + 1):
        p = runner.probabilities(predictor, pixels)  # (B, h, w)
        for (i, j, h, w), tile in zip(batch, p):
            h, w = min(h, grid.shape[0] - i), min(w, grid.shape[1] - j)
            keep = cells[i:i + h, j:j + w]
            prob[i:i + h, j:j + w] = np.where(keep, tile[:h, :w], prob[i:i + h, j:j + w])
        bar.update(len(batch))
    bar.close()
    if out is not None:
        prob.flush()
    return prob


def predict_patches(model, view: SlideView, grid: Grid, positions: np.ndarray, *,
                    normalization: dict | None = None, batch_size: int = 64, device=None,
                    amp: bool | None = None, tta: bool = False, fold: bool = True, progress: bool = True) -> np.ndarray:
    """Patch-by-patch reference: read each cell's ``rf x rf`` patch and classify it with ``model.forward``.

    Args:
        positions: ``(N, 2)`` int cells ``(i, j)`` of ``grid``.
        Other arguments as in :func:`predict_dense`.

    Returns:
        ``(N,) float32`` probabilities.
    """
    positions = np.asarray(positions, dtype=np.int64).reshape(-1, 2)
    runner = _Runner(model, normalization, _plan_for(device, amp), fold)
    predictor = _predictor(runner.model, dense=False, tta=tta)
    rf = grid.receptive_field
    out = np.empty(len(positions), dtype=np.float32)
    for k in tqdm(range(0, len(positions), batch_size), desc="patches", unit="batch", disable=not progress):
        chunk = positions[k:k + batch_size]
        pixels = np.stack([view.read(*grid.patch_origin(i, j), rf, rf) for i, j in chunk])
        out[k:k + len(chunk)] = runner.probabilities(predictor, pixels)
    return out
