"""Slide outputs, each written atomically (a temporary file in the same folder, then ``os.replace``):
the probability map (``.npy``), a PNG heatmap over the thumbnail, a pyramidal TIFF heatmap and QuPath
GeoJSON of the regions above a threshold.

Coordinates: map cell ``(i, j)`` covers level-0 pixels ``[j * c, (j + 1) * c) x [i * c, (i + 1) * c)`` with
``c = cell_size`` (the grid stride times the view's downsample), so GeoJSON polygons and the TIFF's
resolution tags are in level-0 pixels and microns of the slide.

Example:
    >>> import numpy as np, tempfile, json, pathlib
    >>> prob = np.zeros((6, 8), np.float32); prob[1:4, 2:5] = 0.9
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "regions.geojson"
    >>> _ = write_geojson(path, prob, threshold=0.5, cell_size=64.0)
    >>> feature = json.loads(path.read_text())["features"][0]
    >>> feature["geometry"]["type"], feature["properties"]["classification"]["name"]
    ('Polygon', 'Tumor')
"""

import json
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw
from scipy import ndimage
from skimage.measure import approximate_polygon, find_contours

from equipath.atomic import atomic_path
from equipath.wsi.tissue import resize_nearest

__all__ = ["write_json", "colorize", "write_heatmap_png", "write_pyramidal_tiff",
           "write_geojson", "write_png"]


def write_json(path, data) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
    return Path(path)


def write_png(path, rgb: np.ndarray) -> Path:
    """Save an ``(H, W, 3) uint8`` image as PNG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")
    return Path(path)


def colorize(prob: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """``(rows, cols)`` probabilities in [0, 1] -> ``(rows, cols, 3) uint8`` colours of ``cmap``."""
    rgba = colormaps[cmap](np.clip(np.asarray(prob, dtype=np.float32), 0.0, 1.0))
    return np.round(rgba[..., :3] * 255).astype(np.uint8)


def write_heatmap_png(path, thumbnail: np.ndarray, prob: np.ndarray, cells: np.ndarray | None = None,
                      alpha: float = 0.5, cmap: str = "jet", caption: str | None = None) -> Path:
    """PNG of the thumbnail ``(h, w, 3) uint8`` with the map blended over the cells in ``cells`` (all if None),
    and ``caption`` written in the top-left corner.

    The map is resized by nearest neighbour so each cell covers its own block of the thumbnail.
    """
    prob = np.asarray(prob)
    shape = thumbnail.shape[:2]
    colours = colorize(resize_nearest(prob, shape), cmap).astype(np.float32)
    where = resize_nearest(np.ones(prob.shape, bool) if cells is None else cells, shape)
    out = thumbnail.astype(np.float32)
    out[where] = (1 - alpha) * out[where] + alpha * colours[where]
    image = Image.fromarray(np.round(out).astype(np.uint8))
    if caption:
        draw = ImageDraw.Draw(image)
        box = draw.textbbox((4, 4), caption)
        draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=(255, 255, 255))
        draw.text((4, 4), caption, fill=(0, 0, 0))
    return write_png(path, np.asarray(image))


def write_pyramidal_tiff(path, prob: np.ndarray, cell_mpp: float | None, cmap: str = "jet",
                         tile: int = 256) -> Path:
    """Colour heatmap as a tiled pyramidal TIFF: level 0, then reduced-resolution pages halving down to one
    tile, all top-level IFDs (the layout OpenSlide's generic-TIFF reader, tiffslide and QuPath open).

    One TIFF pixel is one map cell; the resolution tags give ``cell_mpp`` microns per pixel when known,
    so viewers place it at the slide's physical scale.
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


def _ring(mask: np.ndarray, cell_size: float, tolerance: float) -> list[list[float]]:
    """Closed contour of one simply connected component, in level-0 pixels, counter-clockwise in image axes."""
    padded = np.pad(mask, 1).astype(np.float32)
    contour = max(find_contours(padded, 0.5), key=len)  # (n, 2) (row, col), closed
    contour = approximate_polygon(contour, tolerance)
    xy = (contour[:, ::-1] - 1 + 0.5) * cell_size  # padded index -> cell index -> level-0 at cell centres
    return [[round(float(x), 1), round(float(y), 1)] for x, y in xy]


def write_geojson(path, prob: np.ndarray, threshold: float, cell_size: float, name: str = "Tumor",
                  color=(200, 0, 0), tolerance: float = 0.25) -> Path:
    """QuPath-compatible GeoJSON of the connected regions (8-connectivity) where ``prob >= threshold``.

    Each region is a ``Polygon`` annotation (outer ring, then one ring per hole) classified as ``name``,
    with its maximum and mean probability and area (level-0 pixels squared) as measurements. Ring vertices
    run through the centres of boundary cells, simplified by ``tolerance`` cells.
    """
    above = np.asarray(prob) >= threshold
    labels, n = ndimage.label(above, structure=np.ones((3, 3)))
    features = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        region = labels[box] == index
        filled = ndimage.binary_fill_holes(region)
        rings = [_ring(filled, cell_size, tolerance)]
        holes, n_holes = ndimage.label(filled & ~region)
        rings += [_ring(holes == h, cell_size, tolerance) for h in range(1, n_holes + 1)]
        offset = np.array([box[1].start, box[0].start], dtype=np.float64) * cell_size
        rings = [[[x + offset[0], y + offset[1]] for x, y in ring] for ring in rings]
        values = np.asarray(prob)[box][region]
        features.append({
            "type": "Feature",
            "id": f"region-{index}",
            "geometry": {"type": "Polygon", "coordinates": rings},
            "properties": {
                "objectType": "annotation",
                "classification": {"name": name, "color": list(color)},
                "measurements": {"max_probability": float(values.max()), "mean_probability": float(values.mean()),
                                 "area_px": float(region.sum() * cell_size**2)},
            },
        })
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return Path(path)
