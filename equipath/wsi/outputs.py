"""Slide outputs, each written atomically (a temporary file in the same folder, then ``os.replace``):
the probability map (``.npy``), PNG heatmap and tissue overlay over a thumbnail, a pyramidal TIFF heatmap,
QuPath GeoJSON of the regions above a threshold, and a timestamped record of each run's options.

Coordinates: map cell ``(i, j)`` covers level-0 pixels ``[j * c, (j + 1) * c) x [i * c, (i + 1) * c)`` with
``c = cell_size`` (the grid stride times the view's downsample), so GeoJSON polygons and the TIFF's
resolution tags are in level-0 pixels and microns of the slide. The last row and column of cells may reach
past the slide's border; pictures are drawn by where each pixel lies on the slide (:func:`cells_to_pixels`)
and polygons are clipped to the slide (:func:`clip_ring`).

Background: cells that were not predicted (no tissue) are ``NaN`` in the map, distinct from a predicted
probability 0; pictures leave them uncoloured, the TIFF paints them white, GeoJSON and detections skip them.

Example:
    >>> import numpy as np, tempfile, json, pathlib
    >>> prob = np.zeros((6, 8), np.float32); prob[1:4, 2:5] = 0.9
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "regions.geojson"
    >>> _ = write_geojson(path, prob, threshold=0.5, cell_size=64.0)
    >>> feature = json.loads(path.read_text())["features"][0]
    >>> feature["geometry"]["type"], feature["properties"]["classification"]["name"]
    ('Polygon', 'Tumor')
"""

import os
import time
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from equipath.atomic import atomic_path, write_json
from equipath.wsi.geojson import mask_polygons
from equipath.wsi.geojson import write_geojson as write_features

__all__ = ["write_run_record", "check_picture_options", "colorize", "cells_to_pixels", "heatmap_rgba",
           "write_heatmap_png", "write_tissue_overlay", "write_pyramidal_tiff", "clip_ring", "write_geojson",
           "write_png", "DEFAULT_CMAP"]

DEFAULT_CMAP = "viridis"
_NO_DATA = (255, 255, 255)


def write_run_record(out_dir, command: str, data: dict) -> Path:
    """Write ``data`` to ``out_dir/{command}-{UTC time}.json``: one record per run, never overwritten by the
    next one (a second run in the same second gets ``-2``, ``-3``, ...). Returns the path written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for n in range(1, 10_000):
        path = out_dir / (f"{command}-{stamp}.json" if n == 1 else f"{command}-{stamp}-{n}.json")
        try:  # claim the name atomically so concurrent runs never share a record
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        return write_json(path, data)
    raise OSError(f"{out_dir}: could not find a free name for the {command} run record")


def write_png(path, rgb: np.ndarray) -> Path:
    """Save an ``(H, W, 3|4) uint8`` image as PNG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")
    return Path(path)


def colorize(prob: np.ndarray, cmap: str = DEFAULT_CMAP, background=_NO_DATA) -> np.ndarray:
    """``(rows, cols)`` probabilities in [0, 1] -> ``(rows, cols, 3) uint8`` colours of ``cmap``; ``NaN``
    (not predicted) -> ``background``."""
    prob = np.asarray(prob, dtype=np.float32)
    rgba = _colormap(cmap)(np.clip(np.nan_to_num(prob, nan=0.0), 0.0, 1.0))
    rgb = np.round(rgba[..., :3] * 255).astype(np.uint8)
    rgb[np.isnan(prob)] = background
    return rgb


def _colormap(cmap: str):
    try:
        return colormaps[cmap]
    except KeyError:
        raise ValueError(f"unknown colour map (--cmap) {cmap!r}: use a matplotlib name such as viridis, magma, "
                         f"inferno, cividis or jet") from None


def cells_to_pixels(values: np.ndarray, shape: tuple[int, int], pixel_size: float, cell_size: float,
                    fill=0) -> np.ndarray:
    """Draw a per-cell array onto an image of ``shape`` whose pixel ``(y, x)`` covers level-0 pixels
    ``[x p, (x + 1) p) x [y p, (y + 1) p)``, ``p = pixel_size``: each pixel takes the cell ``(i, j)`` holding
    its centre, ``i = floor((y + 1/2) p / c)``, ``c = cell_size``; pixels whose centre lies past the map get
    ``fill``. Unlike stretching the map onto the image, this keeps every cell on its own level-0 pixels
    when the slide's size is not a multiple of the cell.

    Args:
        values: ``(rows, cols, ...)`` per-cell values.
        shape: ``(H, W)`` of the image.
        pixel_size: level-0 pixels per image pixel.
        cell_size: level-0 pixels per cell.
        fill: value of pixels outside the map. Defaults to 0.

    Returns:
        ``(H, W, ...)`` array of ``values``' dtype.

    Example:
        >>> cells_to_pixels(np.array([[1, 2]]), (1, 5), pixel_size=10.0, cell_size=16.0, fill=-1).tolist()
        [[1, 1, 2, -1, -1]]
    """
    values = np.asarray(values)
    rows = np.floor((np.arange(shape[0]) + 0.5) * pixel_size / cell_size).astype(np.int64)
    cols = np.floor((np.arange(shape[1]) + 0.5) * pixel_size / cell_size).astype(np.int64)
    inside = (rows < values.shape[0])[:, None] & (cols < values.shape[1])[None, :]
    out = values[np.minimum(rows, values.shape[0] - 1)[:, None], np.minimum(cols, values.shape[1] - 1)[None, :]]
    out[~inside] = fill
    return out


def heatmap_rgba(prob: np.ndarray, cmap: str = DEFAULT_CMAP, alpha: float = 0.5) -> np.ndarray:
    """``(rows, cols, 4) uint8``: ``cmap`` colours with opacity ``alpha``, transparent where ``prob`` is NaN."""
    prob = np.asarray(prob, dtype=np.float32)
    rgba = np.empty(prob.shape + (4,), np.uint8)
    rgba[..., :3] = colorize(prob, cmap)
    rgba[..., 3] = np.where(np.isnan(prob), 0, round(255 * alpha))
    return rgba


def check_picture_options(cmap: str, alpha: float) -> None:
    """Raise ``ValueError`` naming the flag unless ``cmap`` is a matplotlib colour map and ``alpha`` in [0, 1]."""
    _colormap(cmap)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"heatmap opacity (--alpha) must be in [0, 1], got {alpha}")


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow built without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _legend(width: int, title: str, cmap: str, note: str | None) -> Image.Image:
    """A white panel ``width`` wide: ``title`` (and ``note`` in red), then a horizontal colour bar 0..1."""
    font, small = _font(14), _font(12)
    panel = Image.new("RGB", (width, 64), (255, 255, 255))
    draw = ImageDraw.Draw(panel)
    draw.text((6, 4), title, fill=(0, 0, 0), font=font)
    if note:
        draw.text((width - 6 - draw.textlength(note, font=font), 4), note, fill=(200, 0, 0), font=font)
    bar_w = max(64, min(256, width - 140))
    bar = colorize(np.linspace(0, 1, bar_w)[None].repeat(12, axis=0), cmap)
    panel.paste(Image.fromarray(bar), (6, 26))
    draw.rectangle((5, 25, 6 + bar_w, 38), outline=(0, 0, 0))
    for value in (0.0, 0.5, 1.0):
        x = 6 + round(value * (bar_w - 1))
        label = f"{value:g}"
        draw.line((x, 38, x, 42), fill=(0, 0, 0))
        draw.text((x - draw.textlength(label, font=small) / 2, 44), label, fill=(0, 0, 0), font=small)
    draw.text((14 + bar_w, 24), "tumour probability", fill=(0, 0, 0), font=small)
    draw.text((14 + bar_w, 40), "uncoloured: not tissue", fill=(90, 90, 90), font=small)
    return panel


def write_heatmap_png(path, thumbnail: np.ndarray, prob: np.ndarray, *, pixel_size: float, cell_size: float,
                      alpha: float = 0.5, cmap: str = DEFAULT_CMAP, title: str = "tumour probability",
                      note: str | None = None) -> Path:
    """PNG of the thumbnail ``(h, w, 3) uint8`` with the map blended over its predicted cells (NaN cells are
    left as they are), and a legend panel below it: ``title``, ``note`` (e.g. a SYNTHETIC warning) and a
    colour bar of ``cmap``. The thumbnail keeps pixels ``[0, h) x [0, w)`` of the PNG.

    Args:
        pixel_size: level-0 pixels per thumbnail pixel.
        cell_size: level-0 pixels per map cell (see :func:`cells_to_pixels`).
        alpha: opacity of the colours in [0, 1]. Defaults to 0.5.
    """
    check_picture_options(cmap, alpha)
    shape = thumbnail.shape[:2]
    values = cells_to_pixels(np.asarray(prob, np.float32), shape, pixel_size, cell_size, fill=np.nan)
    where = ~np.isnan(values)
    colours = colorize(values, cmap).astype(np.float32)
    out = thumbnail.astype(np.float32)
    out[where] = (1 - alpha) * out[where] + alpha * colours[where]
    image = Image.fromarray(np.round(out).astype(np.uint8))
    legend = _legend(max(shape[1], 420), title, cmap, note)
    canvas = Image.new("RGB", (legend.width, shape[0] + legend.height), (255, 255, 255))
    canvas.paste(image, (0, 0))
    canvas.paste(legend, (0, shape[0]))
    return write_png(path, np.asarray(canvas))


def write_tissue_overlay(path, thumbnail: np.ndarray, mask: np.ndarray, *, pixel_size: float,
                         mask_pixel_size: float, color=(0, 160, 0), alpha: float = 0.4) -> Path:
    """PNG of the thumbnail with the tissue ``mask`` (its pixels ``mask_pixel_size`` level-0 pixels wide)
    tinted in ``color``, each mask pixel over its own level-0 pixels."""
    where = cells_to_pixels(np.asarray(mask, bool), thumbnail.shape[:2], pixel_size, mask_pixel_size, fill=False)
    out = thumbnail.astype(np.float32)
    out[where] = (1 - alpha) * out[where] + alpha * np.asarray(color, np.float32)
    return write_png(path, np.round(out).astype(np.uint8))


def write_pyramidal_tiff(path, prob: np.ndarray, cell_mpp: float | None, cmap: str = DEFAULT_CMAP,
                         tile: int = 256) -> Path:
    """Colour heatmap as a tiled pyramidal TIFF: level 0, then reduced-resolution pages halving down to one
    tile, all top-level IFDs (the layout OpenSlide's generic-TIFF reader, tiffslide and QuPath open).

    One TIFF pixel is one map cell (NaN cells white); the resolution tags give ``cell_mpp`` microns per
    pixel when known, so viewers place it at the slide's physical scale.
    """
    import tifffile

    levels = [colorize(prob, cmap)]
    while max(levels[-1].shape[:2]) > tile:
        levels.append(levels[-1][::2, ::2])
    options = {"tile": (tile, tile), "photometric": "rgb", "compression": "zlib"}
    if cell_mpp:
        options.update(resolution=(1e4 / cell_mpp, 1e4 / cell_mpp), resolutionunit="CENTIMETER")
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=levels[0].nbytes > 2**31) as tif:
        tif.write(levels[0], description="equipath tumour probability heatmap", **options)
        for level in levels[1:]:
            tif.write(level, subfiletype=1, **options)
    return Path(path)


def clip_ring(ring, width: float, height: float) -> list[list[float]]:
    """Clip a closed polygon ring ``[[x, y], ...]`` to the rectangle ``[0, width] x [0, height]``
    (Sutherland-Hodgman). Returns the closed clipped ring, or ``[]`` when less than a triangle is left.

    Example:
        >>> clip_ring([[-1, 0], [2, 0], [2, 2], [-1, 2], [-1, 0]], width=1, height=1)
        [[0.0, 1.0], [0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
    """
    points = [tuple(map(float, p)) for p in ring]
    if len(points) > 1 and points[0] == points[-1]:
        points = points[:-1]
    for axis, bound, keep_below in ((0, 0.0, False), (0, float(width), True), (1, 0.0, False),
                                    (1, float(height), True)):
        def inside(p):
            return p[axis] <= bound if keep_below else p[axis] >= bound

        clipped = []
        for k, current in enumerate(points):
            previous = points[k - 1]
            if inside(current) != inside(previous):  # the edge crosses the bound: add the crossing point
                t = (bound - previous[axis]) / (current[axis] - previous[axis])
                cross = [previous[0] + t * (current[0] - previous[0]), previous[1] + t * (current[1] - previous[1])]
                cross[axis] = bound
                clipped.append(tuple(cross))
            if inside(current):
                clipped.append(current)
        points = clipped
        if not points:
            return []
    unique = []
    for p in points:
        if not unique or p != unique[-1]:
            unique.append(p)
    if len(unique) > 1 and unique[0] == unique[-1]:
        unique.pop()
    if len(unique) < 3:
        return []
    return [[round(x, 1), round(y, 1)] for x, y in unique + unique[:1]]


def _clipped_area(region: np.ndarray, origin: tuple[int, int], cell_size: float, bounds) -> float:
    """Level-0 area of the cells of ``region`` (top-left cell ``origin`` = (row, col)) inside ``bounds``."""
    rows, cols = (np.arange(n) + o for n, o in zip(region.shape, origin))
    if bounds is None:
        return float(region.sum() * cell_size**2)
    heights = np.clip(np.minimum((rows + 1) * cell_size, bounds[1]) - rows * cell_size, 0, None)
    widths = np.clip(np.minimum((cols + 1) * cell_size, bounds[0]) - cols * cell_size, 0, None)
    return float((region * heights[:, None] * widths[None, :]).sum())


def write_geojson(path, prob: np.ndarray, threshold: float, cell_size: float, name: str = "Tumor",
                  color=(200, 0, 0), bounds: tuple[float, float] | None = None) -> Path:
    """QuPath-compatible GeoJSON of the connected regions (4-connectivity, as
    :func:`equipath.wsi.geojson.mask_polygons` traces them) where ``prob >= threshold`` (NaN cells are never
    part of a region), written by :func:`equipath.wsi.geojson.write_geojson`.

    Each region is a ``Polygon`` annotation (outer ring, then one ring per hole) classified as ``name``,
    with its maximum and mean probability and area (level-0 pixels squared, inside ``bounds``) as
    measurements. Rings follow the cell edges (corners cut by the contour) and are clipped to ``bounds`` =
    the slide's level-0 ``(width, height)`` when given (:func:`clip_ring`).
    """
    prob = np.asarray(prob, dtype=np.float32)
    above = np.nan_to_num(prob, nan=-np.inf) >= threshold
    labels, _ = ndimage.label(above)
    features = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        region = labels[box] == index
        ((exterior, holes),) = mask_polygons(region)
        origin = np.array([box[0].start, box[1].start], dtype=np.float64)
        # (row, col) between cell centres -> level-0 (x, y) on the cell edges
        rings = [[[float(x), float(y)] for y, x in (ring + origin + 0.5) * cell_size] for ring in [exterior, *holes]]
        if bounds is not None:
            rings = [clip_ring(ring, *bounds) for ring in rings]
            if not rings[0]:
                continue
            rings = [rings[0]] + [ring for ring in rings[1:] if ring]
        else:
            rings = [[[round(x, 1), round(y, 1)] for x, y in ring] for ring in rings]
        values = prob[box][region]
        features.append({
            "type": "Feature",
            "id": f"region-{index}",
            "geometry": {"type": "Polygon", "coordinates": rings},
            "properties": {
                "objectType": "annotation",
                "classification": {"name": name, "color": list(color)},
                "measurements": {"max_probability": float(values.max()), "mean_probability": float(values.mean()),
                                 "area_px": _clipped_area(region, (box[0].start, box[1].start), cell_size, bounds)},
            },
        })
    return write_features(path, features)
