"""What the viewer shows of an output folder: the slide and every overlay equipath wrote beside it.

A *run folder* is one slide's outputs: ``predict-slide``'s ``OUT/{slide}/`` (``slide.json``,
``probability.npy``, ``tissue.png``, ``regions.geojson``, ``detections.csv``) or any folder of GeoJSON
files (regions with classes, cell points) with ``--slide`` naming the slide. :func:`find_runs` finds them
in ``OUT`` (the folder itself or its sub-folders) and :class:`Run` turns one into layers:

| layer | from | drawn as |
|---|---|---|
| ``heatmap`` | ``probability.npy`` + ``slide.json`` geometry | one pixel per cell, colour map of the run, NaN transparent |
| ``tissue`` | ``tissue.png`` (mask pixel size from ``slide.json``) | green where tissue |
| ``regions`` and any other ``*.geojson`` | QuPath GeoJSON (polygons with holes, points) | outlines / dots in the class colours |
| ``detections`` | ``detections.csv`` (Camelyon16 ``prob,X,Y``) | points, one cell across |

Every layer is placed in level-0 pixels of the slide, so a cell ``(i, j)`` of the heatmap lies on level-0
pixels ``[j c, (j + 1) c) x [i c, (i + 1) c)`` exactly as in :mod:`equipath.wsi.outputs`.

Example:
    >>> import json, tempfile, pathlib, numpy as np
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> np.save(folder / "probability.npy", np.array([[np.nan, 0.2], [0.9, 0.5]], np.float32))
    >>> _ = (folder / "slide.json").write_text(json.dumps({"slide": "s.png", "level0_dimensions": [60, 50],
    ...     "grid": {"cell_size_level0": 32.0}, "options": {"cmap": "magma"}}))
    >>> run = Run(folder, slide=np.zeros((50, 60, 3), np.uint8))
    >>> [layer["id"] for layer in run.manifest(0)["layers"]], run.layer_bytes("heatmap")[1]
    (['heatmap'], 'image/png')
"""

import csv
import io
import json
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from equipath.wsi.outputs import DEFAULT_CMAP, colorize, heatmap_rgba
from equipath.wsi.reader import SlideReader, open_slide

__all__ = ["Run", "find_runs", "LAYER_COLOURS"]

log = logging.getLogger(__name__)

LAYER_COLOURS = {"tissue": (0, 160, 0), "regions": (200, 0, 0), "detections": (255, 140, 0), "geojson": (0, 90, 255)}


def _is_run(folder: Path) -> bool:
    return (folder / "slide.json").is_file() or any(folder.glob("*.geojson"))


def find_runs(out) -> list[Path]:
    """The run folders in ``out``: ``out`` itself when it is one, else its sub-folders that are (sorted).

    Raises:
        FileNotFoundError: ``out`` does not exist.
        ValueError: no run folder in ``out``.
    """
    out = Path(out)
    if not out.is_dir():
        raise FileNotFoundError(f"output folder {out} does not exist")
    if _is_run(out):
        return [out]
    runs = sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".") and _is_run(p))
    if not runs:
        raise ValueError(f"{out} holds no equipath outputs (a slide.json or .geojson file, or sub-folders with "
                         f"them); give the OUT folder of predict-slide or predict")
    return runs


def _hex(rgb) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(c) for c in rgb[:3]))


def _png(rgba: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgba).save(buffer, format="PNG")
    return buffer.getvalue()


def _run_record(folder: Path) -> dict:
    """The newest ``predict-slide-*.json`` beside the run folder (checkpoint, options), or ``{}``."""
    records = sorted(folder.parent.glob("predict-slide-*.json"))
    if not records:
        return {}
    try:
        return json.loads(records[-1].read_text())
    except (OSError, json.JSONDecodeError):
        return {}


class Run:
    """One run folder and its slide (see the module docstring).

    Args:
        folder: the run folder.
        slide: the slide (path, or an image array) to show; defaults to the ``slide`` of ``slide.json``
            (an absolute path, or relative to the current folder or to ``folder``).

    Raises:
        FileNotFoundError: the slide cannot be found (the message names ``--slide``).
    """

    def __init__(self, folder, slide=None):
        self.folder = Path(folder)
        summary_path = self.folder / "slide.json"
        self.summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        self.reader: SlideReader = open_slide(self._slide_source(slide), mpp=self.summary.get("level0_mpp"))
        self.name = self.folder.name
        self._layers = self._find_layers()

    def _slide_source(self, slide):
        if slide is not None:
            return slide
        recorded = self.summary.get("slide")
        if recorded and recorded != "<array>":
            for candidate in (Path(recorded), self.folder / recorded, self.folder.parent / recorded):
                if candidate.is_file():
                    return candidate
        raise FileNotFoundError(f"the slide of {self.folder} was not found (slide.json says {recorded!r}): give it "
                                f"with --slide PATH")

    def close(self) -> None:
        self.reader.close()

    # --------------------------------------------------------------------------------------------- layers
    def _find_layers(self) -> dict:
        layers = {}
        grid = self.summary.get("grid") or {}
        options = self.summary.get("options") or {}
        W, H = self.reader.dimensions
        if (self.folder / "probability.npy").is_file() and grid.get("cell_size_level0"):
            prob = np.load(self.folder / "probability.npy", mmap_mode="r")
            cell = float(grid["cell_size_level0"])
            cmap = options.get("cmap") or DEFAULT_CMAP
            stops = colorize(np.linspace(0, 1, 11), cmap)
            layers["heatmap"] = {
                "kind": "image", "title": "tumour probability", "opacity": float(options.get("alpha") or 0.5),
                "width_level0": prob.shape[1] * cell, "height_level0": prob.shape[0] * cell,
                "legend": {"colorbar": [_hex(c) for c in stops], "min": 0, "max": 1,
                           "note": "uncoloured: not tissue (not predicted)"},
                "_render": lambda: _png(heatmap_rgba(np.asarray(prob), cmap, alpha=1.0))}
        if (self.folder / "tissue.png").is_file():
            with Image.open(self.folder / "tissue.png") as im:
                mask = np.asarray(im.convert("L")) > 127
            pixel = (self.summary.get("pictures") or {}).get("tissue_mask_pixel_level0") or H / mask.shape[0]
            layers["tissue"] = {
                "kind": "image", "title": "tissue", "opacity": 0.35, "visible": False,
                "width_level0": mask.shape[1] * pixel, "height_level0": mask.shape[0] * pixel,
                "legend": {"swatches": [["tissue", _hex(LAYER_COLOURS["tissue"])]]},
                "_render": lambda: _png(self._mask_rgba(mask, LAYER_COLOURS["tissue"]))}
        for path in sorted(self.folder.glob("*.geojson")):
            layer_id = path.stem
            colour = LAYER_COLOURS["regions" if layer_id == "regions" else "geojson"]
            data = self._read_geojson(path, colour)
            layers[layer_id] = {
                "kind": "geojson", "title": "predicted regions" if layer_id == "regions" else layer_id,
                "opacity": 1.0, "count": len(data["features"]),
                "legend": {"swatches": self._classes(data, colour)},
                "_render": lambda data=data: json.dumps(data).encode()}
        if (self.folder / "detections.csv").is_file():
            data = self._detections(self.folder / "detections.csv")
            radius = float(grid.get("cell_size_level0") or 64.0) / 2
            layers["detections"] = {
                "kind": "geojson", "title": "detections", "opacity": 1.0, "count": len(data["features"]),
                "radius_level0": radius,
                "legend": {"swatches": [["detection (prob, X, Y)", _hex(LAYER_COLOURS["detections"])]]},
                "_render": lambda data=data: json.dumps(data).encode()}
        return layers

    @staticmethod
    def _mask_rgba(mask: np.ndarray, colour) -> np.ndarray:
        rgba = np.zeros(mask.shape + (4,), np.uint8)
        rgba[mask] = (*colour, 255)
        return rgba

    @staticmethod
    def _read_geojson(path: Path, colour) -> dict:
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path} is not GeoJSON ({exc})") from None
        features = data.get("features", []) if isinstance(data, dict) else data
        for feature in features:  # every feature carries the colour it is drawn in
            properties = feature.setdefault("properties", {}) or {}
            feature["properties"] = properties
            classification = properties.get("classification") or {}
            properties["_colour"] = _hex(classification.get("color") or colour)
        return {"type": "FeatureCollection", "features": features}

    @staticmethod
    def _classes(data: dict, colour) -> list[list[str]]:
        seen = {}
        for feature in data["features"]:
            classification = feature["properties"].get("classification") or {}
            seen.setdefault(classification.get("name") or "unclassified", feature["properties"]["_colour"])
        return [[name, c] for name, c in seen.items()] or [["(none)", _hex(colour)]]

    @staticmethod
    def _detections(path: Path) -> dict:
        features = []
        with open(path, newline="") as f:
            for row in csv.reader(f):
                if len(row) < 3:
                    continue
                prob, x, y = (float(v) for v in row[:3])
                features.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [x, y]},
                                 "properties": {"probability": prob, "_colour": _hex(LAYER_COLOURS["detections"])}})
        return {"type": "FeatureCollection", "features": features}

    def layer_bytes(self, layer_id: str) -> tuple[bytes, str]:
        """``(content, MIME type)`` of one layer. Raises ``KeyError`` for an unknown layer."""
        layer = self._layers[layer_id]
        return layer["_render"](), "image/png" if layer["kind"] == "image" else "application/json"

    def manifest(self, index: int) -> dict:
        """What the page needs: slide size, tile source, layers (with their URLs), model and options."""
        W, H = self.reader.dimensions
        layers = []
        for layer_id, layer in self._layers.items():
            entry = {k: v for k, v in layer.items() if not k.startswith("_")}
            entry.update(id=layer_id, url=f"/runs/{index}/layers/{layer_id}")
            entry.setdefault("visible", True)
            layers.append(entry)
        record = _run_record(self.folder)
        return {
            "index": index, "name": self.name, "folder": str(self.folder),
            "slide": {"path": self.reader.name, "width": W, "height": H, "mpp": self.reader.mpp,
                      "backend": self.reader.backend},
            "model": self.summary.get("model") or record.get("model"),
            "checkpoint": record.get("checkpoint"),
            "synthetic": bool(self.summary.get("synthetic")),
            "options": self.summary.get("options") or record.get("options") or {},
            "warnings": self.summary.get("warnings") or [],
            "layers": layers,
        }
