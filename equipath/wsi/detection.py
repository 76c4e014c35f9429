"""Tumour detections from a probability map by square non-maximum suppression (seed 000), written as the
Camelyon16 per-slide CSV.

Square NMS: repeatedly take the most probable remaining cell (ties: the first in row-major order), report
it, and suppress the ``window x window`` square of cells ``[i - window // 2, i + window - window // 2)``
around it (rows and columns alike), until no remaining cell is above ``threshold``. This is the procedure
of MONAI's ``ProbNMS`` (which the tests compare against), in one sort instead of one arg-max per detection.

The CSV has one detection per line, ``prob,X,Y`` with integer level-0 coordinates and no header, the
format the Camelyon16 evaluation script reads.

Example:
    >>> import numpy as np
    >>> prob = np.zeros((10, 10), np.float32); prob[2, 3] = 0.9; prob[2, 4] = 0.8; prob[7, 7] = 0.6
    >>> square_nms(prob, window=3, threshold=0.5).tolist()
    [[0.8999999761581421, 2.0, 3.0], [0.6000000238418579, 7.0, 7.0]]
"""

from pathlib import Path

import numpy as np

from equipath.atomic import atomic_path

__all__ = ["square_nms", "write_detections_csv", "read_detections_csv"]


def square_nms(prob: np.ndarray, window: int, threshold: float = 0.5) -> np.ndarray:
    """Detections ``(N, 3)`` float64 rows ``(probability, i, j)``, most probable first.

    Args:
        prob: ``(rows, cols)`` probability map.
        window: side of the suppression square in cells (>= 1).
        threshold: only cells with probability strictly above it are reported. Defaults to 0.5.
    """
    prob = np.asarray(prob)
    if prob.ndim != 2:
        raise ValueError(f"square_nms: expected a (rows, cols) map, got shape {prob.shape}")
    if not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"square_nms: window must be a positive int, got {window!r}")
    lo, hi = window // 2, window - window // 2
    flat = prob.ravel()
    candidates = np.flatnonzero(flat > threshold)
    order = candidates[np.argsort(-flat[candidates], kind="stable")]
    suppressed = np.zeros(prob.shape, dtype=bool)
    rows, cols = prob.shape
    found = []
    for index in order:
        i, j = divmod(int(index), cols)
        if suppressed[i, j]:
            continue
        found.append((float(flat[index]), i, j))
        suppressed[max(i - lo, 0):min(i + hi, rows), max(j - lo, 0):min(j + hi, cols)] = True
    return np.array(found, dtype=np.float64).reshape(-1, 3)


def write_detections_csv(path, probs, xs, ys) -> Path:
    """Write ``prob,X,Y`` lines (level-0 integer coordinates, no header), atomically."""
    probs, xs, ys = (np.asarray(a).reshape(-1) for a in (probs, xs, ys))
    if not len(probs) == len(xs) == len(ys):
        raise ValueError(f"write_detections_csv: probs, xs and ys differ in length ({len(probs)}, {len(xs)}, {len(ys)})")
    lines = "".join(f"{p:.6f},{int(round(x))},{int(round(y))}\n" for p, x, y in zip(probs, xs, ys))
    with atomic_path(path) as tmp:
        tmp.write_text(lines)
    return Path(path)


def read_detections_csv(path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a Camelyon16 detection CSV (``prob,X,Y`` per line; a header line is skipped).

    Returns:
        ``(probs float64 (N,), xs int64 (N,), ys int64 (N,))``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"detection file {path} does not exist")
    probs, xs, ys = [], [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = [f.strip() for f in line.split(",")]
        if not line.strip() or (number == 1 and fields[0].lower() in ("prob", "probability", "confidence")):
            continue
        try:
            p, x, y = float(fields[0]), int(float(fields[1])), int(float(fields[2]))
        except (ValueError, IndexError, OverflowError):
            raise ValueError(f"{path}, line {number}: expected 'prob,X,Y' with numbers, got {line[:80]!r}") from None
        if not (0 <= x < 2**31 and 0 <= y < 2**31):
            raise ValueError(f"{path}, line {number}: X, Y must be level-0 pixels in [0, 2**31), got {x}, {y}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{path}, line {number}: probability {p} is not in [0, 1]")
        probs.append(p)
        xs.append(x)
        ys.append(y)
    return np.array(probs, dtype=np.float64), np.array(xs, dtype=np.int64), np.array(ys, dtype=np.int64)
