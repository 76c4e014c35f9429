"""Annotations (ASAP XML of Camelyon16, QuPath GeoJSON) -> polygons -> tumour and label masks.

:func:`read_annotations` reads either format by its suffix (``.xml``: ASAP; ``.geojson`` / ``.json``:
QuPath, through :mod:`equipath.wsi.geojson`); every consumer (FROC ground truth, patch sampling, the tile
builder) calls it.

ASAP writes ``<ASAP_Annotations><Annotations><Annotation Name=.. Type="Polygon" PartOfGroup=..>
<Coordinates><Coordinate Order="0" X=".." Y=".."/>...`` with level-0 pixel coordinates. In Camelyon16 the
groups ``_0`` / ``_1`` / ``Tumor`` outline tumour and ``_2`` / ``Exclusion`` outline normal tissue inside
it; a mask is the union of the tumour polygons minus the exclusion polygons.

Example:
    >>> import numpy as np
    >>> square = Annotation("a", "Tumor", np.array([[0, 0], [64, 0], [64, 64], [0, 64]], float))
    >>> rasterize([square], shape=(4, 4), downsample=32).astype(int).tolist()
    [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
"""

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np
from skimage.draw import polygon as fill_polygon

from equipath.atomic import atomic_path

__all__ = ["Annotation", "read_annotations", "read_asap_xml", "write_asap_xml", "rasterize", "rasterize_labels",
           "EXCLUDE_GROUPS", "ANNOTATION_SUFFIXES"]

ANNOTATION_SUFFIXES = (".xml", ".geojson", ".json")

EXCLUDE_GROUPS = ("_2", "exclusion", "exclude", "normal", "none")


@dataclass(frozen=True)
class Annotation:
    """One polygon: ``name``, ``group`` (ASAP ``PartOfGroup``, QuPath class name), ``coords`` ``(N, 2)``
    level-0 ``(X, Y)`` of its exterior and ``holes``, rings cut out of it (QuPath polygons have them)."""

    name: str
    group: str
    coords: np.ndarray
    holes: tuple = ()

    @property
    def excluded(self) -> bool:
        """True for the normal-tissue groups that are cut out of tumour (``_2``, ``Exclusion``, ...)."""
        return self.group.strip().lower() in EXCLUDE_GROUPS


def read_annotations(path) -> list[Annotation]:
    """The polygons of an ASAP XML (``.xml``) or QuPath GeoJSON (``.geojson``, ``.json``) file.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: another suffix, or a file that is not what its suffix says.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".xml":
        return read_asap_xml(path)
    if suffix in (".geojson", ".json"):
        from equipath.wsi.geojson import read_geojson  # geojson builds on this module

        return read_geojson(path)
    raise ValueError(f"annotation file {path}: expected ASAP .xml or QuPath .geojson / .json")


def read_asap_xml(path) -> list[Annotation]:
    """Read the polygons of an ASAP XML file (point and dot annotations are kept as given).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: it is not ASAP XML, or a coordinate is missing or not a number.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {path} does not exist")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise ValueError(f"annotation file {path} is not valid XML ({exc})") from None
    if root.tag != "ASAP_Annotations":
        raise ValueError(f"annotation file {path}: expected an <ASAP_Annotations> root, got <{root.tag}>")
    annotations = []
    for node in root.iter("Annotation"):
        name = node.get("Name", f"annotation {len(annotations)}")
        try:
            points = sorted(node.iter("Coordinate"), key=lambda c: float(c.get("Order", 0)))
            coords = np.array([[float(c.get("X")), float(c.get("Y"))] for c in points], dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"annotation file {path}: annotation {name!r} has a coordinate without "
                             f"numeric X, Y and Order") from None
        if len(coords) == 0:
            raise ValueError(f"annotation file {path}: annotation {name!r} has no coordinates")
        annotations.append(Annotation(name, node.get("PartOfGroup", ""), coords))
    return annotations


def write_asap_xml(path, annotations: list[Annotation]) -> Path:
    """Write polygons as ASAP XML (readable by ASAP and by :func:`read_asap_xml`), atomically."""
    lines = ["<?xml version=\"1.0\"?>", "<ASAP_Annotations>", "\t<Annotations>"]
    for a in annotations:
        lines.append(f"\t\t<Annotation Name={quoteattr(a.name)} Type=\"Polygon\" PartOfGroup={quoteattr(a.group)} "
                     f"Color=\"#F4FA58\">")
        lines.append("\t\t\t<Coordinates>")
        lines += [f"\t\t\t\t<Coordinate Order=\"{k}\" X=\"{x:.4f}\" Y=\"{y:.4f}\" />"
                  for k, (x, y) in enumerate(a.coords)]
        lines += ["\t\t\t</Coordinates>", "\t\t</Annotation>"]
    groups = sorted({a.group for a in annotations})
    lines.append("\t</Annotations>")
    lines.append("\t<AnnotationGroups>")
    lines += [f"\t\t<Group Name={quoteattr(g)} PartOfGroup=\"None\" Color=\"#FF0000\"><Attributes /></Group>"
              for g in groups]
    lines += ["\t</AnnotationGroups>", "</ASAP_Annotations>", ""]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines))
    return Path(path)


def _fill(ring: np.ndarray, shape, downsample: float, origin) -> tuple[np.ndarray, np.ndarray]:
    cols = (ring[:, 0] - origin[0]) / downsample - 0.5
    rows = (ring[:, 1] - origin[1]) / downsample - 0.5
    return fill_polygon(rows, cols, shape)


def _polygon_mask(a: Annotation, shape, downsample: float, origin) -> np.ndarray:
    """Pixels whose centre lies in ``a`` and in none of its holes."""
    mask = np.zeros(shape, dtype=bool)
    mask[_fill(a.coords, shape, downsample, origin)] = True
    for hole in a.holes:
        if len(hole) >= 3:
            mask[_fill(np.asarray(hole), shape, downsample, origin)] = False
    return mask


def rasterize(annotations: list[Annotation], shape: tuple[int, int], downsample: float,
              origin: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Tumour mask ``(H, W)`` bool: mask pixel ``(r, c)`` is level-0 point ``origin + ((c + 0.5) * d, (r + 0.5) * d)``.

    A pixel is tumour when its centre lies in a tumour polygon (outside its holes) and in no exclusion polygon.
    """
    mask = np.zeros(shape, dtype=bool)
    for excluded in (False, True):
        for a in annotations:
            if a.excluded != excluded or len(a.coords) < 3:
                continue
            if excluded:
                mask &= ~_polygon_mask(a, shape, downsample, origin)
            else:
                mask |= _polygon_mask(a, shape, downsample, origin)
    return mask


def rasterize_labels(annotations: list[Annotation], classes: dict[str, int], shape: tuple[int, int],
                     downsample: float, origin: tuple[float, float] = (0.0, 0.0), background: int = 0) -> np.ndarray:
    """Label mask ``(H, W)`` uint8: each pixel takes ``classes[group]`` of the last polygon (outside its holes)
    whose group is in ``classes`` and holds the pixel's centre; ``background`` elsewhere. Pixel centres as in
    :func:`rasterize`."""
    labels = np.full(shape, background, dtype=np.uint8)
    for a in annotations:
        if a.group in classes and len(a.coords) >= 3:
            labels[_polygon_mask(a, shape, downsample, origin)] = classes[a.group]
    return labels
