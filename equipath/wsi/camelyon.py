"""A Camelyon16 evaluation from folders: detections per slide, ground truth per tumour slide.

Detections: ``DIR/{slide}.csv`` (the challenge's submission layout) or ``DIR/{slide}/detections.csv`` (the
output folders of ``equipath predict-slide``, whose ``slide.json`` also gives the slide's level-0 size,
resolution and maximum probability). Ground truth: ``GT/{slide}.xml`` (ASAP), or a mask
``GT/{slide}.tif`` / ``GT/{slide}_mask.tif`` / ``GT/{slide}_Mask.tif``; a slide without one is normal.
An ASAP file needs the slide's size: from ``slide.json``, or from the slide itself in ``slides_dir``.

Excluded slides (``exclude``): the challenge left two test slides out of its evaluation because their
annotations are not exhaustive, ``test_049`` and ``test_114`` (:data:`CAMELYON16_EXCLUDED`); names are
matched case-insensitively and excluded slides are skipped with a log line.

Example:
    >>> import tempfile, pathlib
    >>> from equipath.wsi.detection import write_detections_csv
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> _ = write_detections_csv(root / "normal_001.csv", [0.25], [100], [200])
    >>> [(h.name, h.is_tumour, h.fp_probs.tolist()) for h in collect_hits(root)]
    [('normal_001', False, [0.25])]
"""

import json
import logging
from pathlib import Path

from equipath.wsi.detection import read_detections_csv
from equipath.wsi.froc import SlideHits, evaluate_slide, load_ground_truth
from equipath.wsi.reader import SLIDE_SUFFIXES, open_slide

__all__ = ["collect_hits", "find_ground_truth", "CAMELYON16_EXCLUDED"]

log = logging.getLogger(__name__)

CAMELYON16_EXCLUDED = ("test_049", "test_114")


def find_ground_truth(folder: Path | None, name: str) -> Path | None:
    """The ground-truth file of slide ``name`` in ``folder``, or None (a normal slide)."""
    if folder is None:
        return None
    for candidate in (f"{name}.xml", f"{name}.geojson", f"{name}.tif", f"{name}.tiff", f"{name}_mask.tif",
                      f"{name}_Mask.tif"):
        if (folder / candidate).is_file():
            return folder / candidate
    return None


def _detection_files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"detections folder {folder} does not exist")
    found = {p.stem: p for p in folder.glob("*.csv")}
    found.update({p.parent.name: p for p in folder.glob("*/detections.csv")})
    if not found:
        raise ValueError(f"no detections in {folder}: expected {{slide}}.csv files or {{slide}}/detections.csv folders")
    return dict(sorted(found.items()))


def _slide_info(name: str, csv_path: Path, slides_dir: Path | None) -> dict:
    meta = csv_path.parent / "slide.json"
    if csv_path.name == "detections.csv" and meta.is_file():
        info = json.loads(meta.read_text())
        return {"dimensions": tuple(info["level0_dimensions"]), "mpp": info.get("level0_mpp"),
                "max_prob": info.get("max_probability")}
    if slides_dir is not None:
        for path in sorted(slides_dir.glob(f"{name}.*")):
            if path.suffix.lower() in SLIDE_SUFFIXES:
                with open_slide(path) as slide:
                    return {"dimensions": slide.dimensions, "mpp": slide.mpp, "max_prob": None}
    return {"dimensions": None, "mpp": None, "max_prob": None}


def collect_hits(detections_dir, ground_truth_dir=None, slides_dir=None, mpp: float = 0.243, level: int = 5,
                 growth_um: float = 75.0, itc_um: float = 275.0, ties: str = "official",
                 exclude=()) -> list[SlideHits]:
    """Read every slide's detections and ground truth and sort the detections (see the module docstring).

    Args:
        detections_dir: the detections folder.
        ground_truth_dir: the folder of ASAP XML files / masks. Defaults to None (every slide normal).
        slides_dir: the slides, for the size of slides without ``slide.json``. Defaults to None.
        mpp: level-0 microns per pixel when neither ``slide.json`` nor the slide says. Defaults to 0.243.
        level: evaluation level (downsample ``2**level``). Defaults to 5.
        ties: the tie rule of :func:`~equipath.wsi.froc.evaluate_slide`. Defaults to ``official``.
        exclude: slide names left out of the evaluation (e.g. :data:`CAMELYON16_EXCLUDED`). Defaults to none.

    Raises:
        ValueError: a detection file is malformed, a mask or annotation does not match its slide, or the
            size of a slide with an ASAP file is unknown.
    """
    detections_dir = Path(detections_dir)
    gt_dir = None if ground_truth_dir is None else Path(ground_truth_dir)
    slides_dir = None if slides_dir is None else Path(slides_dir)
    if gt_dir is not None and not gt_dir.is_dir():
        raise FileNotFoundError(f"ground-truth folder {gt_dir} does not exist")
    files = _detection_files(detections_dir)
    excluded = {name.lower() for name in exclude}
    for name in [n for n in files if n.lower() in excluded]:
        log.info("slide %s is excluded from the evaluation", name)
        del files[name]
    hits = []
    for name, csv_path in files.items():
        probs, xs, ys = read_detections_csv(csv_path)
        truth_path = find_ground_truth(gt_dir, name)
        info = _slide_info(name, csv_path, slides_dir)
        dims = info["dimensions"]
        if dims is None and truth_path is not None:
            if truth_path.suffix.lower() in (".xml", ".geojson"):
                raise ValueError(f"slide {name}: the size of the slide is needed to rasterize {truth_path}; "
                                 f"pass the slides folder (or use predict-slide output folders)")
            with open_slide(truth_path) as mask:
                dims = mask.dimensions
        truth = load_ground_truth(truth_path, dims or (1, 1), info["mpp"] or mpp, level, growth_um, itc_um)
        hits.append(evaluate_slide(probs, xs, ys, truth, name, info["max_prob"], ties))
    if gt_dir is not None:
        orphans = sorted(p.name for p in gt_dir.iterdir()
                         if p.suffix.lower() in (".xml", ".geojson", ".tif", ".tiff")
                         and p.stem.removesuffix("_mask").removesuffix("_Mask") not in files
                         and p.stem.removesuffix("_mask").removesuffix("_Mask").lower() not in excluded)
        for orphan in orphans:
            log.warning("ground truth %s has no detections in %s; it is not evaluated", orphan, detections_dir)
    return hits
