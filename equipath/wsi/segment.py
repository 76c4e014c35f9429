"""Tiled segmentation of images and whole slides that equals one whole-image forward pass.

A segmentation model (``equipath.models.SegmentationModel``) has a receptive radius ``r`` and a total
stride ``s`` (both measured from the model) and admits the input sides ``first + step * k``. A view of
``H x W`` pixels is run as if it were one input, the **canvas**: the view padded with white (what a slide
reader returns outside the slide) to the nearest admissible sides, half of the padding on each side, so
the canvas is centred on the view. The canvas is cut, along each axis, into cores that partition it; each
core is predicted from a window of ``S`` pixels (an admissible side) that contains the core with ``margin``
pixels to spare on each side (or reaches the canvas edge), starting at a multiple of ``s`` from the canvas
origin, so every window samples the canvas's down-sampling grid. When ``margin >= r`` every kept pixel
depends only on pixels inside its window, the window's border padding coincides with the canvas's, and

    tiled(view)[y, x] = model(canvas)[y + top, x + left]      (to float rounding, eval mode)

``margin < r`` is faster (a larger share of each window is kept) and approximate near core borders; it is
logged as such.

Exact under the group: the canvas is centred on the view, the cores are laid symmetrically about the
canvas centre, and each window is the multiple of ``s`` nearest the core's centre (ties towards the canvas
centre), a rule that commutes with mirroring an axis; so the tiles of a rotated or mirrored view are the
rotated or mirrored tiles, and a p4m model's map of the transformed view is the transformed map, also
when ``margin < r``. (When ``H - first`` has the wrong parity for the model, e.g. an even side for the
odd-sided U-Nets, the padding cannot be split evenly and the map is exact only up to a one-pixel shift of
the grid under mirroring; this is logged.)

Only cores that hold tissue are run (``tissue=None`` runs all); elsewhere the map is ``NaN``. Windows are
read ahead in threads, batched, and the map is written to an ``.npy`` memmap as it is produced, so memory
is bounded by one batch whatever the view's size. A CUDA device runs under bf16 autocast.

Example:
    >>> import numpy as np, torch
    >>> from equipath.models import create_model
    >>> from equipath.wsi.reader import open_slide, SlideView
    >>> model = create_model("p4m_gerunet", width=2).eval()
    >>> pixels = np.random.default_rng(0).integers(0, 255, (105, 121, 3), dtype=np.uint8)
    >>> view = SlideView.at(open_slide(pixels))
    >>> tiled = segment_view(model, view, tile=153, tissue=None, logits=True, progress=False)
    >>> whole = model(torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255)[0].detach().numpy()
    >>> tiled.shape, bool(np.abs(tiled - whole).max() < 1e-4)
    ((2, 105, 121), True)
"""

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from equipath.training.device import device_plan
from equipath.wsi.inference import read_ahead
from equipath.wsi.reader import SlideView
from equipath.wsi.segment_outputs import release
from equipath.wsi.tissue import TissueOptions, tissue_mask

__all__ = ["AxisTiles", "TilePlan", "plan_segmentation", "segment_view"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AxisTiles:
    """The tiling of one axis of the canvas.

    Attributes:
        length: the canvas side (admissible). pad: view pixels of padding before the view.
        window: ``S``, the window side (admissible, ``<= length``).
        starts: window origins, multiples of the stride. cores: ``(begin, end)`` kept by each window.
    """

    length: int
    pad: int
    window: int
    starts: tuple[int, ...]
    cores: tuple[tuple[int, int], ...]


def _round_start(ideal: float, step: int, centre: float, top: int) -> int:
    """The multiple of ``step`` nearest ``ideal`` (ties towards ``centre``), clamped to ``[0, top]``."""
    low = math.floor(ideal / step) * step
    high = low + step
    if ideal - low < high - ideal or (ideal - low == high - ideal and abs(low - centre) <= abs(high - centre)):
        start = low
    else:
        start = high
    return int(min(max(start, 0), top))


def _at_least(rule, n: int) -> int:
    """The smallest admissible side ``>= n``."""
    return rule.first + max(0, -(-(n - rule.first) // rule.step)) * rule.step


def _at_most(rule, n: int) -> int:
    """The largest admissible side ``<= n`` (``rule.first`` when none is)."""
    return rule.first + max(0, (n - rule.first) // rule.step) * rule.step


def _plan_axis(view_side: int, rule, stride: int, tile: int, margin: int) -> AxisTiles:
    length = _at_least(rule, view_side)
    pad = (length - view_side) // 2
    window = min(length, tile)
    if window == length:
        return AxisTiles(length, pad, window, (0,), ((0, length),))
    core = window - 2 * margin - stride
    if core < 1:
        raise ValueError(f"tile side {tile} is too small for a margin of {margin} pixels at stride {stride}: "
                         f"use at least {2 * margin + stride + rule.step}")
    n = math.ceil(length / core)
    bounds = [(i * length) // n if 2 * i <= n else length - ((n - i) * length) // n for i in range(n + 1)]
    top, centre = length - window, (length - window) / 2
    starts, cores = [], []
    for b, e in zip(bounds[:-1], bounds[1:]):
        start = _round_start((b + e - window) / 2, stride, centre, top)
        if not ((start <= b - margin or start == 0) and (start + window >= e + margin or start + window == length)):
            raise AssertionError(f"tile plan: window {start}+{window} does not cover core {b}:{e} with margin {margin}")
        if starts and starts[-1] == start:  # one window keeps neighbouring cores it covers alike
            cores[-1] = (cores[-1][0], e)
        else:
            starts.append(start)
            cores.append((b, e))
    return AxisTiles(length, pad, window, tuple(starts), tuple(cores))


@dataclass(frozen=True)
class TilePlan:
    """Rows and columns of the tiling of a view (see the module docstring); ``margin`` and ``radius`` in
    pixels, ``exact`` when ``margin >= radius``."""

    rows: AxisTiles
    cols: AxisTiles
    margin: int
    radius: int
    stride: int

    @property
    def exact(self) -> bool:
        return self.margin >= self.radius

    @property
    def tiles(self) -> list[tuple[int, int]]:
        """``(row index, column index)`` of every window."""
        return [(i, j) for i in range(len(self.rows.starts)) for j in range(len(self.cols.starts))]

    def computed_pixels(self, n_tiles: int | None = None) -> int:
        """Pixels run through the model for ``n_tiles`` windows (all of them by default)."""
        n = len(self.tiles) if n_tiles is None else n_tiles
        return n * self.rows.window * self.cols.window


def plan_segmentation(model, view_shape: tuple[int, int], tile: int = 512, margin: int | None = None) -> TilePlan:
    """The tiling of a ``(H, W)`` view for ``model``.

    Args:
        model: a segmentation model (``receptive_radius``, ``total_stride``, ``size_rule``).
        view_shape: ``(H, W)`` of the view.
        tile: the window side wanted, rounded down to an admissible side (at least
            ``2 * margin + stride + step``). Defaults to 512.
        margin: pixels read around each core. Defaults to ``model.receptive_radius`` (exact).

    Raises:
        ValueError: the model is not a segmentation model, or the tile cannot hold the margin.
    """
    missing = [a for a in ("receptive_radius", "total_stride", "size_rule") if not hasattr(model, a)]
    if missing or getattr(model, "task", "") != "segmentation":
        raise ValueError(f"{type(model).__name__} is not a segmentation model (tiled segmentation needs "
                         f"receptive_radius, total_stride and size_rule, e.g. p4m_unet)")
    rule, stride, radius = model.size_rule, int(model.total_stride), int(model.receptive_radius)
    margin = radius if margin is None else int(margin)
    if margin < 0:
        raise ValueError(f"margin must be >= 0 pixels, got {margin}")
    window = _at_most(rule, int(tile))
    rows = _plan_axis(int(view_shape[0]), rule, stride, window, margin)
    cols = _plan_axis(int(view_shape[1]), rule, stride, window, margin)
    return TilePlan(rows, cols, margin, radius, stride)


def _thumbnail_rows(view: SlideView, shape: tuple[int, int], r0: int, r1: int) -> np.ndarray:
    """Rows ``[r0, r1)`` of the view resampled to ``shape = (mr, mc)`` thumbnail pixels, on a grid that fits
    the view exactly: thumbnail pixel ``(i, j)`` covers view rows ``[i H / mr, (i + 1) H / mr)`` and columns
    likewise, so the grid is symmetric about the view's centre (mirroring the view mirrors the
    thumbnail). Read from the pyramid level nearest the thumbnail's scale, only the source rows of the band
    and a margin for the filter."""
    (H, W), (mr, mc) = view.shape, shape
    reader = view.reader
    level = reader.best_level(view.downsample * min(H / mr, W / mc))
    st = view.downsample / reader.level_downsamples[level]  # level pixels per view pixel
    fy, fx = H * st / mr, W * st / mc  # level pixels per thumbnail pixel
    margin = math.ceil(max(fy, fx)) + 2
    y0 = max(0, math.floor(r0 * fy) - margin)
    y1 = min(math.ceil(H * st), math.ceil(r1 * fy) + margin)
    source = Image.fromarray(reader.read_region(0, y0, math.ceil(W * st), y1 - y0, level))
    return np.asarray(source.resize((mc, r1 - r0), Image.Resampling.BILINEAR,
                                    box=(0, r0 * fy - y0, W * st, r1 * fy - y0)))


def _tissue_thumbnail(view: SlideView, k: float, options: TissueOptions, band: int = 256) -> np.ndarray:
    """Tissue mask of the view about ``k`` times coarser (:func:`_thumbnail_rows`' symmetric grid). With
    fixed thresholds (``hsv``) it is computed in bands of ``band`` rows, each with ``4 sigma + 1`` rows of
    context for the blur that are then dropped, so memory holds one band whatever the slide's size (and
    the mask equals the whole thumbnail's); Otsu's threshold needs the whole thumbnail at once."""
    H, W = view.shape
    shape = (max(1, round(H / k)), max(1, round(W / k)))
    if options.method != "hsv":
        return tissue_mask(_thumbnail_rows(view, shape, 0, shape[0]), options)
    context = math.ceil(4 * options.blur_sigma) + 1
    mask = np.empty(shape, dtype=bool)
    for r0 in range(0, shape[0], band):
        r1 = min(shape[0], r0 + band)
        a, b = max(0, r0 - context), min(shape[0], r1 + context)
        mask[r0:r1] = tissue_mask(_thumbnail_rows(view, shape, a, b), options)[r0 - a:r1 - a]
    return mask


def _tissue_cores(view: SlideView, plan: TilePlan, options: TissueOptions) -> np.ndarray:
    """``(rows, cols)`` bool: the cores that hold tissue in a mask at about ``options.mpp`` (a thumbnail
    pixel that overlaps a core counts for it; the rule commutes with mirroring the view)."""
    k = 8.0 if view.mpp is None else max(1.0, options.mpp / view.mpp)
    mask = _tissue_thumbnail(view, k, options)
    (H, W), (mr, mc) = view.shape, mask.shape
    keep = np.zeros((len(plan.rows.cores), len(plan.cols.cores)), dtype=bool)
    for i, (b0, e0) in enumerate(plan.rows.cores):
        y0, y1 = min(max(b0 - plan.rows.pad, 0), H), min(max(e0 - plan.rows.pad, 0), H)
        r0, r1 = (y0 * mr) // H, -((-y1 * mr) // H)
        for j, (b1, e1) in enumerate(plan.cols.cores):
            x0, x1 = min(max(b1 - plan.cols.pad, 0), W), min(max(e1 - plan.cols.pad, 0), W)
            c0, c1 = (x0 * mc) // W, -((-x1 * mc) // W)
            keep[i, j] = y1 > y0 and x1 > x0 and bool(mask[r0:r1, c0:c1].any())
    return keep


@torch.inference_mode()
def segment_view(model, view: SlideView, *, tile: int = 512, margin: int | None = None,
                 tissue: TissueOptions | None = TissueOptions(),
                 batch_size: int = 4, device="auto", amp: bool | None = None, logits: bool = False,
                 dtype=np.float32, out: str | Path | None = None, read_workers: int = 2,
                 progress: bool = True) -> np.ndarray:
    """Per-class map ``(num_classes, H, W)`` of a view by tiled inference (see the module docstring).

    Args:
        model: a segmentation model returning logits ``(B, C, H, W)`` from RGB in [0, 1] (a checkpoint's model
            from :func:`equipath.models.load_model` normalises its input itself).
        view: the view at the model's resolution.
        tile: window side in pixels (rounded to an admissible side). Defaults to 512.
        margin: pixels read around each core. Defaults to the model's receptive radius (exact).
        tissue: how tissue is found; None runs every core. Defaults to ``TissueOptions()``.
        batch_size: windows per forward pass. Defaults to 4.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda[:N]"``; run as
            :func:`equipath.training.device.device_plan` decides (bf16 autocast and channels-last on CUDA).
            Defaults to ``"auto"``.
        amp: bf16 autocast; None: the device's default. Defaults to None.
        logits: keep logits instead of probabilities (softmax over classes; sigmoid for one class).
            Defaults to False.
        dtype: the map's dtype. Defaults to float32.
        out: ``.npy`` path of an on-disk (memmap) map, written as tiles are produced. Defaults to None.
        read_workers: threads reading windows ahead of the model. Defaults to 2.
        progress: show a progress bar. Defaults to True.

    Returns:
        ``(C, H, W)`` array (a memmap when ``out`` is given), ``NaN`` where no core was run.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    plan = plan_segmentation(model, view.shape, tile, margin)
    if not plan.exact:
        log.warning("margin %d < receptive radius %d: tiles are faster but differ from whole-image inference "
                    "near their borders", plan.margin, plan.radius)
    for axis, tiles, side in (("height", plan.rows, view.shape[0]), ("width", plan.cols, view.shape[1])):
        if (tiles.length - side) % 2:
            log.warning("view %s %d: the padding to %d cannot be centred, so the map is exactly equivariant "
                        "only up to a one-pixel shift under mirroring", axis, side, tiles.length)
    run = device_plan(device or "auto", amp)
    model = run.apply(model).eval()
    C, (H, W) = int(model.num_classes), view.shape
    keep = np.ones((len(plan.rows.cores), len(plan.cols.cores)), dtype=bool) if tissue is None else \
        _tissue_cores(view, plan, tissue)
    tiles = [(i, j) for i, j in plan.tiles if keep[i, j]]
    if out is None:
        result = np.full((C, H, W), np.nan, dtype=dtype)
    else:
        result = np.lib.format.open_memmap(Path(out), mode="w+", dtype=dtype, shape=(C, H, W))
        for y in range(0, H, 1024):
            result[:, y:y + 1024] = np.nan
            release(result)
    log.info("%d of %d tiles of %dx%d over tissue, margin %d (%s), %.2f Mpx computed for %.2f Mpx of view",
             len(tiles), len(plan.tiles), plan.rows.window, plan.cols.window, plan.margin,
             "exact" if plan.exact else "approximate", plan.computed_pixels(len(tiles)) / 1e6, H * W / 1e6)
    batches = [tiles[k:k + batch_size] for k in range(0, len(tiles), batch_size)]

    def read(batch):
        return np.stack([view.read(plan.cols.starts[j] - plan.cols.pad, plan.rows.starts[i] - plan.rows.pad,
                                   plan.cols.window, plan.rows.window) for i, j in batch])

    bar = tqdm(total=len(tiles), desc="tiles", unit="tile", disable=not progress)
    for batch, pixels in read_ahead(batches, read, read_workers, depth=read_workers + 1):
        x = run.inputs(torch.from_numpy(pixels)).permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, S, S)
        with run.autocast():
            y = model(x).float()  # (B, C, S, S)
        if not logits:
            y = y.softmax(1) if C > 1 else y.sigmoid()
        y = y.cpu().numpy()
        for (i, j), window in zip(batch, y):
            (b0, e0), (b1, e1) = plan.rows.cores[i], plan.cols.cores[j]
            s0, s1 = plan.rows.starts[i], plan.cols.starts[j]
            # the core in view coordinates, cut to the view (cores in the padding hold no pixel of it)
            v0, v1 = max(b0 - plan.rows.pad, 0), min(e0 - plan.rows.pad, H)
            u0, u1 = max(b1 - plan.cols.pad, 0), min(e1 - plan.cols.pad, W)
            if v1 > v0 and u1 > u0:
                result[:, v0:v1, u0:u1] = window[:, v0 + plan.rows.pad - s0:v1 + plan.rows.pad - s0,
                                                 u0 + plan.cols.pad - s1:u1 + plan.cols.pad - s1]
        if out is not None:
            release(result)
        bar.update(len(batch))
    bar.close()
    if out is not None:
        result.flush()
    return result
