"""Fully-convolutional whole-slide inference that reuses computation between neighbouring patches (seed 000).

A patch classifier with receptive field ``rf`` and output stride ``s`` (``model.receptive_field``,
``model.output_stride``) defines an output grid on a :class:`~equipath.wsi.reader.SlideView`: cell
``(i, j)`` is the ``rf x rf`` patch with top-left view pixel ``(j * s - pad, i * s - pad)``, ``pad = (rf - s)
// 2``, so the cell's centre ``s x s`` block ``[j * s, (j + 1) * s) x [i * s, (i + 1) * s)`` is the patch
centre (PCam's label region for rf = 96, s = 32). The grid covers the view: ``ceil(H / s) x ceil(W / s)``.

Instead of classifying every patch, the tissue is covered by tiles of at most ``T x T`` cells that follow
it (:func:`plan_tiles`: a guillotine partition minimising the model's own cost, :class:`TileCost`), with
``T`` and the batch size from memory (:func:`memory_plan`). A tile of ``h x w`` cells reads ``((h - 1) * s + rf) x ((w - 1) * s + rf)``
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
import os
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
from equipath.nn.conv import CachedFilter
from equipath.training.device import DevicePlan, device_plan
from equipath.wsi.reader import SlideView
from equipath.wsi.tissue import TissueOptions, tissue_mask

__all__ = ["Grid", "tissue_cells", "TileCost", "plan_tiles", "memory_plan", "read_ahead", "predict_dense",
           "predict_patches", "check_dense_model"]

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
    autocast, ``non_blocking``), fed uint8 tiles as RGB in [0, 1] (a checkpoint's model from
    :func:`equipath.models.load_model` normalises them itself). The model is folded to
    plain convolutions (:func:`~equipath.nn.fold_model`) first when ``fold``: the same outputs, no filter
    expansion at run time."""

    def __init__(self, model, plan: DevicePlan, fold: bool):
        self.plan = plan
        self.model = plan.apply(fold_model(model.eval()) if fold else model.eval())

    def _prepare(self, pixels: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(pixels).to(self.plan.device, non_blocking=self.plan.non_blocking)  # (B, H, W, 3) uint8
        x = x.permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, H, W) in [0, 1]
        return self.plan.inputs(x)

    @torch.inference_mode()
    def probabilities(self, predictor: nn.Module, pixels: np.ndarray) -> np.ndarray:
        """Sigmoid of ``predictor`` on a batch of uint8 images ``(B, H, W, 3)``: ``(B, h, w)`` or ``(B,)``."""
        x = self._prepare(pixels)
        with self.plan.autocast():
            p = torch.sigmoid(predictor(x).float())
        return p[:, 0].cpu().numpy()


def _plan_for(device, amp: bool | None) -> DevicePlan:
    return device if isinstance(device, DevicePlan) else device_plan("auto" if device is None else device, amp)


def read_ahead(jobs, read, workers: int, depth: int):
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


@dataclass(frozen=True)
class TileCost:
    """Cost of running the model on an ``h x w``-cell tile: ``A h w + B (h + w) + C`` (multiply-accumulates,
    or any unit). Exact for the DenseNet patch classifiers: every layer's side is affine in the tile side,
    so each layer costs ``(a h + b)(a w + b) c``. ``A`` is the cost of a cell with full reuse; ``B (h + w) + C``
    is the tile's receptive-field margin, paid again by every tile."""

    A: float
    B: float
    C: float

    def __call__(self, h, w):
        return self.A * h * w + self.B * (h + w) + self.C

    def lattice(self, h, w, tile_cells: int):
        """The cost of an ``h x w``-cell box cut into ``ceil(h / T) x ceil(w / T)`` tiles (``T =
        tile_cells``): the single tile's cost when it fits. Works on arrays."""
        m, n = np.ceil(np.divide(h, tile_cells)), np.ceil(np.divide(w, tile_cells))
        return self.A * h * w + self.B * (h * n + w * m) + self.C * m * n

    @classmethod
    def pixels(cls, stride: int, receptive_field: int) -> "TileCost":
        """The input pixels of the tile, ``((h - 1) s + rf) ((w - 1) s + rf)``: a proxy for any model."""
        m = receptive_field - stride
        return cls(stride * stride, stride * m, m * m)

    @classmethod
    def of_model(cls, model) -> "TileCost":
        """Fitted from the convolution multiply-accumulates of the model (in eval mode, on its device) on
        1x1, 1x2 and 2x2-cell tiles; the pixel proxy when the model cannot be counted that way."""
        s, rf = int(model.output_stride), int(model.receptive_field)
        try:
            (m11, m12, m22), _ = _profile(model, [((h - 1) * s + rf, (w - 1) * s + rf) for h, w in ((1, 1), (1, 2), (2, 2))])
        except Exception as exc:  # a model the flop counter cannot run on the meta device
            log.debug("tile cost from pixels (%s)", exc)
            return cls.pixels(s, rf)
        A = m22 - 2 * m12 + m11
        B = m12 - m11 - A
        return cls(A, B, m11 - A - 2 * B)


_PROFILES = {}


def _profile(model, sizes) -> tuple[list, list]:
    """For each ``(H, W)`` of ``sizes``: the multiply-accumulates of the convolutions of
    ``model.forward_dense`` on a ``(1, 3, H, W)`` input (counted by forward hooks, plain and equivariant
    convolutions alike), and the largest activation in elements. Cached per architecture."""
    key = (type(model).__name__, tuple(sizes), tuple((n, tuple(p.shape)) for n, p in model.named_parameters()))
    if key in _PROFILES:
        return _PROFILES[key]
    macs, largest = [0], [0]

    def count(module, inputs, output):
        if isinstance(output, torch.Tensor):
            largest[0] = max(largest[0], output.numel())
        if isinstance(module, CachedFilter):
            w, transposed = module.filter(), getattr(module, "transposed", False)
        elif isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            w, transposed = module.weight, isinstance(module, nn.ConvTranspose2d)
        else:
            return
        macs[0] += inputs[0].numel() * w[0].numel() if transposed else output.numel() * w[0].numel()

    hooks = [m.register_forward_hook(count) for m in model.modules()]
    device = next(model.parameters(), torch.empty(0)).device
    result = ([], [])
    try:
        with torch.inference_mode():
            for H, W in sizes:
                macs[0] = largest[0] = 0
                model.forward_dense(torch.zeros(1, 3, H, W, device=device))
                result[0].append(float(macs[0]))
                result[1].append(largest[0])
    finally:
        for hook in hooks:
            hook.remove()
    _PROFILES[key] = result
    return result


def memory_plan(model, device: torch.device, budget: int | None = None,
                largest_tile: int | None = None) -> tuple[int, int]:
    """``(tile_cells, batch_size)`` from memory: the largest tile side (at most ``largest_tile`` cells) whose
    activations fit in ``budget`` bytes, and on a GPU as many such tiles per batch as fit (1 on the CPU).

    ``largest_tile`` defaults to 64 on a GPU and 24 on the CPU, where larger tiles ran no faster per cell
    (``p4m_densenet``, an interleaved sweep over 16-40 cells; docs/benchmarks.md) and hold more memory.

    A tile's peak memory is taken as 3 float32 copies of the model's largest activation (a layer's input,
    its output and a concatenation), measured on a 2 x 2-cell tile and scaled by pixels. ``budget``
    defaults to half the free GPU memory on CUDA, and to a quarter of the available memory (at most
    4 GiB) on the CPU.
    """
    s, rf = int(model.output_stride), int(model.receptive_field)
    largest_tile = largest_tile or (64 if device.type == "cuda" else 24)
    side = s + rf
    _, largest = _profile(model, [(rf, rf), (rf, side), (side, side)])  # the sizes TileCost.of_model profiles
    bytes_per_pixel = 3 * 4 * max(largest[2], 3 * side**2) / side**2  # at least the input, for a model of no layers
    if budget is None:
        budget = torch.cuda.mem_get_info(device)[0] // 2 if device.type == "cuda" else min(_available_memory() // 4, 4 << 30)
    pixels = budget / bytes_per_pixel
    tile_cells = int(max(1, min(largest_tile, (math.sqrt(pixels) - rf) // s + 1)))
    if device.type != "cuda":
        return tile_cells, 1  # one tile per pass: a CPU gains nothing from batching, and holds less
    tile_pixels = ((tile_cells - 1) * s + rf) ** 2
    return tile_cells, int(max(1, pixels // tile_pixels))


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def _bbox(cells: np.ndarray, i0: int, i1: int, j0: int, j1: int):
    """The tissue bounding box ``(i0, i1, j0, j1)`` inside the window, or None when it holds no tissue."""
    window = cells[i0:i1, j0:j1]
    rows, cols = np.flatnonzero(window.any(axis=1)), np.flatnonzero(window.any(axis=0))
    if not len(rows):
        return None
    return i0 + int(rows[0]), i0 + int(rows[-1]) + 1, j0 + int(cols[0]), j0 + int(cols[-1]) + 1


def _best_cut(window: np.ndarray, cost: TileCost, tile_cells: int):
    """The guillotine cut of ``window`` (already trimmed to its tissue) into two parts, each trimmed to its
    own tissue, of least total cost, each part costed as its box cut into tiles of at most ``tile_cells``
    (:meth:`TileCost.lattice`): ``(cost, axis, k)``."""
    best = (math.inf, None, None)
    for axis in (0, 1):
        m = window if axis == 0 else window.T  # cut between rows k - 1 and k of m
        n, width = m.shape
        if n < 2:
            continue
        occupied = m.any(axis=1)
        for part, rows in (("head", m), ("tail", m[::-1])):
            seen = np.logical_or.accumulate(rows, axis=0)  # seen[k - 1]: columns with tissue in the first k rows
            first = np.where(seen.any(axis=1), np.argmax(seen, axis=1), width)
            last = np.where(seen.any(axis=1), width - 1 - np.argmax(seen[:, ::-1], axis=1), -1)
            occ = occupied if part == "head" else occupied[::-1]
            idx = np.arange(n)
            top = np.maximum.accumulate(np.where(occ, idx, -1))  # last occupied row among the first k
            bottom = np.where(occ.any(), np.argmax(occ), n)  # first occupied row
            span_rows = np.maximum(top - bottom + 1, 0)
            span_cols = np.maximum(last - first + 1, 0)
            c = np.where(span_rows > 0, cost.lattice(span_rows, span_cols, tile_cells), 0.0)
            if part == "head":
                head = c  # head[k - 1]: the first k rows
            else:
                tail = c  # tail[k - 1]: the last k rows
        totals = head[:-1] + tail[::-1][1:]  # cut after row k - 1, k = 1 .. n - 1
        k = int(np.argmin(totals))
        if totals[k] < best[0]:
            best = (float(totals[k]), axis, k + 1)
    return best


def plan_tiles(cells: np.ndarray, tile_cells: int, cost: TileCost | None = None) -> list[tuple[int, int, int, int]]:
    """Tiles ``(i, j, h, w)`` (in cells, ``h, w <= tile_cells``) that cover every True cell of ``cells`` once,
    chosen to compute as little as possible.

    A guillotine partition: a region is trimmed to the bounding box of its tissue, and split in two (at the
    row or column that minimises the cost of the two parts, each trimmed to its own tissue and costed as
    cut into tiles of at most ``tile_cells``) while that lowers the total ``cost`` (:class:`TileCost`:
    cells computed plus every tile's receptive-field margin) or while it is larger than ``tile_cells``. Tiles therefore follow the tissue: large ones over solid
    tissue, where margins are shared, small ones over strands and specks, where glass would dominate.

    Args:
        cells: ``(rows, cols)`` bool, the cells to cover.
        tile_cells: the largest tile side in cells.
        cost: Defaults to the input pixels of a tile of the DenseNet geometry (stride 32, field 96).
    """
    if tile_cells < 1:
        raise ValueError(f"plan_tiles: tile_cells must be >= 1, got {tile_cells}")
    cost = cost or TileCost.pixels(32, 96)
    tiles, stack = [], []
    box = _bbox(cells, 0, cells.shape[0], 0, cells.shape[1])
    if box is not None:
        stack.append(box)
    while stack:
        i0, i1, j0, j1 = stack.pop()
        h, w = i1 - i0, j1 - j0
        split, axis, k = _best_cut(cells[i0:i1, j0:j1], cost, tile_cells) if h * w > 1 else (math.inf, None, None)
        if max(h, w) <= tile_cells and split >= cost(h, w):
            tiles.append((i0, j0, h, w))
            continue
        if axis is None or (max(h, w) > tile_cells and split == math.inf):
            axis, k = (0, h // 2) if h >= w else (1, w // 2)
        halves = ((i0, i0 + k, j0, j1), (i0 + k, i1, j0, j1)) if axis == 0 else ((i0, i1, j0, j0 + k), (i0, i1, j0 + k, j1))
        for half in halves:
            sub = _bbox(cells, *half)
            if sub is not None:
                stack.append(sub)
    return sorted(tiles)


def predict_dense(model, view: SlideView, grid: Grid, cells: np.ndarray | None = None, *,
                  tile_cells: int | None = None, batch_size: int | None = None,
                  device=None, amp: bool | None = None, tta: bool = False, out: str | Path | None = None,
                  read_workers: int | None = None, fold: bool = True, progress: bool = True) -> np.ndarray:
    """Tumour probability of every tissue cell of ``grid`` by tiled fully-convolutional inference.

    Args:
        model: a patch classifier with ``forward_dense`` (e.g. ``p4m_densenet``), returning logits, taking RGB in
            [0, 1]: a checkpoint's model from :func:`equipath.models.load_model` normalises its input itself.
        view: the slide at the model's resolution.
        grid: ``Grid.for_view(view, model)``.
        cells: ``(rows, cols)`` bool, the cells to predict (tissue); see :func:`plan_tiles`.
            Defaults to None (every cell).
        tile_cells: ``T``, the largest tile side in cells; a ``h x w``-cell tile reads
            ``((h - 1) * s + rf) x ((w - 1) * s + rf)`` pixels. Defaults to None (from memory, see
            :func:`memory_plan`).
        batch_size: tiles of the same shape per forward pass. Defaults to None (from memory).
        device: a torch device or a :class:`~equipath.training.device.DevicePlan` (which then also decides
            AMP and channels-last). Defaults to CUDA when available, else the CPU.
        amp: bf16 autocast. Defaults to True on CUDA, False on the CPU.
        tta: average over the 8 D4 transforms of every tile (:class:`~equipath.analysis.tta.GroupTTA`;
            tiles are then read square). Defaults to False.
        out: ``.npy`` path for an on-disk (memmap) map. Defaults to None (in memory).
        read_workers: threads reading (decoding, resampling) tiles ahead of the model; the readers release
            the GIL. Defaults to None (one per CPU core, at most 8).
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
    if (tile_cells is not None and tile_cells < 1) or (batch_size is not None and batch_size < 1):
        raise ValueError(f"predict_dense: tile_cells and batch_size must be >= 1, got {tile_cells}, {batch_size}")
    if out is None:
        prob = np.zeros(grid.shape, dtype=np.float32)
    else:
        prob = np.lib.format.open_memmap(Path(out), mode="w+", dtype=np.float32, shape=grid.shape)
    if not cells.any():
        return prob
    s, rf = grid.stride, grid.receptive_field
    runner = _Runner(model, _plan_for(device, amp), fold)
    auto_cells, auto_batch = memory_plan(runner.model, runner.plan.device)
    tile_cells, batch_size = tile_cells or auto_cells, batch_size or auto_batch
    cost = TileCost.of_model(runner.model)
    tiles = plan_tiles(cells, tile_cells, cost)
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
    read_px = sum(((h - 1) * s + rf) * ((w - 1) * s + rf) for _, _, h, w in tiles)
    log.info("%d tiles of at most %d^2 cells, batches of %d, over %d of %d cells (%d cells computed, %.2f Mpx read, "
             "%.0f%% of the work beyond the tissue cells' own; %s)", len(tiles), tile_cells, batch_size,
             int(cells.sum()), cells.size, sum(h * w for *_, h, w in tiles), read_px / 1e6,
             100 * (1 - cost.A * cells.sum() / sum(cost(h, w) for *_, h, w in tiles)), "with D4 TTA" if tta else "no TTA")
    predictor = _predictor(runner.model, dense=True, tta=tta)
    read_workers = read_workers or min(8, os.cpu_count() or 1)

    def read(job):
        (h, w), batch = job
        return np.stack([view.read(*grid.patch_origin(i, j), (w - 1) * s + rf, (h - 1) * s + rf)
                         for i, j, _, _ in batch])

    bar = tqdm(total=len(tiles), desc="tiles", unit="tile", disable=not progress)
    for (_, batch), pixels in read_ahead(batches, read, read_workers, depth=read_workers + 1):
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
                    batch_size: int = 64, device=None,
                    amp: bool | None = None, tta: bool = False, fold: bool = True, progress: bool = True) -> np.ndarray:
    """Patch-by-patch reference: read each cell's ``rf x rf`` patch and classify it with ``model.forward``.

    Args:
        positions: ``(N, 2)`` int cells ``(i, j)`` of ``grid``.
        Other arguments as in :func:`predict_dense`.

    Returns:
        ``(N,) float32`` probabilities.
    """
    positions = np.asarray(positions, dtype=np.int64).reshape(-1, 2)
    runner = _Runner(model, _plan_for(device, amp), fold)
    predictor = _predictor(runner.model, dense=False, tta=tta)
    rf = grid.receptive_field
    out = np.empty(len(positions), dtype=np.float32)
    for k in tqdm(range(0, len(positions), batch_size), desc="patches", unit="batch", disable=not progress):
        chunk = positions[k:k + batch_size]
        pixels = np.stack([view.read(*grid.patch_origin(i, j), rf, rf) for i, j in chunk])
        out[k:k + len(chunk)] = runner.probabilities(predictor, pixels)
    return out
