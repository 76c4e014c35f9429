"""What the viewer shows of an output folder: the slide and every overlay equipath wrote beside it.

A *run folder* is one slide's outputs: ``predict-slide``'s ``OUT/{slide}/`` (``slide.json``,
``probability.npy``, ``tissue.png``, ``regions.geojson``, ``detections.csv``), ``predict``'s for a
segmentation model (``segment.json``, ``labels.tif``, ``regions.geojson``, ``cells.geojson``) or any folder
of GeoJSON files (regions with classes, cell points) with ``--slide`` naming the slide. :func:`find_runs` finds them
in ``OUT`` (the folder itself or its sub-folders) and :class:`Run` turns one into layers:

| layer | from | drawn as |
|---|---|---|
| ``heatmap`` | ``probability.npy`` + ``slide.json`` geometry | one pixel per cell, colour map of the run, NaN transparent |
| ``tissue`` | ``tissue.png`` (mask pixel size from ``slide.json``) | green where tissue |
| ``segmentation`` | ``labels.tif`` of ``predict`` (its coarsest page of at most 4096 px; pixel size from ``segment.json``) | class colours, background and not-predicted transparent |
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

from equipath.atomic import json_text
from equipath.wsi.geojson import class_color
from equipath.wsi.outputs import DEFAULT_CMAP, colorize, heatmap_rgba
from equipath.wsi.reader import SlideReader, open_slide

__all__ = ["Run", "find_runs", "LAYER_COLOURS"]

log = logging.getLogger(__name__)

LAYER_COLOURS = {"tissue": (0, 160, 0), "regions": (200, 0, 0), "detections": (255, 140, 0), "geojson": (0, 90, 255)}


SUMMARIES = ("slide.json", "segment.json")  # predict-slide's, predict's (segmentation)


def _is_run(folder: Path) -> bool:
    return any((folder / name).is_file() for name in SUMMARIES) or any(folder.glob("*.geojson"))


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
    """The newest run record (``predict-slide-*.json``, ``predict-*.json``) beside the run folder, or ``{}``."""
    records = sorted(folder.parent.glob("predict-*.json"), key=lambda p: p.stat().st_mtime)
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
        found = [self.folder / name for name in SUMMARIES if (self.folder / name).is_file()]
        self.summary = json.loads(found[0].read_text()) if found else {}
        view = self.summary.get("view") or {}
        mpp = self.summary.get("level0_mpp") or (view["mpp"] / view["downsample"] if view.get("mpp") else None)
        self.reader: SlideReader = open_slide(self._slide_source(slide), mpp=mpp)
        self.name = self.folder.name
        self._layers = self._find_layers()

    def _slide_source(self, slide):
        if slide is not None:
            return slide
        recorded = self.summary.get("slide") or self.summary.get("source")
        if recorded and recorded != "<array>":
            for candidate in (Path(recorded), self.folder / recorded, self.folder.parent / recorded):
                if candidate.is_file():
                    return candidate
        raise FileNotFoundError(f"the slide of {self.folder} was not found (its outputs say {recorded!r}): give it "
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
        if (self.folder / "labels.tif").is_file():
            layers["segmentation"] = self._labels_layer(self.folder / "labels.tif", W)
        for path in sorted(self.folder.glob("*.geojson")):
            layer_id = path.stem
            colour = LAYER_COLOURS["regions" if layer_id == "regions" else "geojson"]
            data = self._read_geojson(path, colour)
            layers[layer_id] = {
                "kind": "geojson", "title": "predicted regions" if layer_id == "regions" else layer_id,
                "opacity": 1.0, "count": len(data["features"]),
                "legend": {"swatches": self._classes(data, colour)},
                "_render": lambda data=data: json_text(data).encode()}
        if (self.folder / "detections.csv").is_file():
            data = self._detections(self.folder / "detections.csv")
            radius = float(grid.get("cell_size_level0") or 64.0) / 2
            layers["detections"] = {
                "kind": "geojson", "title": "detections", "opacity": 1.0, "count": len(data["features"]),
                "radius_level0": radius,
                "legend": {"swatches": [["detection (prob, X, Y)", _hex(LAYER_COLOURS["detections"])]]},
                "_render": lambda data=data: json_text(data).encode()}
        return layers

    def _labels_layer(self, path: Path, slide_width: int, max_side: int = 4096) -> dict:
        """``predict``'s label TIFF (255 = not predicted) at its coarsest page of at most ``max_side`` pixels."""
        import tifffile

        with tifffile.TiffFile(path) as tif:
            pages = [p for p in tif.pages if p.ndim == 2 or p.shape[-1] == 1]
            full = pages[0].shape[:2]
            page = next((p for p in pages if max(p.shape[:2]) <= max_side), pages[-1])
            labels = np.asarray(page.asarray()).reshape(page.shape[:2])
        downsample = (self.summary.get("view") or {}).get("downsample") or slide_width / full[1]
        names = {int(k): str(v) for k, v in (self.summary.get("classes") or {}).items()}
        names = names or {int(v): f"class {int(v)}" for v in np.unique(labels) if v != 255}
        shown = {v: n for v, n in names.items() if v != 0}  # background stays the slide itself
        step = 2 ** round(np.log2(full[1] / labels.shape[1]))  # the pyramid's pages keep every step-th pixel
        return {"kind": "image", "title": "segmentation", "opacity": 0.45,
                "width_level0": labels.shape[1] * step * downsample, "height_level0": labels.shape[0] * step * downsample,
                "legend": {"swatches": [[n, _hex(class_color(v))] for v, n in shown.items()],
                           "note": "uncoloured: background or not predicted"},
                "_render": lambda: _png(self._labels_rgba(labels, shown))}

    @staticmethod
    def _labels_rgba(labels: np.ndarray, shown: dict) -> np.ndarray:
        rgba = np.zeros(labels.shape + (4,), np.uint8)
        for value in shown:
            rgba[labels == value] = (*class_color(value)[:3], 255)
        return rgba

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
