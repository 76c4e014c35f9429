"""One slide, end to end: reader -> tissue -> fully-convolutional inference -> outputs -> detections.

:func:`predict_slide` writes into one folder:

| file | what |
|---|---|
| ``probability.npy`` | ``(rows, cols) float32`` tumour probability per grid cell (NaN off tissue: not predicted) |
| ``tissue.png`` / ``tissue_overlay.png`` | the tissue mask and the thumbnail (``thumbnail_size``) with the mask tinted |
| ``heatmap.png`` | the probabilities over the thumbnail, with a colour bar and title |
| ``heatmap.tif`` | the colour heatmap as a tiled pyramidal TIFF, one pixel per cell |
| ``regions.geojson`` | QuPath annotations of the regions with probability >= ``threshold`` |
| ``detections.csv`` | Camelyon16 ``prob,X,Y`` (level 0) from square NMS |
| ``slide.json`` | geometry (level-0 cell size), model, options, timings, warnings; written last |

Example (a checkpoint gives ``model, checkpoint = equipath.checkpoint.load_model(path)``):
    >>> import numpy as np, tempfile
    >>> from equipath.models import create_model
    >>> model = create_model("p4m_densenet", growth=8).eval()
    >>> image = np.full((200, 260, 3), 240, np.uint8); image[50:150, 60:200] = (200, 120, 190)
    >>> summary = predict_slide(image, tempfile.mkdtemp(), model, {}, PredictOptions(mpp=None, progress=False))
    >>> summary["grid"]["shape"], summary["tissue_cells"] > 0
    ([7, 9], True)
"""

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from equipath.atomic import write_json
from equipath.checkpoint import load_model
from equipath.data.stain import stain_from_checkpoint
from equipath.outdir import file_sha256
from equipath.wsi.detection import square_nms, write_detections_csv
from equipath.wsi.inference import Grid, check_dense_model, predict_dense, tissue_cells
from equipath.wsi.outputs import (DEFAULT_CMAP, write_geojson, write_heatmap_png, write_png,
                                  write_pyramidal_tiff, write_tissue_overlay)
from equipath.wsi.reader import SlideView, open_slide
from equipath.wsi.tissue import TissueOptions

__all__ = ["PredictOptions", "PredictJob", "predict_slide", "trained_on_synthetic", "default_device",
           "OUTPUT_FILES"]

log = logging.getLogger(__name__)

OUTPUT_FILES = ("probability.npy", "tissue.png", "tissue_overlay.png", "heatmap.png", "heatmap.tif",
                "regions.geojson", "detections.csv", "slide.json")


@dataclass(frozen=True)
class PredictOptions:
    """How a slide is predicted.

    Attributes:
        mpp: microns per pixel the model runs at (seed 000: 10x, 0.972). Defaults to 0.972.
        level: a pyramid level instead of ``mpp``. Defaults to None.
        slide_mpp: the slide's level-0 microns per pixel when its file does not say. Defaults to None.
        backend: slide backend (``auto``, ``openslide``, ``tiffslide``, ``image``). Defaults to ``auto``.
        tissue: tissue detection options. Defaults to ``TissueOptions()``.
        tile_cells, batch_size, device, amp, tta, read_workers: as in
            :func:`~equipath.wsi.inference.predict_dense`. Defaults to None, None, None, None, False, None:
            tile size and batch from memory, one reader thread per core; device None is
            :func:`default_device` (one GPU per ``torchrun`` rank).
        threshold: probability of GeoJSON regions. Defaults to 0.5.
        nms_window: square NMS window in cells. Defaults to 5.
        nms_threshold: lowest probability of a detection. Defaults to 0.5.
        thumbnail_size: longest side of the heatmap and tissue overlay thumbnail in pixels. Defaults to 1024.
        cmap: matplotlib colour map of the heatmaps. Defaults to ``"viridis"`` (perceptually uniform).
        alpha: opacity of the heatmap over the thumbnail, in [0, 1]. Defaults to 0.5.
        progress: progress bars. Defaults to True.
    """

    mpp: float | None = 0.972
    level: int | None = None
    slide_mpp: float | None = None
    backend: str = "auto"
    tissue: TissueOptions = field(default_factory=TissueOptions)
    tile_cells: int | None = None
    batch_size: int | None = None
    device: str | None = None
    amp: bool | None = None
    tta: bool = False
    read_workers: int | None = None
    threshold: float = 0.5
    nms_window: int = 5
    nms_threshold: float = 0.5
    thumbnail_size: int = 1024
    cmap: str = DEFAULT_CMAP
    alpha: float = 0.5
    progress: bool = True

    def __post_init__(self):
        """Every value checked before any slide is read: ``ValueError`` naming the option (its CLI flag)."""
        for name, low, high in (("tile_cells", 1, 4096), ("batch_size", 1, 4096), ("read_workers", 0, 256),
                                ("nms_window", 1, 100_000), ("thumbnail_size", 16, 65_536)):
            if getattr(self, name) is not None or name in ("nms_window", "thumbnail_size"):
                _check_number(name, getattr(self, name), low, high, integer=True)
        if self.level is not None:
            _check_number("level", self.level, 0, 64, integer=True)
        for name in ("mpp", "slide_mpp"):
            if getattr(self, name) is not None:
                _check_number(name, getattr(self, name), 1e-3, 1e4)
        for name in ("threshold", "nms_threshold", "alpha"):
            _check_number(name, getattr(self, name), 0.0, 1.0)

    def made_with(self) -> dict:
        """The options the outputs depend on (not progress bars, device, batch size or reader threads)."""
        values = asdict(self)
        for name in ("progress", "device", "batch_size", "read_workers"):
            values.pop(name)
        return values


def _check_number(name: str, value, low, high, integer: bool = False) -> None:
    flag = "--" + name.replace("_", "-")
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not (low <= value <= high):  # NaN fails too
        raise ValueError(f"{flag} must be {'an integer' if integer else 'a number'} in [{low:g}, {high:g}], "
                         f"got {value!r}")


def predict_slide(source, out_dir, model, checkpoint: dict, options: PredictOptions = PredictOptions()) -> dict:
    """Predict one slide and write every output into ``out_dir`` (see the module docstring).

    Args:
        source: a slide path (or an image array) for :func:`~equipath.wsi.reader.open_slide`.
        out_dir: the folder for the outputs (created).
        model: a fully-convolutional patch classifier in eval mode.
        checkpoint: the checkpoint dict of ``model`` (``model``, ``config``, ...) or ``{}``; the model normalises its
            own input (:func:`equipath.models.load_model`).
        options: :class:`PredictOptions`.

    Returns:
        The summary also written to ``slide.json``; ``summary["warnings"]`` lists per-slide warnings
        (e.g. no tissue found).
    """
    check_dense_model(model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    warnings = []
    start = time.perf_counter()
    with open_slide(source, options.backend, options.slide_mpp) as reader:
        mpp = None if options.level is not None else options.mpp
        view = SlideView.at(reader, level=options.level, mpp=mpp)
        grid = Grid.for_view(view, model)
        cell_size = grid.stride * grid.downsample
        tissue_thumb, mask, cells = tissue_cells(view, grid, options.tissue)
        mask_pixel = cell_size / round(cell_size * mask.shape[0] / reader.dimensions[1])  # k mask pixels per cell
        thumb_view = view.coarser(max(1.0, max(view.shape) / options.thumbnail_size))
        thumbnail = thumb_view.read_all()
        write_png(out_dir / "tissue.png", (mask * 255).astype(np.uint8)[..., None].repeat(3, axis=-1))
        write_tissue_overlay(out_dir / "tissue_overlay.png", thumbnail, mask, pixel_size=thumb_view.downsample,
                             mask_pixel_size=mask_pixel)
        if not cells.any():
            warnings.append(f"no tissue found in {reader.name} ({options.tissue.method} thresholds: saturation > "
                            f"{options.tissue.saturation}, value > {options.tissue.value}); the map is empty")
            log.warning("%s", warnings[-1])
        t_tissue = time.perf_counter()
        model_view = stained_view(view, checkpoint, tissue_thumb, mask)  # the checkpoint's stain, if any
        prob = predict_dense(model, model_view, grid, cells,  # the model normalises its input (load_model)
                             tile_cells=options.tile_cells, batch_size=options.batch_size,
                             device=options.device or default_device(),
                             amp=options.amp, tta=options.tta, out=out_dir / ".probability.npy",
                             read_workers=options.read_workers, progress=options.progress)
        t_infer = time.perf_counter()
        prob[~cells] = np.nan  # not predicted: distinct from a predicted probability 0
        if isinstance(prob, np.memmap):
            prob.flush()
        (out_dir / ".probability.npy").replace(out_dir / "probability.npy")
        dims, level0_mpp, backend = reader.dimensions, reader.mpp, reader.backend
    synthetic = trained_on_synthetic(checkpoint)
    model_name = (checkpoint.get("model") or {}).get("name") or type(model).__name__
    write_heatmap_png(out_dir / "heatmap.png", thumbnail, prob, pixel_size=thumb_view.downsample,
                      cell_size=cell_size, alpha=options.alpha, cmap=options.cmap,
                      title=f"{Path(reader.name).name} - {model_name}",
                      note="model trained on SYNTHETIC data" if synthetic else None)
    write_pyramidal_tiff(out_dir / "heatmap.tif", prob, None if view.mpp is None else view.mpp * grid.stride,
                         cmap=options.cmap)
    write_geojson(out_dir / "regions.geojson", prob, options.threshold, cell_size, bounds=dims)
    detections = square_nms(prob, options.nms_window, options.nms_threshold)
    xs, ys = grid.cell_centre_level0(detections[:, 1], detections[:, 2])
    # a cell of the last row or column reaches past the slide: its detection goes to the centre of its part inside
    xs = np.minimum(xs, (detections[:, 2] * cell_size + dims[0]) / 2)
    ys = np.minimum(ys, (detections[:, 1] * cell_size + dims[1]) / 2)
    write_detections_csv(out_dir / "detections.csv", detections[:, 0], xs, ys)
    elapsed = time.perf_counter() - start
    tissue_px = float(cells.sum()) * grid.stride**2
    summary = {
        "slide": str(source) if isinstance(source, (str, Path)) else "<array>",
        "backend": backend,
        "level0_dimensions": list(dims),
        "level0_mpp": level0_mpp,
        "view": {"downsample": view.downsample, "mpp": view.mpp, "level": view.level, "shape": list(view.shape)},
        "grid": {"shape": list(grid.shape), "stride": grid.stride, "receptive_field": grid.receptive_field,
                 "cell_size_level0": cell_size, "cell_origin_level0": [0.0, 0.0], "background": "NaN"},
        "pictures": {"thumbnail_pixel_level0": thumb_view.downsample, "tissue_mask_pixel_level0": mask_pixel},
        "model": checkpoint.get("model", {"name": type(model).__name__}),
        "synthetic": synthetic,
        "tissue_cells": int(cells.sum()),
        "tissue_megapixels": tissue_px / 1e6,
        "max_probability": (float(np.nanmax(prob)) if np.isfinite(prob).any()   # null: no finite probability
                            else None if cells.any() else 0.0),
        "detections": int(len(detections)),
        "seconds": {"tissue": t_tissue - start, "inference": t_infer - t_tissue, "total": elapsed},
        "tissue_megapixels_per_second": tissue_px / 1e6 / max(t_infer - t_tissue, 1e-9),
        "options": asdict(options),
        "warnings": warnings,
    }
    write_json(out_dir / "slide.json", summary)
    top = summary["max_probability"]
    log.info("%s: %d tissue cells, %d detections, max probability %s, %.1f s", summary["slide"],
             summary["tissue_cells"], summary["detections"], "none" if top is None else f"{top:.3f}", elapsed)
    return summary



class _StainedView:
    """A view whose reads are stain-normalised; everything else is the view's."""

    def __init__(self, view, transform):
        self._view, self._transform = view, transform

    def __getattr__(self, name):
        return getattr(self._view, name)

    def read(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        """The view's read with the pixels inside the view normalised; the padding of a read reaching past
        the view's edge stays as the view pads (so a tiled pass equals one pass over the normalised image)."""
        tile = self._view.read(x, y, w, h)
        H, W = self._view.shape
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
        if x0 >= x1 or y0 >= y1:
            return tile
        if (x0, y0, x1, y1) == (x, y, x + w, y + h):
            return self._transform(tile)
        tile = tile.copy()
        tile[y0 - y:y1 - y, x0 - x:x1 - x] = self._transform(tile[y0 - y:y1 - y, x0 - x:x1 - x])
        return tile


def stained_view(view, checkpoint: dict, thumbnail: np.ndarray, mask: np.ndarray):
    """``view`` as the model should see it: with the checkpoint's stain normalisation (``checkpoint["stain"]``,
    :mod:`equipath.data.stain`) measured once on the slide's tissue pixels of ``thumbnail`` and applied to
    every read, or ``view`` itself when the checkpoint has none or no tissue was found. Tissue detection,
    thumbnails and heatmaps keep the raw pixels."""
    normalizer = stain_from_checkpoint(checkpoint)
    if normalizer is None or not mask.any():
        return view
    return _StainedView(view, normalizer.from_source(thumbnail[mask][None]))  # (1, tissue pixels, 3)


def default_device() -> str:
    """``cuda:LOCAL_RANK`` under ``torchrun`` (one GPU per rank), ``cuda`` when a GPU is present, else ``cpu``."""
    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count()}"


def trained_on_synthetic(checkpoint: dict) -> bool:
    """Whether the checkpoint's model was trained on synthetic data (its outputs are then labelled so)."""
    data = (checkpoint.get("config") or {}).get("data") or {}
    return bool(checkpoint.get("synthetic")) or str(data.get("dataset", "")).startswith("synthetic")


@lru_cache(maxsize=1)
def _load(checkpoint: str):
    return load_model(checkpoint, map_location="cpu")


@dataclass(frozen=True)
class PredictJob:
    """A picklable per-slide job for :func:`~equipath.wsi.batch.run_slides`: loads the checkpoint once per
    process and runs :func:`predict_slide` with ``options``.

    Example:
        >>> job = PredictJob("model.pt", PredictOptions(mpp=0.972, tta=True))
        >>> job.options.tta  # run_slides(find_slides(["slides/"]), "out", job) runs it on every slide
        True
    """

    checkpoint: str
    options: PredictOptions = field(default_factory=PredictOptions)

    def load(self) -> tuple:
        """``(model, checkpoint dict)``, loaded once per process."""
        return _load(str(self.checkpoint))

    def record(self) -> dict:
        """What the outputs depend on, for :func:`~equipath.wsi.batch.run_slides`'s ``record``: a resume
        with another checkpoint (by content) or other options is refused."""
        return {"checkpoint": str(self.checkpoint),
                "made_with": {"checkpoint_sha256": file_sha256(self.checkpoint), "options": self.options.made_with()}}

    def __call__(self, slide, out_dir) -> dict:
        model, checkpoint = self.load()
        return predict_slide(slide, out_dir, model, checkpoint, self.options)
