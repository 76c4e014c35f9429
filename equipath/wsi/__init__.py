"""Whole-slide inference (seed 000 sections 2.2 and 3.1): slide reading, tissue detection, fully-convolutional
heatmaps, detections by square NMS, the Camelyon16 FROC protocol, training patches from slides, and runs
over many slides.

Pipeline: :mod:`~equipath.wsi.reader` (OpenSlide / tiffslide / images, by level or microns per pixel) ->
:mod:`~equipath.wsi.tissue` (HSV or Otsu) -> :mod:`~equipath.wsi.inference` (tiled ``forward_dense`` over
tissue) -> :mod:`~equipath.wsi.outputs` (npy, PNG, pyramidal TIFF, GeoJSON) and
:mod:`~equipath.wsi.detection` (square NMS -> Camelyon16 CSV) -> :mod:`~equipath.wsi.froc`.
"""

from equipath.wsi.annotations import Annotation, rasterize, read_asap_xml, write_asap_xml
from equipath.wsi.batch import SlideOutcome, find_slides, run_slides
from equipath.wsi.detection import read_detections_csv, square_nms, write_detections_csv
from equipath.wsi.froc import (EVAL_FPS, FROCReport, GroundTruth, SlideHits, evaluate_froc, evaluate_slide,
                               froc_curve, froc_score, load_ground_truth)
from equipath.wsi.inference import Grid, predict_dense, predict_patches, tissue_cells
from equipath.wsi.outputs import write_geojson, write_heatmap_png, write_pyramidal_tiff
from equipath.wsi.pipeline import PredictJob, PredictOptions, predict_slide
from equipath.wsi.reader import SlideReader, SlideView, open_slide
from equipath.wsi.tissue import TissueOptions, tissue_mask

__all__ = [
    "open_slide", "SlideReader", "SlideView",
    "TissueOptions", "tissue_mask",
    "Grid", "tissue_cells", "predict_dense", "predict_patches",
    "write_geojson", "write_heatmap_png", "write_pyramidal_tiff",
    "square_nms", "write_detections_csv", "read_detections_csv",
    "Annotation", "read_asap_xml", "write_asap_xml", "rasterize",
    "GroundTruth", "SlideHits", "load_ground_truth", "evaluate_slide", "froc_curve", "froc_score",
    "evaluate_froc", "FROCReport", "EVAL_FPS",
    "PredictOptions", "PredictJob", "predict_slide",
    "SlideOutcome", "find_slides", "run_slides",
]
