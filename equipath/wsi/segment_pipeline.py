"""One image or slide through a segmentation checkpoint: read at the model's resolution, tiled exact inference
over tissue (:mod:`equipath.wsi.segment`), and the outputs of :mod:`equipath.wsi.segment_outputs` in one
folder. :class:`SegmentJob` is the picklable per-slide job that :func:`equipath.wsi.batch.run_slides` runs
(output-folder safety, locks, completion markers and resume come from there).

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> from equipath.models import create_model
    >>> model = create_model("p4m_gerunet", width=2).eval()
    >>> image = np.random.default_rng(0).integers(0, 255, (60, 70, 3), dtype=np.uint8)
    >>> out = pathlib.Path(tempfile.mkdtemp())
    >>> summary = segment_slide(image, out, model, {"model": {"name": "p4m_gerunet"}},
    ...                         SegmentOptions(tissue=None, progress=False))
    >>> sorted(p.name for p in out.iterdir())
    ['labels.tif', 'overlay.png', 'probabilities.npy', 'regions.geojson', 'segment.json']
"""

import logging
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from equipath.atomic import write_json
from equipath.checkpoint import load_model
from equipath.data.ocelot import mask_to_points
from equipath.evaluation.ocelot_submission import write_ocelot_submission
from equipath.outdir import file_sha256
from equipath.wsi.geojson import label_features, point_features, write_geojson
from equipath.wsi.pipeline import stained_view, trained_on_synthetic
from equipath.wsi.reader import SlideView, open_slide
from equipath.wsi.segment import plan_segmentation, segment_view
from equipath.wsi.segment_outputs import class_names_of, label_mask, write_label_overlay, write_label_tiff
from equipath.wsi.tissue import TissueOptions, tissue_mask

__all__ = ["SegmentOptions", "SegmentJob", "segment_slide", "is_cell_model"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmentOptions:
    """How a segmentation checkpoint is run over one input.

    Attributes:
        mpp / level: the resolution the model runs at (microns per pixel, or a pyramid level); neither:
            level 0. slide_mpp: level-0 microns per pixel of files that do not say. backend: slide reader.
        tissue: how tissue is found; None runs the whole image. Defaults to ``TissueOptions()``.
        tile: window side; margin: pixels around each core (None: the receptive radius, exact).
        batch_size, device, amp, read_workers, progress: as :func:`~equipath.wsi.segment.segment_view`.
        cells: write cell detections (GeoJSON points, OCELOT JSON); None: when the checkpoint was trained on
            OCELOT. min_distance / cell_threshold: least distance between cells and least cell probability.
        thumbnail_side: longest side of the overlay picture. Defaults to 1024.
        dtype: of ``probabilities.npy``, ``"float16"`` (half the disk) or ``"float32"``. Defaults to float16.
    """

    mpp: float | None = None
    level: int | None = None
    slide_mpp: float | None = None
    backend: str = "auto"
    tissue: TissueOptions | None = field(default_factory=TissueOptions)
    tile: int = 512
    margin: int | None = None
    batch_size: int = 4
    device: str = "auto"
    amp: bool | None = None
    read_workers: int = 2
    progress: bool = True
    cells: bool | None = None
    min_distance: int = 8
    cell_threshold: float = 0.5
    thumbnail_side: int = 1024
    dtype: str = "float16"

    def made_with(self) -> dict:
        """The options the outputs depend on (not devices, threads or progress bars)."""
        skip = {"device", "read_workers", "progress", "batch_size"}
        return {k: v for k, v in asdict(self).items() if k not in skip}


def is_cell_model(checkpoint: dict) -> bool:
    """Whether a checkpoint was trained on OCELOT cells (seed 002), so its output is cell classes."""
    data = (checkpoint.get("config") or {}).get("data") or {}
    return "ocelot" in str(data.get("dataset", "")).lower()


def segment_slide(source, out_dir, model, checkpoint: dict, options: SegmentOptions = SegmentOptions()) -> dict:
    """Segment one image or slide into ``out_dir`` (see the module docstring); returns the summary that is
    also written to ``segment.json``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open_slide(source, options.backend, options.slide_mpp) as reader:
        view = SlideView.at(reader, level=options.level, mpp=options.mpp)
        plan = plan_segmentation(model, view.shape, options.tile, options.margin)
        prob = segment_view(model, _stained(view, checkpoint, options), tile=options.tile, margin=options.margin,
                            tissue=options.tissue,  # the model normalises its input (load_model)
                            batch_size=options.batch_size, device=options.device, amp=options.amp,
                            dtype=np.dtype(options.dtype), out=out_dir / "probabilities.npy",
                            read_workers=options.read_workers,
                            progress=options.progress)
        seconds = time.perf_counter() - start
        k = max(1.0, max(view.shape) / options.thumbnail_side)
        thumbnail = view.coarser(k).read_all()
        dims = reader.dimensions
    names = class_names_of(checkpoint, prob.shape[0])
    labels = label_mask(prob, out=out_dir / ".labels.npy")  # on disk: the process holds no H x W array
    write_label_tiff(out_dir / "labels.tif", labels, view.mpp)
    synthetic = trained_on_synthetic(checkpoint)
    write_label_overlay(out_dir / "overlay.png", thumbnail, labels, names, pixel_size=k,
                        note="model trained on SYNTHETIC data" if synthetic else None)
    regions = {v: n for v, n in names.items() if v != 0}
    step = max(1, -(-max(labels.shape) // 8192))  # polygons of very large maps from every step-th pixel
    write_geojson(out_dir / "regions.geojson", label_features(labels[::step, ::step], regions,
                                                              downsample=view.downsample * step, bounds=dims))
    predicted = sum(int((labels[y:y + 1024] != 255).sum()) for y in range(0, len(labels), 1024)) / labels.size
    del labels
    (out_dir / ".labels.npy").unlink()
    summary = {"source": str(source) if isinstance(source, (str, Path)) else "<array>",
               "model": checkpoint.get("model"), "synthetic": synthetic, "classes": names,
               "level0_dimensions": list(dims),
               "view": {"downsample": view.downsample, "mpp": view.mpp, "shape": list(view.shape)},
               "tiles": {"window": [plan.rows.window, plan.cols.window], "margin": plan.margin,
                         "receptive_radius": plan.radius, "stride": plan.stride, "exact": plan.exact},
               "predicted_fraction": predicted, "seconds": seconds,
               "options": asdict(options), "warnings": [] if plan.exact else
               [f"margin {plan.margin} < receptive radius {plan.radius}: approximate near tile borders"]}
    if options.cells if options.cells is not None else is_cell_model(checkpoint):
        cell_prob = np.nan_to_num(np.asarray(prob[1:], dtype=np.float32), nan=0.0)  # channel c - 1: class c
        points, classes, scores = mask_to_points(cell_prob, options.min_distance, options.cell_threshold)
        level0 = (points + 0.5) * view.downsample
        write_geojson(out_dir / "cells.geojson", point_features(level0, classes, scores, names))
        write_ocelot_submission(out_dir / "cells.json", [np.column_stack([points, classes, scores])])
        summary["cells"] = int(len(points))
    write_json(out_dir / "segment.json", summary)
    log.info("%s: %.0f%% predicted, %.1f s", summary["source"], 100 * summary["predicted_fraction"], seconds)
    return summary


def _stained(view, checkpoint: dict, options: SegmentOptions):
    """The view the model reads: with the checkpoint's stain normalisation measured once on the tissue of a
    thumbnail (as :func:`~equipath.wsi.pipeline.predict_slide` does), or ``view`` itself without one."""
    if checkpoint.get("stain") is None:
        return view
    thumbnail = view.coarser(max(1.0, max(view.shape) / options.thumbnail_side)).read_all()
    mask = tissue_mask(thumbnail, options.tissue) if options.tissue is not None else \
        np.ones(thumbnail.shape[:2], dtype=bool)
    return stained_view(view, checkpoint, thumbnail, mask)


@lru_cache(maxsize=1)
def _load(checkpoint: str):
    return load_model(checkpoint, map_location="cpu")


@dataclass(frozen=True)
class SegmentJob:
    """A picklable per-input job for :func:`~equipath.wsi.batch.run_slides`: loads the checkpoint once per
    process and runs :func:`segment_slide` with ``options``."""

    checkpoint: str
    options: SegmentOptions = field(default_factory=SegmentOptions)

    def load(self) -> tuple:
        return _load(str(self.checkpoint))

    def record(self) -> dict:
        """What the outputs depend on: a resume with another checkpoint or other options is refused."""
        return {"checkpoint": str(self.checkpoint),
                "made_with": {"checkpoint_sha256": file_sha256(self.checkpoint), "options": self.options.made_with()}}

    def __call__(self, slide, out_dir) -> dict:
        model, checkpoint = self.load()
        return segment_slide(slide, out_dir, model, checkpoint, self.options)
