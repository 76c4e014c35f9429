"""Accumulating metrics (the MONAI pattern) and percentile-bootstrap confidence intervals.

A metric turns each batch into per-item *records* (one row per patch, image or slide), keeps them, and
computes its values from all records at once. Because the values are a function of the records, the same
function gives bootstrap confidence intervals: resample the items with replacement and recompute.

Example:
    >>> import numpy as np
    >>> records = {"correct": np.array([1.0, 0.0, 1.0, 1.0])}
    >>> compute = lambda r: {"accuracy": float(r["correct"].mean())}
    >>> ci = bootstrap_ci(compute, records, n=200, seed=0)
    >>> lo, hi = ci["accuracy"]
    >>> 0.0 <= lo <= 0.75 <= hi <= 1.0
    True
"""

import math
from collections.abc import Callable

import numpy as np

__all__ = ["Metric", "bootstrap_ci", "concat_records"]

Records = dict[str, np.ndarray]


def concat_records(parts: list[Records]) -> Records:
    """Concatenate per-batch records along their first (item) axis."""
    if not parts:
        return {}
    return {key: np.concatenate([p[key] for p in parts], axis=0) for key in parts[0]}


def bootstrap_ci(compute: Callable[[Records], dict], records: Records, n: int = 2000, confidence: float = 0.95,
                 seed: int = 0) -> dict[str, tuple[float, float]]:
    """Percentile-bootstrap interval of every value ``compute`` returns.

    Items (rows of every array in ``records``) are drawn ``m`` at a time with replacement, ``n`` times, from a
    generator seeded with ``seed``; the interval is the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2``
    quantiles of the ``n`` recomputed values (NaN resamples, e.g. an AUC of a one-class resample, are skipped).

    Args:
        compute: maps records to ``{name: float}``.
        records: ``{name: (m, ...) array}``, every array with the same first axis.
        n: number of resamples. Defaults to 2000 (seed 000).
        confidence: coverage of the interval. Defaults to 0.95.
        seed: seed of the resampling. Defaults to 0.

    Returns:
        ``{name: (low, high)}``; ``(nan, nan)`` when every resample was NaN.
    """
    if n < 1:
        raise ValueError(f"bootstrap: n must be a positive number of resamples, got {n}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"bootstrap: confidence must lie in (0, 1), got {confidence}")
    sizes = {len(v) for v in records.values()}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(f"bootstrap: records need one common, non-zero number of items, got sizes {sorted(sizes)}")
    m = sizes.pop()
    rng = np.random.default_rng(seed)
    values: dict[str, list[float]] = {}
    for _ in range(n):
        idx = rng.integers(0, m, m)
        for key, value in compute({k: v[idx] for k, v in records.items()}).items():
            values.setdefault(key, []).append(value)
    q = ((1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0)
    out = {}
    for key, vals in values.items():
        vals = np.asarray(vals, dtype=np.float64)
        vals = vals[~np.isnan(vals)]
        out[key] = tuple(float(v) for v in np.quantile(vals, q)) if len(vals) else (math.nan, math.nan)
    return out


class Metric:
    """Base of the accumulating metrics: ``metric(batch...)`` records a batch, ``aggregate()`` computes the
    values over everything recorded, ``bootstrap()`` their confidence intervals, ``reset()`` forgets.

    Subclasses implement ``records(*batch) -> {name: (items, ...) array}`` and
    ``compute(records) -> {name: float}`` (the family's pure function applied to records).
    """

    def __init__(self):
        self._parts: list[Records] = []

    def records(self, *batch) -> Records:
        raise NotImplementedError

    def compute(self, records: Records) -> dict[str, float]:
        raise NotImplementedError

    def __call__(self, *batch) -> Records:
        part = self.records(*batch)
        self._parts.append(part)
        return part

    def reset(self) -> None:
        self._parts = []

    def __len__(self) -> int:
        """Number of items recorded so far."""
        return sum(len(next(iter(p.values()))) for p in self._parts)

    def all_records(self) -> Records:
        """Every record so far, concatenated over batches."""
        if not self._parts:
            raise ValueError(f"{type(self).__name__}: nothing recorded yet")
        return concat_records(self._parts)

    def aggregate(self) -> dict[str, float]:
        return self.compute(self.all_records())

    def bootstrap(self, n: int = 2000, confidence: float = 0.95, seed: int = 0) -> dict[str, tuple[float, float]]:
        """Percentile-bootstrap intervals of :meth:`aggregate`'s values, resampling items (see :func:`bootstrap_ci`)."""
        return bootstrap_ci(self.compute, self.all_records(), n=n, confidence=confidence, seed=seed)
