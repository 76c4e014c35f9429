"""Atomic output: every file equipath writes appears whole or not at all. It is written to a temporary
file in the target's folder, then ``os.replace``-d into place; on failure the temporary file is removed and
the target is untouched.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> path = atomic_write(Path(tempfile.mkdtemp()) / "table.csv", "a,b\\n1,2\\n")
    >>> path.read_text()
    'a,b\\n1,2\\n'
"""

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_path", "atomic_write"]


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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix or ".tmp", dir=path.parent)
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
