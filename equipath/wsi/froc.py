"""Camelyon16 lesion-level FROC and slide-level AUC, following the challenge's evaluation code.

Ground truth per slide (a tumour mask on a coarse level, default level 5, i.e. downsample 32):

1. evaluation mask: pixels closer than ``growth_um / (2 * mask_mpp)`` mask pixels to tumour (the official
   code's 75 um growth: ``distance < 75 / (resolution * 2**level * 2)``), holes filled, lesions labelled
   with 8-connectivity;
2. isolated tumour cells (ITC): lesions whose major axis is shorter than ``itc_um / mask_mpp`` (275 um,
   measured after the growth); a detection inside one is neither a true nor a false positive;
3. a detection at level-0 ``(X, Y)`` hits label ``mask[int(Y / d), int(X / d)]``: 0 is a false positive,
   a lesion keeps the highest probability of the detections inside it (one true positive per lesion);
   every detection on a normal slide is a false positive.

The FROC curve sweeps the threshold over every distinct probability but the lowest (as the official code
and MONAI's ``compute_froc_curve_data`` do); the score is the mean sensitivity at 1/4, 1/2, 1, 2, 4 and 8
false positives per slide, linearly interpolated.

Ties (``ties``): the official ``Evaluation_FROC.py`` keeps the probabilities of false positives as Python
floats (float64, as read from the CSV) but stores each lesion's probability in a float32 array
(``TP_probs = np.zeros(..., dtype=np.float32)``). A threshold therefore counts a false positive when
``float64(p) >= t`` and a lesion when ``float32(p) >= float32(t)``, and a false and a true positive both
written ``0.1`` are two distinct thresholds (0.1 and float32(0.1) = 0.10000000149). ``ties="official"``
(the default) reproduces this exactly; ``ties="strict"`` keeps both in float64, so equal probabilities
tie. Example: one tumour slide, two lesions, ``0.1`` inside one and ``0.1`` outside both: official 0.5,
strict (and MONAI, which casts both to float32) 0.3958.

Confidence intervals resample slides with replacement (2000 bootstrap samples, seed 000). Slide-level AUC
scores each slide by its maximum probability.

Example:
    >>> import numpy as np
    >>> truth = np.zeros((60, 60), bool); truth[10:50, 10:50] = True   # one lesion, 40 px = 311 um
    >>> gt = GroundTruth.from_tumour_mask(truth, downsample=32, mask_mpp=0.243 * 32)
    >>> hit = evaluate_slide(np.array([0.9, 0.4]), np.array([640, 50]), np.array([640, 50]), gt)
    >>> hit.tp_probs.tolist(), hit.fp_probs.tolist(), hit.n_lesions
    ([0.8999999761581421], [0.4], 1)
"""

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.measure import label as label_components
from skimage.measure import regionprops
from sklearn.metrics import roc_auc_score

from equipath.evaluation.base import bootstrap_ci
from equipath.wsi.annotations import ANNOTATION_SUFFIXES, rasterize, read_annotations
from equipath.wsi.reader import SlideView, open_slide

__all__ = ["GroundTruth", "SlideHits", "load_ground_truth", "evaluate_slide", "froc_curve", "froc_score",
           "evaluate_froc", "FROCReport", "EVAL_FPS", "TIE_RULES"]

log = logging.getLogger(__name__)

EVAL_FPS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
TIE_RULES = {"official": np.float32, "strict": np.float64}  # the dtype of the lesions' probabilities


@dataclass(frozen=True)
class GroundTruth:
    """One slide's evaluation mask: ``labels`` ``(h, w)`` int (0 = normal, lesions 1..L) at ``downsample``
    level-0 pixels per mask pixel, and ``itc`` the labels of isolated tumour cells. ``labels`` is None for a
    normal slide."""

    labels: np.ndarray | None
    downsample: float
    itc: tuple[int, ...] = ()

    @classmethod
    def from_tumour_mask(cls, tumour: np.ndarray, downsample: float, mask_mpp: float, growth_um: float = 75.0,
                         itc_um: float = 275.0) -> "GroundTruth":
        """Evaluation mask and ITC labels of a boolean tumour mask whose pixels are ``mask_mpp`` microns."""
        tumour = np.asarray(tumour, dtype=bool)
        if not tumour.any():
            return cls(None, downsample)
        distance = ndimage.distance_transform_edt(~tumour)
        grown = ndimage.binary_fill_holes(distance < growth_um / (2.0 * mask_mpp))
        labels = label_components(grown, connectivity=2)
        itc = tuple(p.label for p in regionprops(labels) if p.axis_major_length < itc_um / mask_mpp)
        return cls(labels, downsample, itc)

    @property
    def is_tumour(self) -> bool:
        return self.labels is not None

    @property
    def n_lesions(self) -> int:
        """Lesions that count: every label but the ITCs."""
        return 0 if self.labels is None else int(self.labels.max()) - len(self.itc)


def load_ground_truth(path, dimensions: tuple[int, int], mpp: float, level: int = 5, growth_um: float = 75.0,
                      itc_um: float = 275.0) -> GroundTruth:
    """Ground truth of one slide from an ASAP XML file, a mask TIFF (tumour where non-zero), or None (normal).

    Args:
        path: ``.xml`` or ``.tif`` / ``.tiff`` mask, or None for a normal slide.
        dimensions: the slide's level-0 ``(W, H)``; the mask must match it.
        mpp: microns per level-0 pixel of the slide (Camelyon16: 0.243).
        level: the evaluation level, downsample ``2**level``. Defaults to 5 (the challenge's).
    """
    ds = 2**level
    W, H = dimensions
    shape = (math.ceil(H / ds), math.ceil(W / ds))
    if path is None:
        return GroundTruth(None, ds)
    path = Path(path)
    if path.suffix.lower() in ANNOTATION_SUFFIXES:
        annotations = read_annotations(path)
        _check_inside(path, annotations, W, H)
        tumour = rasterize(annotations, shape, ds)
    elif path.suffix.lower() in (".tif", ".tiff"):
        with open_slide(path) as mask_slide:
            if mask_slide.dimensions != (W, H):
                raise ValueError(f"mask {path} is {mask_slide.dimensions[0]}x{mask_slide.dimensions[1]} at level 0, "
                                 f"but its slide is {W}x{H}: is it the mask of another slide?")
            view = SlideView(mask_slide, ds)
            pixels = view.read_all() if view.factor == 1 else _nearest_level(mask_slide, view)
        tumour = np.zeros(shape, dtype=bool)
        h, w = min(shape[0], pixels.shape[0]), min(shape[1], pixels.shape[1])
        tumour[:h, :w] = pixels[:h, :w, 0] > 0
    else:
        raise ValueError(f"ground truth {path}: expected an ASAP .xml / QuPath .geojson file or a .tif mask")
    truth = GroundTruth.from_tumour_mask(tumour, ds, mpp * ds, growth_um, itc_um)
    if not truth.is_tumour:
        log.warning("ground truth %s marks no tumour pixel at level %d; the slide counts as normal", path, level)
    return truth


def _nearest_level(slide, view: SlideView) -> np.ndarray:
    """A mask read at ``view``'s resolution by nearest neighbour (never blending labels)."""
    level_view = SlideView(slide, slide.level_downsamples[view.level], tolerance=0.0)
    pixels = level_view.read_all()
    rows = np.minimum(((np.arange(view.shape[0]) + 0.5) * view.factor).astype(int), pixels.shape[0] - 1)
    cols = np.minimum(((np.arange(view.shape[1]) + 0.5) * view.factor).astype(int), pixels.shape[1] - 1)
    return pixels[rows[:, None], cols[None, :]]


def _check_inside(path, annotations, W, H):
    for a in annotations:
        x, y = a.coords[:, 0], a.coords[:, 1]
        if x.max() < 0 or y.max() < 0 or x.min() > W or y.min() > H:
            raise ValueError(f"annotation {a.name!r} of {path} lies outside its slide ({W}x{H} pixels at level 0): "
                             f"is it the annotation of another slide?")
        if x.min() < 0 or y.min() < 0 or x.max() > W or y.max() > H:
            log.warning("annotation %r of %s extends beyond its slide (%dx%d); it is clipped", a.name, path, W, H)


@dataclass(frozen=True)
class SlideHits:
    """One slide's detections sorted into false positives and lesion hits.

    Attributes:
        fp_probs: probabilities of the false positives.
        tp_probs: per label 1..L, the highest probability inside it (0: missed; ITC labels are always 0).
        n_lesions: lesions that count (labels minus ITCs).
        max_prob: the slide's score for slide-level AUC.
        is_tumour: whether the slide holds tumour.
    """

    fp_probs: np.ndarray
    tp_probs: np.ndarray
    n_lesions: int
    max_prob: float
    is_tumour: bool
    name: str = ""


def evaluate_slide(probs, xs, ys, truth: GroundTruth, name: str = "", max_prob: float | None = None,
                   ties: str = "official") -> SlideHits:
    """Sort one slide's detections (level-0 ``xs``, ``ys``) into false and true positives (module docstring).

    ``max_prob`` is the slide's score for AUC; defaults to the highest detection probability (0 if none).
    ``ties``: ``official`` keeps false positives in float64 and lesion probabilities in float32, as the
    official code does; ``strict`` keeps both in float64 (module docstring). Defaults to ``official``.
    """
    if ties not in TIE_RULES:
        raise ValueError(f"ties must be one of {', '.join(TIE_RULES)}, got {ties!r}")
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    xs, ys = np.asarray(xs).reshape(-1), np.asarray(ys).reshape(-1)
    if max_prob is None:
        max_prob = float(probs.max()) if len(probs) else 0.0
    if truth.labels is None:
        return SlideHits(probs, np.zeros(0, TIE_RULES[ties]), 0, max_prob, False, name)
    h, w = truth.labels.shape
    rows, cols = (ys / truth.downsample).astype(np.int64), (xs / truth.downsample).astype(np.int64)
    outside = (rows < 0) | (rows >= h) | (cols < 0) | (cols >= w)
    if outside.any():
        k = int(np.flatnonzero(outside)[0])
        raise ValueError(f"slide {name or '?'}: detection at X={xs[k]}, Y={ys[k]} lies outside the evaluation mask "
                         f"({w * truth.downsample:g}x{h * truth.downsample:g} level-0 pixels): are the coordinates "
                         f"at level 0, and is this the right slide?")
    hit = truth.labels[rows, cols]
    n_labels = int(truth.labels.max())
    tp_probs = np.zeros(n_labels, dtype=TIE_RULES[ties])  # rounding is monotone: max of the cast = cast of the max
    counted = (hit > 0) & ~np.isin(hit, truth.itc)
    np.maximum.at(tp_probs, hit[counted] - 1, probs[counted].astype(tp_probs.dtype))
    return SlideHits(probs[hit == 0], tp_probs, truth.n_lesions, max_prob, True, name)


def froc_curve(slides: list[SlideHits]) -> tuple[np.ndarray, np.ndarray]:
    """``(false positives per slide, sensitivity)`` over thresholds, as the official ``computeFROC``: the
    thresholds are the distinct values of both lists but the lowest, and each list is compared in its own
    dtype (a float64 threshold is rounded to float32 against float32 lesion probabilities, as numpy does)."""
    fp = np.sort(np.concatenate([np.asarray(s.fp_probs, np.float64) for s in slides] + [np.zeros(0)]))
    tp_dtype = np.result_type(*[s.tp_probs.dtype for s in slides], np.float32)
    tp = np.sort(np.concatenate([s.tp_probs.astype(tp_dtype) for s in slides] + [np.zeros(0, tp_dtype)]))
    n_targets = sum(s.n_lesions for s in slides)
    if n_targets == 0:
        raise ValueError("FROC needs at least one tumour slide with a lesion larger than an isolated tumour cell")
    thresholds = np.unique(np.concatenate([fp, tp.astype(np.float64)]))[1:]
    fps = np.append(len(fp) - np.searchsorted(fp, thresholds, side="left"), 0)
    tps = np.append(len(tp) - np.searchsorted(tp, thresholds.astype(tp_dtype), side="left"), 0)
    return fps / float(len(slides)), tps / float(n_targets)


def froc_score(fps_per_slide: np.ndarray, sensitivity: np.ndarray, eval_fps=EVAL_FPS) -> tuple[np.ndarray, float]:
    """Sensitivity interpolated at each of ``eval_fps`` false positives per slide, and their mean."""
    at = np.interp(eval_fps, fps_per_slide[::-1], sensitivity[::-1])
    return at, float(at.mean())


def _slide_auc(slides: list[SlideHits]) -> float:
    labels = np.array([s.is_tumour for s in slides])
    if labels.all() or not labels.any():
        return math.nan
    return float(roc_auc_score(labels, [s.max_prob for s in slides]))


@dataclass
class FROCReport:
    """Lesion-level FROC and slide-level AUC with bootstrap intervals (see :func:`evaluate_froc`)."""

    eval_fps: tuple
    sensitivities: list[float]
    froc: float
    froc_ci: tuple[float, float]
    auc: float
    auc_ci: tuple[float, float]
    n_slides: int
    n_tumour_slides: int
    n_lesions: int
    curve: dict = field(repr=False)
    per_slide: list[dict] = field(repr=False)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def evaluate_froc(slides: list[SlideHits], eval_fps=EVAL_FPS, n_bootstrap: int = 2000, seed: int = 0) -> FROCReport:
    """FROC score, sensitivities at ``eval_fps``, slide AUC and their percentile-bootstrap 95 % intervals
    (slides resampled with replacement; resamples without a lesion, or with one class for AUC, are skipped)."""
    if not slides:
        raise ValueError("FROC needs at least one slide")
    fps, sens = froc_curve(slides)
    at, score = froc_score(fps, sens, eval_fps)

    def compute(records):
        chosen = [slides[i] for i in records["slide"]]
        froc = froc_score(*froc_curve(chosen), eval_fps)[1] if sum(s.n_lesions for s in chosen) else math.nan
        return {"froc": froc, "auc": _slide_auc(chosen)}

    ci = bootstrap_ci(compute, {"slide": np.arange(len(slides))}, n=n_bootstrap, seed=seed) if n_bootstrap else {
        "froc": (math.nan, math.nan), "auc": (math.nan, math.nan)}
    per_slide = [{"slide": s.name, "tumour": s.is_tumour, "lesions": s.n_lesions,
                  "detected": int((s.tp_probs > 0).sum()), "false_positives": len(s.fp_probs),
                  "max_probability": s.max_prob} for s in slides]
    return FROCReport(tuple(eval_fps), [float(v) for v in at], score, ci["froc"], _slide_auc(slides), ci["auc"],
                      len(slides), sum(s.is_tumour for s in slides), sum(s.n_lesions for s in slides),
                      {"fps_per_slide": fps.tolist(), "sensitivity": sens.tolist()}, per_slide)
