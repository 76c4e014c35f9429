"""Atomic output: every file equipath writes appears whole or not at all. It is written to a temporary
file in the target's folder, then ``os.replace``-d into place; on failure the temporary file is removed and
the target is untouched.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> path = atomic_write(Path(tempfile.mkdtemp()) / "table.csv", "a,b\\n1,2\\n")
    >>> path.read_text()
    'a,b\\n1,2\\n'
    >>> write_json(path.with_name("scores.json"), {"auc": float("nan"), "n": 3}).read_text()
    '{\\n  "auc": null,\\n  "n": 3\\n}\\n'
    >>> write_csv(path.with_name("rows.csv"), [{"a": 1, "b": [2, 3]}, {"a": float("nan"), "c": None}]).read_text()
    'a,b,c\\n1,2;3,\\n,,\\n'

A killed process leaves its temporary file, hidden and named ``.{name}.tmp-*``;
:func:`equipath.outdir.remove_stale_temporaries` removes them on the next run.
"""

import contextlib
import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_path", "atomic_write", "write_json", "json_text", "json_safe", "write_csv", "save_figure", "FIGURE_DPI"]

FIGURE_DPI = 120  # every figure equipath writes


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path`` (same suffix, for writers that read it); on success it
    replaces ``path`` with the usual file permissions, on failure it is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix=path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs are meant to be shared
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path, content) -> Path:
    """Write ``content`` (``str``, ``bytes``, or a callable that writes to the binary file object it is
    given) to ``path`` atomically. Returns ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        if callable(content):
            content(f)
        else:
            f.write(content.encode() if isinstance(content, str) else content)
    return Path(path)


def json_safe(value):
    """``value`` with only JSON types: non-finite floats as ``None``, tuples as lists, numpy scalars and
    arrays as numbers and lists, paths as strings (recursively)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k if isinstance(k, (str, int, bool)) or k is None else str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # numpy scalar or array, torch tensor
        return json_safe(value.tolist())
    return value


def json_text(data, indent: int | None = None) -> str:
    """``data`` as strict JSON text: NaN and infinities as ``null`` (:func:`json_safe`), never ``NaN``; what
    the viewer serves and :func:`write_json` writes.

    Example:
        >>> json_text({"p": float("nan"), "xy": (1, float("inf"))})
        '{"p": null, "xy": [1, null]}'
    """
    return json.dumps(json_safe(data), indent=indent, allow_nan=False)


def write_json(path, data, indent: int | None = 2) -> Path:
    """Write ``data`` as strict JSON (:func:`json_text`) to ``path`` atomically. This is the one JSON writer
    of equipath's outputs. Returns ``path``."""
    return atomic_write(path, json_text(data, indent) + "\n")


def write_csv(path, rows: list[dict], columns: list | None = None) -> Path:
    """Write dict rows as CSV atomically: ``columns`` (default: every key, in first-seen order; keys not in
    ``columns`` are left out), lists and tuples joined by ``;``, missing values and NaN empty. The one CSV
    writer of equipath's tables. Returns ``path``."""
    columns = list(columns) if columns is not None else list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ";".join(map(str, v)) if isinstance(v, (list, tuple))
                         else "" if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()})
    return atomic_write(path, buffer.getvalue())


def save_figure(fig, path, dpi: int = FIGURE_DPI) -> Path:
    """Save a matplotlib figure atomically (format from the suffix, tight bounding box, :data:`FIGURE_DPI`)
    and close it (a pyplot figure is released; a bare ``Figure`` is simply dropped). The one figure writer
    of equipath. Returns ``path``."""
    path = Path(path)
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format=path.suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight")
    finally:
        import matplotlib.pyplot as plt  # only when a figure is written: importing equipath.atomic stays light

        plt.close(fig)
    return atomic_write(path, buffer.getvalue())
