"""What a segmentation prediction leaves for people to open, each file written atomically:

- ``probabilities.npy``: per-class probabilities ``(C, H, W) float16`` (``NaN`` where nothing was predicted:
  glass, distinct from a predicted 0), written tile by tile by :func:`~equipath.wsi.segment.segment_view`;
- ``labels.tif``: the argmax label mask as a tiled pyramidal TIFF (level 0 then halvings, resolution tags
  in microns), 255 where nothing was predicted;
- ``overlay.png``: the labels over a thumbnail, with a legend of the class names and colours;
- ``regions.geojson``: QuPath polygons (with holes) of every class but the first (background);
- for cell models, ``cells.geojson`` (QuPath point detections) and ``cells.json`` (OCELOT 2023 submission
  format, :mod:`equipath.evaluation.ocelot_submission`).

Example:
    >>> import numpy as np
    >>> prob = np.full((2, 4, 5), np.nan, np.float16); prob[:, :, :3] = [[[0.8]], [[0.2]]]
    >>> label_mask(prob).tolist()[0]
    [0, 0, 0, 255, 255]
"""

import mmap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from equipath.atomic import atomic_path
from equipath.wsi.geojson import class_color
from equipath.wsi.outputs import cells_to_pixels
from equipath.wsi.tissue import resize_nearest

__all__ = ["NO_LABEL", "label_mask", "release", "write_label_tiff", "write_label_overlay", "class_names_of"]

NO_LABEL = 255


def class_names_of(checkpoint: dict, num_classes: int) -> dict[int, str]:
    """``{index: name}`` of a segmentation checkpoint's classes: its ``class_names`` (or
    ``config.class_names``) when it has them, else ``Background`` and ``Class 1``, ``Class 2``, ...; for
    two classes ``Background`` and ``Tumor``."""
    names = checkpoint.get("class_names") or (checkpoint.get("config") or {}).get("class_names")
    if names and len(names) == num_classes:
        return {i: str(n) for i, n in enumerate(names)}
    if num_classes == 2:
        return {0: "Background", 1: "Tumor"}
    return {0: "Background", **{i: f"Class {i}" for i in range(1, num_classes)}}


def label_mask(prob: np.ndarray, out=None, rows: int = 1024) -> np.ndarray:
    """Argmax ``(H, W) uint8`` of probabilities ``(C, H, W)``, :data:`NO_LABEL` where they are NaN, read
    ``rows`` rows at a time, so a memmap is never loaded whole; into an ``.npy`` memmap at ``out`` (pages
    dropped as they are written) or, by default, memory (``H * W`` bytes)."""
    C, H, W = prob.shape
    labels = np.empty((H, W), dtype=np.uint8) if out is None else \
        np.lib.format.open_memmap(out, mode="w+", dtype=np.uint8, shape=(H, W))
    for y in range(0, H, rows):
        chunk = np.asarray(prob[:, y:y + rows], dtype=np.float32)
        nan = np.isnan(chunk).any(0)
        labels[y:y + rows] = np.where(nan, NO_LABEL, np.nan_to_num(chunk, nan=-1.0).argmax(0))
        if out is not None:
            release(labels)
    return labels


def release(memmap: np.memmap) -> None:
    """Write a memmap's dirty pages to disk and drop them from memory (they are read back when touched)."""
    memmap.flush()
    mapping = getattr(memmap, "_mmap", None)
    if mapping is not None and hasattr(mapping, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        mapping.madvise(mmap.MADV_DONTNEED)


def write_label_tiff(path, labels: np.ndarray, mpp: float | None, tile: int = 256) -> Path:
    """``labels (H, W) uint8`` (an array or an ``.npy`` memmap) as a tiled pyramidal TIFF: level 0, then
    halvings (nearest) down to one tile, top-level pages as OpenSlide, tiffslide and QuPath open them;
    resolution tags give ``mpp`` microns per pixel when known. Written tile by tile from ``labels``, so a
    memmap is never loaded whole."""
    import tifffile

    H, W = labels.shape

    def tiles(f: int):
        h, w = -(-H // f), -(-W // f)
        for y in range(0, h, tile):
            for x in range(0, w, tile):
                block = np.zeros((tile, tile), dtype=np.uint8)
                part = labels[y * f:(y + tile) * f:f, x * f:(x + tile) * f:f]
                block[:part.shape[0], :part.shape[1]] = part
                yield block
            if isinstance(labels, np.memmap):
                release(labels)

    options = {"tile": (tile, tile), "photometric": "minisblack", "compression": "zlib", "dtype": np.uint8}
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=H * W > 2**31) as tif:
        f = 1
        while True:
            if mpp:
                options.update(resolution=(1e4 / (mpp * f), 1e4 / (mpp * f)), resolutionunit="CENTIMETER")
            shape = (-(-H // f), -(-W // f))
            tif.write(tiles(f), shape=shape, subfiletype=1 if f > 1 else 0,
                      description=None if f > 1 else "equipath label mask (255 = not predicted)", **options)
            if max(shape) <= tile:
                break
            f *= 2
    return Path(path)


def write_label_overlay(path, thumbnail: np.ndarray, labels: np.ndarray, class_names: dict[int, str],
                        alpha: float = 0.45, skip: tuple = (0,), note: str | None = None,
                        pixel_size: float | None = None) -> Path:
    """PNG of ``labels`` over ``thumbnail (h, w, 3) uint8``, classes in ``skip`` (background) and unpredicted
    pixels left as they are, with a legend strip below (and ``note``, e.g. that the model was trained on
    synthetic data, on its last line). With ``pixel_size`` (label pixels per thumbnail pixel) each thumbnail
    pixel shows the label under its centre (:func:`equipath.wsi.outputs.cells_to_pixels`), so labels stay on
    their own pixels when the sizes do not divide; without it ``labels`` is stretched onto the thumbnail."""
    small = (resize_nearest(labels, thumbnail.shape[:2]) if pixel_size is None
             else cells_to_pixels(labels, thumbnail.shape[:2], pixel_size, 1.0, fill=NO_LABEL))
    out = thumbnail.astype(np.float32)
    for value in class_names:
        if value in skip:
            continue
        where = small == value
        out[where] = (1 - alpha) * out[where] + alpha * np.asarray(class_color(value), np.float32)
    picture = Image.fromarray(np.round(out).astype(np.uint8))
    shown = [(v, n) for v, n in class_names.items() if v not in skip] + [(NO_LABEL, "not predicted (glass)")]
    legend = Image.new("RGB", (max(picture.width, 240), 8 + 18 * (len(shown) + bool(note))), "white")
    draw = ImageDraw.Draw(legend)
    if note:
        draw.text((6, 4 + 18 * len(shown)), note, fill=(200, 0, 0))
    for k, (value, name) in enumerate(shown):
        y = 4 + 18 * k
        colour = tuple(class_color(value)) if value != NO_LABEL else (255, 255, 255)
        draw.rectangle([6, y, 20, y + 13], fill=colour, outline=(0, 0, 0))
        draw.text((28, y), name, fill=(0, 0, 0))
    canvas = Image.new("RGB", (max(picture.width, legend.width), picture.height + legend.height), "white")
    canvas.paste(picture, (0, 0))
    canvas.paste(legend, (0, picture.height))
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return Path(path)
