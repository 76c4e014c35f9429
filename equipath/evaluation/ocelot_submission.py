"""OCELOT 2023 submission files: cell detections of many images in the challenge's output format, and their
score against the ground truth (mF1, greedy matching within 15 px, :mod:`equipath.evaluation.cells`).

The format is the grand-challenge "Multiple points" JSON the OCELOT 2023 algorithm container writes::

    {"type": "Multiple points", "num_images": N,
     "points": [{"name": "image_0", "point": [x, y, class], "probability": p}, ...],
     "version": {"major": 1, "minor": 0}}

``image_k`` is the ``k``-th image (the OCELOT test images in order of their sample id), ``x, y`` pixel
coordinates in the 1024 x 1024 cell patch, ``class`` 1 (background cell) or 2 (tumour cell).

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> cells = [np.array([[10.0, 20.0, 1, 0.9], [40.0, 50.0, 2, 0.7]]), np.zeros((0, 4))]
    >>> path = write_ocelot_submission(pathlib.Path(tempfile.mkdtemp()) / "cells.json", cells)
    >>> back = read_ocelot_submission(path)
    >>> len(back), back[0].tolist()
    (2, [[10.0, 20.0, 1.0, 0.9], [40.0, 50.0, 2.0, 0.7]])
    >>> score_ocelot_submission(path, [c[:, :3] for c in cells])["mf1"]
    1.0
"""

import json
from glob import escape as glob_escape
from pathlib import Path

import numpy as np

from equipath.atomic import write_json
from equipath.evaluation.cells import cell_detection_f1

__all__ = ["write_ocelot_submission", "read_ocelot_submission", "score_ocelot_submission", "score_against_ocelot"]


def write_ocelot_submission(path, images: list[np.ndarray]) -> Path:
    """Write the cells of each image (``(K, 4)`` rows ``x, y, class, probability``) as an OCELOT 2023
    submission, atomically; image ``k`` is named ``image_k``."""
    points = []
    for k, cells in enumerate(images):
        for x, y, c, p in np.asarray(cells, dtype=np.float64).reshape(-1, 4):
            points.append({"name": f"image_{k}", "point": [float(x), float(y), int(c)], "probability": float(p)})
    data = {"type": "Multiple points", "num_images": len(images), "points": points,
            "version": {"major": 1, "minor": 0}}
    return write_json(path, data, indent=None)


def read_ocelot_submission(path) -> list[np.ndarray]:
    """The cells of each image of an OCELOT 2023 submission: a list of ``(K, 4)`` arrays ``x, y, class,
    probability``, ``num_images`` long.

    Raises:
        FileNotFoundError / ValueError: naming the file and what is wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"OCELOT submission {path} does not exist")
    try:
        data = json.loads(path.read_text())
        n = int(data["num_images"])
        images: list[list] = [[] for _ in range(n)]
        for entry in data["points"]:
            k = int(str(entry["name"]).removeprefix("image_"))
            x, y, c = entry["point"]
            images[k].append([float(x), float(y), int(c), float(entry.get("probability", 1.0))])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise ValueError(f"OCELOT submission {path} is not a 'Multiple points' file with num_images and "
                         f"points of image_k [x, y, class] ({exc.__class__.__name__}: {exc})") from None
    return [np.array(cells, dtype=np.float64).reshape(-1, 4) for cells in images]


def score_ocelot_submission(path, ground_truth: list[np.ndarray], radius: float = 15.0,
                            ties: str = "official") -> dict[str, float]:
    """mF1 and per-class F1 / precision / recall of a submission against ``ground_truth``, one ``(M, 3)``
    array ``x, y, class`` per image (e.g. :func:`equipath.data.ocelot.read_cell_csv` rows), in the same order."""
    preds = read_ocelot_submission(path)
    if len(preds) != len(ground_truth):
        raise ValueError(f"OCELOT submission {path} has {len(preds)} images, the ground truth {len(ground_truth)}")
    return cell_detection_f1(preds, [np.asarray(g, dtype=np.float64).reshape(-1, 3) for g in ground_truth],
                             radius=radius, ties=ties)


def _prediction_of(folder: Path, sample_id: str) -> np.ndarray:
    """The cells ``equipath predict`` wrote for image ``sample_id`` under ``folder`` (its per-image
    sub-folder: the image's stem, or that stem made safe with a hash suffix)."""
    candidates = [folder / sample_id / "cells.json", *sorted(folder.glob(f"{glob_escape(sample_id)}-*/cells.json"))]
    for path in candidates:
        if path.is_file():
            cells = read_ocelot_submission(path)
            if len(cells) != 1:
                raise ValueError(f"{path}: expected the cells of one image, found {len(cells)} images")
            return cells[0]
    raise FileNotFoundError(f"{folder}: no {sample_id}/cells.json for OCELOT image {sample_id!r} "
                            "(run 'equipath predict' on the split's cell images into this folder)")


def score_against_ocelot(path, root, split: str = "test", radius: float = 15.0,
                         ties: str = "official") -> dict[str, float]:
    """mF1 of predicted cells against an OCELOT 2023 folder's ground truth for ``split``.

    Args:
        path: a "Multiple points" submission file whose ``image_k`` is the ``k``-th image of the split in
            order of sample id, or an ``equipath predict`` output folder holding ``{sample_id}/cells.json``.
        root: the OCELOT folder (``metadata.json``, ``images/``, ``annotations/``).

    Raises:
        FileNotFoundError / ValueError: naming the file or folder and what is missing.
    """
    from equipath.data.ocelot import OcelotDataset, read_cell_csv

    data = OcelotDataset(root, split)
    truth = []
    for sample_id in data.ids:
        points, classes = read_cell_csv(data._paths(sample_id)["cells"])
        truth.append(np.column_stack([points, classes]))
    path = Path(path)
    if path.is_dir():
        preds = [_prediction_of(path, sample_id) for sample_id in data.ids]
        return cell_detection_f1(preds, truth, radius=radius, ties=ties)
    return score_ocelot_submission(path, truth, radius=radius, ties=ties)
