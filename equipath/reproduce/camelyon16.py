"""``camelyon16-table2``: seed 000 Table 2, FROC (and slide AUC) on the Camelyon16 test set by data regime,
P4M-DenseNet against the D4-augmented DenseNet.

The chain of one cell (model, regime, seed):

1. data regime: the training slides are split once into training and validation slides (seeded, 20 % of
   each class for validation, the tumour / normal ratio kept, as seed 000 says); the regime keeps a nested,
   seeded fraction (100 / 50 / 25 / 12.5 %) of the training slides of each class;
2. patches: ``equipath.wsi.sampling.sample_patches`` draws balanced 96 x 96 patches at 10x (0.972 um/px)
   from the regime's slides (training) and from the validation slides (validation), shared by both models;
3. train: the repository config of the row, on those patches;
4. slide maps: ``equipath.wsi.predict_slide`` on every validation and test slide (``probability.npy`` and
   ``slide.json`` kept in the cell's ``maps/``);
5. NMS: the square window and threshold are chosen on the validation slides from the SAVED maps (no
   re-inference): every pair of :data:`NMS_WINDOWS` x :data:`NMS_THRESHOLDS` is scored by the validation
   FROC, the best kept (ties: the first in that order); :func:`map_detections` gives exactly the detections
   ``predict_slide`` would have written with those options (``tests/test_reproduce_camelyon16.py``);
6. FROC: the chosen NMS on the saved test maps, the official evaluation rules (75 um growth, ITCs, the
   official tie rule), ``test_049`` and ``test_114`` excluded as the challenge did; slide AUC from each
   slide's maximum probability. Intervals: 2000 bootstrap resamples of test slides.

Data layout (the Camelyon16 release): ``R/training/{tumor,normal}/*.tif``,
``R/training/lesion_annotations/{slide}.xml``, ``R/testing/images/*.tif`` and
``R/testing/lesion_annotations/{slide}.xml`` (a test slide without one is normal).

``--synthetic`` writes that layout with SYNTHETIC 384 x 384 "slides" (procedural tissue tiles at
0.972 um/px, tumour regions as ASAP polygons): 6 tumour + 6 normal training slides, 2 + 2 test slides,
and evaluates at level 2 (3.9 um/px mask) instead of 5 because the slides are small.
"""

import copy
import json
import logging
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.measure import find_contours
from sklearn.metrics import roc_auc_score

from equipath.atomic import atomic_path, write_json
from equipath.checkpoint import load_model
from equipath.data.regimes import regime_indices
from equipath.data.synthetic import synthetic_tile
from equipath.reproduce.common import pooled_scores, prepared, read_config, train_cell, write_scores
from equipath.reproduce.plan import Cell, Table
from equipath.wsi.annotations import Annotation, write_asap_xml
from equipath.wsi.camelyon import CAMELYON16_EXCLUDED
from equipath.wsi.detection import square_nms, write_detections_csv
from equipath.wsi.froc import SlideHits, evaluate_slide, froc_curve, froc_score, load_ground_truth
from equipath.wsi.pipeline import PredictOptions, predict_slide
from equipath.wsi.reader import SLIDE_SUFFIXES

__all__ = ["CAMELYON16_TABLE2", "write_synthetic_camelyon16", "find_camelyon16", "split_slides", "map_detections",
           "choose_nms", "NMS_WINDOWS", "NMS_THRESHOLDS", "REGIMES"]

log = logging.getLogger(__name__)

REGIMES = {"100%": 1.0, "50%": 0.5, "25%": 0.25, "12.5%": 0.125}
NMS_WINDOWS = (1, 3, 5, 7, 9)
NMS_THRESHOLDS = (0.1, 0.3, 0.5, 0.7, 0.9)
VALID_FRACTION = 0.2
MODEL_ROWS = {"P4M-DenseNet": "camelyon16_p4m_densenet", "DenseNet": "camelyon16_densenet"}
PAPER = {  # seed 000 Table 2, FROC (95 % bootstrap interval) as printed
    ("P4M-DenseNet", "100%"): "84.0 (75.5, 91.5)", ("P4M-DenseNet", "50%"): "81.5 (72.2, 89.3)",
    ("P4M-DenseNet", "25%"): "72.6 (58.7, 84.6)", ("P4M-DenseNet", "12.5%"): "60.7 (46.0, 74.1)",
    ("DenseNet", "100%"): "81.7 (72.1, 90.3)", ("DenseNet", "50%"): "80.0 (69.3, 89.1)",
    ("DenseNet", "25%"): "71.0 (57.7, 82.0)", ("DenseNet", "12.5%"): "55.4 (42.6, 68.5)",
}
REAL = {"mpp": 0.972, "slide_mpp": None, "level": 5, "train_patches": 200_000, "valid_patches": 40_000,
        "exclude": CAMELYON16_EXCLUDED}
SYNTHETIC = {"mpp": 0.972, "slide_mpp": 0.972, "level": 2, "train_patches": 512, "valid_patches": 128,
             "exclude": (), "slides": {"train_tumour": 6, "train_normal": 6, "test_tumour": 2, "test_normal": 2},
             "size": 384, "growth": {"p4m_densenet": 16, "densenet": 8},
             "train": {"epochs": 2, "batch_size": 16, "batches_per_epoch": 6, "eval_batch_size": 64},
             "val_samples": 128}


# ---------------------------------------------------------------------------------------------- data
def _tile_annotations(mask: np.ndarray, name: str) -> list[Annotation]:
    """ASAP polygons of a boolean mask (holes filled), pixel centres at level-0 ``(c + 0.5, r + 0.5)``."""
    filled = np.pad(ndimage.binary_fill_holes(mask), 1)
    contours = find_contours(filled.astype(float), 0.5)
    return [Annotation(f"{name}_{k}", "_0", c[:, ::-1] - 1 + 0.5) for k, c in enumerate(contours) if len(c) >= 4]


def write_synthetic_camelyon16(root, slides: dict, size: int = 384, seed: int = 0) -> Path:
    """Write SYNTHETIC slides in the Camelyon16 layout (module docstring): tumour slides are procedural tiles
    with a tumour region (its outline as ASAP polygons), normal slides tiles without one. Returns ``root``."""
    from PIL import Image

    root = Path(root)
    wanted = {"training": [("tumor", slides["train_tumour"]), ("normal", slides["train_normal"])],
              "testing": [("tumor", slides["test_tumour"]), ("normal", slides["test_normal"])]}
    for split, kinds in wanted.items():
        notes = root / split / "lesion_annotations"
        notes.mkdir(parents=True, exist_ok=True)
        found = {"tumor": [], "normal": []}
        index, test_number = 0, 0
        while any(len(found[k]) < n for k, n in kinds):
            tile = synthetic_tile(index, seed=seed, size=(size, size), split="train" if split == "training" else "test")
            index += 1
            kind = "tumor" if tile.mask.sum() > 0.02 * size * size else "normal" if not tile.mask.any() else None
            if kind is None or len(found[kind]) >= dict(kinds)[kind]:
                continue
            found[kind].append(tile)
            if split == "training":
                name = f"{kind}_{len(found[kind]):03d}"
                folder = root / split / kind
            else:
                test_number += 1
                name, folder = f"test_{test_number:03d}", root / split / "images"
            folder.mkdir(parents=True, exist_ok=True)
            with atomic_path(folder / f"{name}.png") as tmp:
                Image.fromarray(tile.image).save(tmp, format="PNG")
            if kind == "tumor":
                write_asap_xml(notes / f"{name}.xml", _tile_annotations(tile.mask > 0, name))
    write_json(root / "synthetic.json", {"synthetic": True, "generator": "equipath.data.synthetic.synthetic_tile",
                                         "slides": slides, "size": size, "seed": seed, "level0_mpp": SYNTHETIC["mpp"]})
    return root


def _slides_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*") if p.suffix.lower() in SLIDE_SUFFIXES) if folder.is_dir() else []


def _annotations(folder: Path) -> dict:
    """``{slide name in lower case: ASAP file}`` of a folder (``Test_001.xml`` annotates ``test_001.tif``)."""
    return {p.stem.lower(): p for p in folder.glob("*.xml")} if folder.is_dir() else {}


def find_camelyon16(root) -> dict:
    """``{"tumor": [(slide, xml)], "normal": [(slide, None)], "test": [(slide, xml or None)]}`` of a
    Camelyon16-layout folder; ``FileNotFoundError`` naming what is missing."""
    root = Path(root)
    notes = _annotations(root / "training" / "lesion_annotations")
    tumour = [(p, notes.get(p.stem.lower(), root / "training" / "lesion_annotations" / f"{p.stem}.xml"))
              for p in _slides_in(root / "training" / "tumor")]
    normal = [(p, None) for p in _slides_in(root / "training" / "normal")]
    test_notes = _annotations(root / "testing" / "lesion_annotations")
    test = [(p, test_notes.get(p.stem.lower())) for p in _slides_in(root / "testing" / "images")]
    missing = [str(x) for _, x in tumour if not x.is_file()]
    if not tumour or not normal or not test or missing:
        raise FileNotFoundError(
            f"reproduce camelyon16-table2: {root} needs training/tumor/*.tif with training/lesion_annotations/"
            f"{{slide}}.xml, training/normal/*.tif and testing/images/*.tif (found {len(tumour)} tumour, "
            f"{len(normal)} normal, {len(test)} test slides" + (f"; missing {missing[0]}" if missing else "") + ")")
    return {"tumor": tumour, "normal": normal, "test": test}


def split_slides(slides: dict, valid_fraction: float = VALID_FRACTION, seed: int = 0) -> dict:
    """Training / validation slides per class (seeded; at least one validation slide per class)."""
    rng = np.random.default_rng(seed)
    out = {"train": {}, "valid": {}}
    for kind in ("tumor", "normal"):
        items = slides[kind]
        order = rng.permutation(len(items))
        n_valid = min(len(items) - 1, max(1, round(valid_fraction * len(items))))
        out["valid"][kind] = [items[i] for i in sorted(order[:n_valid])]
        out["train"][kind] = [items[i] for i in sorted(order[n_valid:])]
    return out


def regime_slides(train: dict, fraction: float, seed: int = 0) -> list:
    """The regime's training slides: a nested, seeded ``fraction`` of each class (the class ratio kept)."""
    return [train[kind][i] for kind in ("tumor", "normal")
            for i in regime_indices(len(train[kind]), fraction, seed)]


def _as_str(pairs) -> list:
    return [[str(s), None if a is None else str(a)] for s, a in pairs]


def _prepare(context) -> dict:
    from equipath.wsi.sampling import sample_patches

    params = SYNTHETIC if context.synthetic else REAL
    if context.synthetic:
        root = prepared(context.out / "data" / "camelyon16",
                        lambda f: write_synthetic_camelyon16(f, SYNTHETIC["slides"], SYNTHETIC["size"]),
                        synthetic=True)
    else:
        root = context.data_root
    slides = find_camelyon16(root)
    split = split_slides(slides)
    valid = split["valid"]["tumor"] + split["valid"]["normal"]
    patches = {}
    for column, fraction in REGIMES.items():
        sources = regime_slides(split["train"], fraction)

        def make(folder, sources=sources):
            kw = dict(mpp=params["mpp"], slide_mpp=params["slide_mpp"], progress=False)
            sample_patches(sources, folder, "train", params["train_patches"], seed=0, **kw)
            sample_patches(valid, folder, "valid", params["valid_patches"], seed=1, **kw)

        folder = prepared(context.out / "data" / "patches" / column.replace("%", "pct"), make,
                          slides=_as_str(sources))
        patches[column] = {"root": str(folder), "slides": _as_str(sources)}
    return {"root": str(root), "synthetic": context.synthetic, "valid_slides": _as_str(valid),
            "test_slides": _as_str(slides["test"]), "patches": patches,
            **{k: list(v) if isinstance(v, tuple) else v for k, v in params.items() if k in (
                "mpp", "slide_mpp", "level", "train_patches", "valid_patches", "exclude")}}


# ------------------------------------------------------------------------------------ maps and NMS
def _predict_maps(checkpoint, sources: list, folder: Path, context) -> None:
    """``predict_slide`` on every slide into ``folder/{name}`` (a slide whose ``slide.json`` exists is done)."""
    model, state = load_model(checkpoint)
    device = None if context.device == "auto" else context.device
    options = PredictOptions(mpp=context.data["mpp"], slide_mpp=context.data["slide_mpp"], device=device,
                             progress=False)
    for slide, _ in sources:
        out = folder / Path(slide).stem
        if not (out / "slide.json").is_file():
            predict_slide(slide, out, model, state, options)


def map_detections(map_folder, window: int, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(probs, X, Y)`` at level 0 by square NMS on a saved ``probability.npy``, with the geometry of its
    ``slide.json``: the detections ``predict_slide`` writes with ``nms_window=window`` and
    ``nms_threshold=threshold``, without running the model again."""
    map_folder = Path(map_folder)
    prob = np.load(map_folder / "probability.npy")
    info = json.loads((map_folder / "slide.json").read_text())
    found = square_nms(prob, window, threshold)
    stride, downsample = info["grid"]["stride"], info["view"]["downsample"]
    cell, (width, height) = info["grid"]["cell_size_level0"], info["level0_dimensions"]
    xs = (found[:, 2] + 0.5) * stride * downsample
    ys = (found[:, 1] + 0.5) * stride * downsample
    # a cell of the last row or column reaching past the slide: the centre of its part inside (as predict_slide)
    xs = np.minimum(xs, (found[:, 2] * cell + width) / 2)
    ys = np.minimum(ys, (found[:, 1] * cell + height) / 2)
    return found[:, 0], xs, ys


def _truth(folder: Path, annotation, context):
    info = json.loads((folder / "slide.json").read_text())
    mpp = info.get("level0_mpp") or context.data["slide_mpp"] or 0.243
    return load_ground_truth(annotation, tuple(info["level0_dimensions"]), mpp, context.data["level"]), info


def _slide_hits(maps: Path, sources: list, window: int, threshold: float, context, out_csv: Path | None = None):
    hits = []
    for slide, annotation in sources:
        name = Path(slide).stem
        if name.lower() in {e.lower() for e in context.data["exclude"]}:
            continue
        truth, info = _truth(maps / name, annotation, context)
        probs, xs, ys = map_detections(maps / name, window, threshold)
        if out_csv is not None:
            write_detections_csv(out_csv / f"{name}.csv", probs, xs, ys)
            probs = np.array([float(f"{p:.6f}") for p in probs])  # as the official code reads the CSV back
        hits.append(evaluate_slide(probs, xs, ys, truth, name, info["max_probability"]))
    return hits


def _froc(hits: list[SlideHits]) -> float:
    if not sum(h.n_lesions for h in hits):
        return float("nan")
    return froc_score(*froc_curve(hits))[1]


def choose_nms(maps: Path, sources: list, context) -> dict:
    """The NMS window and threshold with the highest validation FROC, from the saved maps (module docstring)."""
    grid, best = [], None
    for window in NMS_WINDOWS:
        for threshold in NMS_THRESHOLDS:
            froc = _froc(_slide_hits(maps, sources, window, threshold, context))
            grid.append({"window": window, "threshold": threshold, "valid_froc": froc})
            if not np.isnan(froc) and (best is None or froc > best["valid_froc"]):
                best = grid[-1]
    if best is None:
        raise ValueError("choose_nms: the validation slides hold no lesion larger than an isolated tumour cell")
    return {"window": best["window"], "threshold": best["threshold"], "valid_froc": best["valid_froc"], "grid": grid}


# ------------------------------------------------------------------------------------------- cells
def _cells(context, seeds: int) -> list[Cell]:
    cells = []
    for row, config_file in MODEL_ROWS.items():
        base, path = read_config(config_file)
        for column in REGIMES:
            config = copy.deepcopy(base)
            config["data"]["root"] = context.data["patches"][column]["root"]
            if context.synthetic:
                config["model_kwargs"] = {"growth": SYNTHETIC["growth"][config["model"]]}
                config["data"].update(val_samples=SYNTHETIC["val_samples"], num_workers=0)
                config.update(SYNTHETIC["train"])
            cells += [Cell(row, column, seed, config, path.name) for seed in range(seeds)]
    return cells


def _hits_json(hits: list[SlideHits]) -> list[dict]:
    return [{"name": h.name, "fp": [float(p) for p in h.fp_probs], "tp": [float(p) for p in h.tp_probs],
             "n_lesions": h.n_lesions, "max_prob": h.max_prob, "tumour": h.is_tumour} for h in hits]


def _hits_from_json(rows: list[dict]) -> list[SlideHits]:
    return [SlideHits(np.array(r["fp"], np.float64), np.array(r["tp"], np.float32), r["n_lesions"], r["max_prob"],
                      r["tumour"], r["name"]) for r in rows]


def _auc(hits: list[SlideHits]) -> float:
    labels = [h.is_tumour for h in hits]
    if all(labels) or not any(labels):
        return float("nan")
    return float(roc_auc_score(labels, [h.max_prob for h in hits]))


def _run(cell: Cell, folder: Path, context) -> None:
    best = train_cell(cell, folder, context)
    valid = [tuple(p) for p in context.data["valid_slides"]]
    test = [tuple(p) for p in context.data["test_slides"]]
    _predict_maps(best, valid + test, folder / "maps", context)
    choice = choose_nms(folder / "maps", valid, context)
    write_json(folder / "nms_choice.json", choice)
    detections = folder / "detections"
    detections.mkdir(exist_ok=True)
    hits = _slide_hits(folder / "maps", test, choice["window"], choice["threshold"], context, detections)
    write_json(folder / "test_hits.json", _hits_json(hits))
    write_scores(folder, {"froc": _froc(hits), "auc": _auc(hits)}, nms=choice, checkpoint=str(best),
                 n_test_slides=len(hits))


def _score(folders: list[Path], context):
    per_seed = [_hits_from_json(json.loads((f / "test_hits.json").read_text())) for f in folders]
    n = len(per_seed[0])
    pooled = [h for hits in per_seed for h in hits]

    def compute(records):
        chosen = [pooled[i] for i in records["slide"]]
        return {"froc": _froc(chosen), "auc": _auc(chosen)}

    return pooled_scores(compute, [{"slide": np.arange(n) + s * n} for s in range(len(per_seed))], context.n_bootstrap)


CAMELYON16_TABLE2 = Table(
    name="camelyon16-table2",
    title="Seed 000 (Veeling et al. 2018), Table 2: Camelyon16 test set, FROC (%) by data regime, and slide AUC (%)",
    metrics=(("froc", "FROC", 100), ("auc", "slide AUC", 100)),
    paper={key: {"froc": value, "auc": "not reported"} for key, value in PAPER.items()},
    cells=_cells, prepare=_prepare, run_cell=_run, score=_score,
    needs="R/training/{tumor,normal}/*.tif, R/training/lesion_annotations/{slide}.xml, R/testing/images/*.tif, "
          "R/testing/lesion_annotations/{slide}.xml (the Camelyon16 release layout)",
    notes="Paper column: seed 000 Table 2 as printed, FROC (95 % bootstrap interval); the paper reports no slide "
          "AUC. Liu et al. 10x: 79.3 (74.2, 84.1); Wang et al.: 80.7 (40x); pathologist: 73.3. NMS window and "
          "threshold chosen per cell on the validation slides' saved maps (nms_choice.json in each cell).",
)
