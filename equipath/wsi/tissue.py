"""Tissue detection for slides: :mod:`equipath.data.tissue` (it lives in ``data`` so that the analyses of
single images use it without importing the slide package)."""

from equipath.data.tissue import TissueOptions, overlay_mask, resize_nearest, tissue_mask

__all__ = ["TissueOptions", "tissue_mask", "overlay_mask", "resize_nearest"]
