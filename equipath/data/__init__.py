"""Data sets in their original formats, the embedded synthetic default, data regimes and augmentation.

- :class:`PCamDataset` reads PatchCamelyon's official h5 files (plain or gzipped); :func:`write_pcam`
  writes that format.
- :class:`SegmentationDataset` samples patches from image / mask pairs (:func:`folder_pairs`,
  :func:`csv_pairs`).
- :class:`OcelotDataset` reads OCELOT 2023; :func:`points_to_mask`, :func:`points_to_heatmap` and
  :func:`mask_to_points` convert between cell points and segmentation targets.
- :class:`BreakHisDataset` reads a BreakHis tree; :func:`predict_max_over_crops` classifies an image by
  its most malignant-looking crop.
- :func:`write_synthetic_pcam`, :func:`write_synthetic_tiles`, :class:`SyntheticSegmentation`: the
  procedural H&E-like default (:mod:`equipath.data.synthetic`), always labelled synthetic.
- :func:`regime_indices`: nested 100 / 50 / 25 / 12.5 % training subsets.
- :mod:`equipath.data.augment`: joint image / mask augmentation (D4 via :mod:`equipath.groups`).
"""

from equipath.data.augment import make_augmentation
from equipath.data.breakhis import (BreakHisDataset, breakhis_mpp, patient_splits, predict_max_over_crops,
                                    split_accuracy)
from equipath.data.ocelot import OcelotDataset, mask_to_points, points_to_heatmap, points_to_mask
from equipath.data.pcam import PCamDataset, PCamWriter, write_pcam
from equipath.data.regimes import REGIME_FRACTIONS, regime_indices
from equipath.data.segmentation import SegmentationDataset, csv_pairs, folder_pairs
from equipath.data.synthetic_sets import (SyntheticSegmentation, write_preview, write_synthetic_pcam,
                                          write_synthetic_tiles)

__all__ = ["PCamDataset", "PCamWriter", "write_pcam", "SegmentationDataset", "folder_pairs", "csv_pairs",
           "OcelotDataset", "points_to_mask", "points_to_heatmap", "mask_to_points", "BreakHisDataset",
           "patient_splits", "breakhis_mpp", "split_accuracy", "predict_max_over_crops", "write_synthetic_pcam",
           "write_synthetic_tiles", "SyntheticSegmentation", "write_preview", "regime_indices", "REGIME_FRACTIONS",
           "make_augmentation"]
