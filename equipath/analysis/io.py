"""Writers for the analyses' outputs on top of :func:`equipath.atomic.atomic_write`: every file
appears whole or not at all, so an interrupted run never leaves a half-written table or figure.

Example:
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> path = write_json(Path(tempfile.mkdtemp()) / "out.json", {"synthetic": True, "error": float("inf")})
    >>> json.loads(path.read_text())
    {'synthetic': True, 'error': None}
"""

import csv
import io
import json
import math
from pathlib import Path

from equipath.atomic import atomic_write

__all__ = ["write_json", "write_csv", "save_figure", "SYNTHETIC_LABEL"]

SYNTHETIC_LABEL = "SYNTHETIC DATA"


def _finite(value):
    """Replace non-finite floats by None (strict JSON has no NaN or Infinity), recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_json(path, obj) -> Path:
    """Write ``obj`` as indented strict JSON (NaN and infinities as null) atomically."""
    return atomic_write(path, json.dumps(_finite(obj), indent=2, allow_nan=False) + "\n")


def write_csv(path, rows: list[dict]) -> Path:
    """Write dict rows as CSV (columns in first-seen order, lists joined by ``;``) atomically."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ";".join(map(str, v)) if isinstance(v, (list, tuple)) else v for k, v in row.items()})
    return atomic_write(path, buffer.getvalue())


def save_figure(fig, path, dpi: int = 120) -> Path:
    """Save a matplotlib ``Figure`` atomically (format from the suffix)."""
    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight")
    return atomic_write(path, buffer.getvalue())
