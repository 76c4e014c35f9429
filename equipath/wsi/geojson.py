"""QuPath GeoJSON: the one module that writes and reads it.

QuPath exports and imports a ``FeatureCollection`` (or a bare list of features) of

    {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [exterior, hole, hole, ...]},
     "properties": {"objectType": "annotation", "classification": {"name": "Tumor", "color": [r, g, b]}}}

with closed rings of level-0 pixel coordinates ``[x, y]`` (pixel ``(0, 0)`` covers ``[0, 1) x [0, 1)``);
``MultiPolygon`` holds several polygons, and cells are ``Point`` / ``MultiPoint`` features with
``objectType: "detection"``.

- :func:`label_features`: regions of a label mask, one polygon (with its holes) per connected region of
  each class, traced between pixel centres (marching squares at 0.5), so rasterising the polygons by pixel
  centre gives the mask back exactly; clipped to the image.
- :func:`point_features`: points with a class and a confidence (cell detections).
- :func:`write_geojson` / :func:`read_geojson`: the file, written atomically; reading gives
  :class:`~equipath.wsi.annotations.Annotation` polygons (with holes) that every consumer of ASAP XML
  reads too (:func:`~equipath.wsi.annotations.read_annotations`).

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> labels = np.zeros((8, 8), np.uint8); labels[1:7, 1:7] = 1; labels[3:5, 3:5] = 0; labels[0, 7] = 2
    >>> features = label_features(labels, {1: "Tumor", 2: "Stroma"})
    >>> path = write_geojson(pathlib.Path(tempfile.mkdtemp()) / "regions.geojson", features)
    >>> [(a.group, len(a.holes)) for a in read_geojson(path)]
    [('Tumor', 1), ('Stroma', 0)]
"""

import json
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.measure import approximate_polygon, find_contours

from equipath.atomic import write_json
from equipath.wsi.annotations import Annotation

__all__ = ["mask_polygons", "label_features", "point_features", "write_geojson", "read_geojson", "read_points",
           "class_color"]

_PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
            (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128)]


def class_color(index: int) -> list[int]:
    """A distinct RGB colour for class ``index`` (QuPath's ``classification.color``)."""
    return list(_PALETTE[index % len(_PALETTE)])


def _ring(mask: np.ndarray) -> np.ndarray:
    """The boundary of one 4-connected region ``mask`` as a closed ``(N, 2)`` ring of ``(row, col)``."""
    contours = find_contours(np.pad(mask, 1).astype(np.float32), 0.5)
    ring = max(contours, key=len) - 1.0  # the outer boundary of a filled region is its one (longest) contour
    ring = approximate_polygon(ring, tolerance=0.01)  # drops collinear points only
    return ring if np.array_equal(ring[0], ring[-1]) else np.vstack([ring, ring[:1]])


def mask_polygons(mask: np.ndarray) -> list[tuple[np.ndarray, list[np.ndarray]]]:
    """Polygons of a boolean mask ``(H, W)``: ``[(exterior, [holes])]``, closed rings of ``(row, col)`` in
    pixel-centre coordinates, one per 4-connected region, a hole per region of ``~mask`` enclosed by it."""
    regions, n = ndimage.label(mask)
    polygons = []
    for index, box in enumerate(ndimage.find_objects(regions), start=1):
        region = regions[box] == index
        filled = ndimage.binary_fill_holes(region)
        offset = np.array([box[0].start, box[1].start], dtype=np.float64)
        holes_mask, n_holes = ndimage.label(filled & ~region)
        holes = [_ring(holes_mask == h) + offset for h in range(1, n_holes + 1)]
        polygons.append((_ring(filled) + offset, holes))
    return polygons


def _to_level0(ring: np.ndarray, downsample: float, origin, bounds) -> list[list[float]]:
    """``(row, col)`` pixel-centre ring -> level-0 ``[[x, y], ...]`` clipped to ``bounds = (W0, H0)``."""
    x = (ring[:, 1] + 0.5) * downsample + origin[0]
    y = (ring[:, 0] + 0.5) * downsample + origin[1]
    if bounds is not None:
        x, y = np.clip(x, 0, bounds[0]), np.clip(y, 0, bounds[1])
    return [[round(float(a), 3), round(float(b), 3)] for a, b in zip(x, y)]


def label_features(labels: np.ndarray, class_names: dict[int, str], *, downsample: float = 1.0,
                   origin: tuple[float, float] = (0.0, 0.0), bounds: tuple[float, float] | None = None,
                   object_type: str = "annotation") -> list[dict]:
    """QuPath polygon features of a label mask ``(H, W)`` int.

    Args:
        labels: one class value per pixel.
        class_names: ``{value: name}`` of the classes to outline (others, e.g. background, are skipped).
        downsample: level-0 pixels per mask pixel. Defaults to 1.
        origin: level-0 ``(x, y)`` of the mask's top-left corner. Defaults to (0, 0).
        bounds: level-0 ``(W0, H0)`` to clip to (the image). Defaults to None.
        object_type: ``"annotation"`` or ``"detection"``. Defaults to ``"annotation"``.
    """
    features = []
    for value, name in class_names.items():
        for exterior, holes in mask_polygons(labels == value):
            rings = [_to_level0(r, downsample, origin, bounds) for r in [exterior, *holes]]
            features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": rings},
                             "properties": {"objectType": object_type,
                                            "classification": {"name": name, "color": class_color(int(value))}}})
    return features


def point_features(points_xy: np.ndarray, classes: np.ndarray, scores: np.ndarray,
                   class_names: dict[int, str]) -> list[dict]:
    """QuPath point detections: level-0 ``points_xy (N, 2)``, ``classes (N,)`` and ``scores (N,)``
    (kept as the ``confidence`` measurement)."""
    return [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [float(x), float(y)]},
             "properties": {"objectType": "detection",
                            "classification": {"name": class_names.get(int(c), str(int(c))),
                                               "color": class_color(int(c))},
                            "measurements": {"confidence": float(s)}}}
            for (x, y), c, s in zip(np.asarray(points_xy).reshape(-1, 2), classes, scores)]


def write_geojson(path, features: list[dict]) -> Path:
    """Write ``features`` as a GeoJSON ``FeatureCollection`` (QuPath opens it), atomically."""
    return write_json(path, {"type": "FeatureCollection", "features": features}, indent=None)


def _features(path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"annotation file {path} is not valid JSON ({exc})") from None
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        data = data.get("features", [])
    elif isinstance(data, dict) and data.get("type") == "Feature":
        data = [data]
    if not isinstance(data, list) or not all(isinstance(f, dict) and "geometry" in f for f in data):
        raise ValueError(f"annotation file {path}: expected a GeoJSON FeatureCollection or a list of features")
    return data


def _class_name(feature: dict) -> str:
    props = feature.get("properties") or {}
    cls = props.get("classification") or {}
    return str(cls.get("name", props.get("name", ""))) if isinstance(cls, dict) else str(cls)


def read_geojson(path) -> list[Annotation]:
    """The polygons of a QuPath GeoJSON file as :class:`Annotation` (group = the class name, holes kept);
    ``Polygon`` and ``MultiPolygon`` geometries, other geometries (points, lines) are skipped.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: it is not GeoJSON, or a ring is not a list of ``[x, y]`` numbers.
    """
    annotations = []
    for k, feature in enumerate(_features(path)):
        geometry = feature.get("geometry") or {}
        kind, coords = geometry.get("type"), geometry.get("coordinates")
        polygons = [coords] if kind == "Polygon" else coords if kind == "MultiPolygon" else []
        name = str((feature.get("properties") or {}).get("name") or f"annotation {k}")
        for polygon in polygons:
            try:
                rings = [np.asarray(r, dtype=np.float64)[:, :2] for r in polygon]
            except (TypeError, ValueError, IndexError):
                raise ValueError(f"annotation file {path}: feature {k} has a ring that is not a list of "
                                 f"[x, y] numbers") from None
            if rings:
                annotations.append(Annotation(name, _class_name(feature), rings[0], tuple(rings[1:])))
    return annotations


def read_points(path) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Point features of a GeoJSON file: ``(points (N, 2) level-0 x, y; class names; confidences (N,),
    NaN where absent)``."""
    points, names, scores = [], [], []
    for feature in _features(path):
        geometry = feature.get("geometry") or {}
        kind, coords = geometry.get("type"), geometry.get("coordinates")
        for xy in [coords] if kind == "Point" else coords if kind == "MultiPoint" else []:
            points.append([float(xy[0]), float(xy[1])])
            names.append(_class_name(feature))
            measurements = (feature.get("properties") or {}).get("measurements") or {}
            scores.append(float(measurements.get("confidence", np.nan)) if isinstance(measurements, dict) else np.nan)
    return np.array(points, dtype=np.float64).reshape(-1, 2), names, np.array(scores, dtype=np.float64)
