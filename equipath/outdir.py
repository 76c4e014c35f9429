"""Output folders that untrusted input cannot escape and that two runs cannot share.

Every command that writes a folder of results goes through this module:

* :func:`safe_name` turns an untrusted name (a slide's file name) into a folder name that stays inside its
  parent: a safe name is kept as it is; otherwise every unsafe character (path separators, control
  characters, ``<>:"|?*``), every leading dot and every trailing dot or space becomes ``_``, and ``-`` plus
  the first 8 hex digits of the SHA-256 of the original name is appended, so two different names never
  map to one folder. Windows device names (``CON``, ``NUL``, ``COM1``, ...), names the caller reserves for
  its own files and names longer than :data:`MAX_NAME_BYTES` get the same suffix (long names are cut first).
  An empty name is refused. ``...svs`` (stem ``..``) becomes ``__-<hash>``, never the parent folder.
* :func:`confined` resolves a path and raises ``ValueError`` unless it lies inside the output folder;
  :func:`remove` deletes nothing else. Every delete or overwrite of a command goes through them.
* :class:`OutputLock` is held for the whole run: a lock file in the folder naming the process, host and
  command. A second run into the same folder fails at once with one line naming the first. The lock is an
  OS file lock (``flock``; ``msvcrt.locking`` on Windows), which the kernel drops when its process dies,
  so the lock file of a killed run is taken over by the next.
* A run record (:func:`check_record`) stores what the results depend on (options, checkpoint hash) beside
  them; a resume with anything else is refused in one line instead of mixing two models in one folder.
* A completion marker (:func:`mark_done`, :func:`is_done`): a folder counts as finished only when its
  marker is there, never because it exists.

Example:
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> safe_name("tumor_001"), safe_name("..")
    ('tumor_001', '__-5ec1f7e7')
    >>> with OutputLock(root / "run"):
    ...     folder = confined(root / "run" / safe_name(".."), root / "run")
    ...     folder.mkdir(); _ = mark_done(folder)
    >>> is_done(folder), folder.parent == (root / "run").resolve()
    (True, True)
"""

import contextlib
import datetime
import hashlib
import json
import logging
import os
import shutil
import socket
import sys
from pathlib import Path

from equipath.atomic import json_safe, write_json

__all__ = ["safe_name", "confined", "remove", "check_writable", "OutputLock", "FolderInUse", "check_record",
           "file_sha256", "mark_done", "is_done", "remove_stale_temporaries", "DONE_MARKER", "LOCK_FILE",
           "MAX_NAME_BYTES"]

log = logging.getLogger(__name__)

DONE_MARKER = ".done"
LOCK_FILE = ".equipath.lock"
MAX_NAME_BYTES = 160  # room for the ``.{name}.partial-{pid}`` siblings within the usual 255-byte limit
_UNSAFE = set('<>:"/\\|?*')
_DEVICES = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10))}


def safe_name(name, reserved=()) -> str:
    """A folder name for ``name`` that cannot leave its parent or collide (see the module docstring).

    Args:
        name: the untrusted name (e.g. a slide file's stem).
        reserved: names the caller's own files use in the same folder (compared case-insensitively).

    Raises:
        ValueError: ``name`` is empty.
    """
    name = str(name)
    if not name:
        raise ValueError("an output name is empty (a file named only by its extension?)")
    cleaned = "".join("_" if c in _UNSAFE or ord(c) < 32 or 127 <= ord(c) < 160 else c for c in name)
    body = cleaned.lstrip(".")
    cleaned = "_" * (len(cleaned) - len(body)) + body
    tail = cleaned.rstrip(". ")
    cleaned = tail + "_" * (len(cleaned) - len(tail))
    too_long = len(cleaned.encode()) > MAX_NAME_BYTES
    if too_long:
        cleaned = cleaned.encode()[:MAX_NAME_BYTES - 9].decode(errors="ignore")
    device = cleaned.split(".")[0].rstrip(" ").upper() in _DEVICES
    taken = cleaned.casefold() in {str(r).casefold() for r in reserved}
    if cleaned == name and not (too_long or device or taken):
        return name
    return f"{cleaned}-{hashlib.sha256(name.encode(errors='surrogateescape')).hexdigest()[:8]}"


def confined(path, root, *, allow_root: bool = False) -> Path:
    """``path`` made absolute (its folder resolved, symbolic links included), checked to lie inside ``root``.

    The last component is not followed: a symbolic link inside ``root`` is itself inside (deleting or
    replacing it touches only the link). Raises ``ValueError`` naming both when ``path`` is outside
    ``root``, or is ``root`` itself unless ``allow_root``."""
    root = Path(root).resolve()
    path = Path(path)
    if path.name in ("", ".", ".."):
        resolved = path.resolve()
    else:
        resolved = path.absolute().parent.resolve() / path.name
    if resolved == root and allow_root:
        return resolved
    if resolved == root or not resolved.is_relative_to(root):
        raise ValueError(f"refusing to delete or overwrite {path}: it is not inside the output folder {root}")
    return resolved


def remove(path, root) -> None:
    """Delete the file, link or folder ``path`` after checking it lies inside ``root`` (:func:`confined`);
    nothing when it does not exist."""
    path = confined(path, root)
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path)


def check_writable(folder) -> None:
    """``OSError`` naming ``folder`` unless it is, or can be made, a writable folder (nothing is created)."""
    folder = Path(folder).absolute()
    parent = folder
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OSError(f"output folder {folder}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OSError(f"output folder {folder} is not writable ({parent} does not allow writing)")


# ------------------------------------------------------------------------------------------------- locks
class FolderInUse(OSError):
    """Another live process holds the output folder's lock."""


_HELD: dict[str, list] = {}  # lock path -> [fd, depth]: a process may re-enter its own lock


def _try_lock(fd: int) -> bool:
    """Lock ``fd`` without waiting; False when another process holds it."""
    try:
        if sys.platform == "win32":
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):
        return False
    except OSError as exc:  # a file system without locks (some network mounts): warn, do not stop the run
        log.warning("cannot lock %s (%s); make sure no other run uses this folder", fd, exc.strerror)
    return True


class OutputLock:
    """Hold ``folder`` (created if needed) for one run: ``with OutputLock(folder): ...``.

    A second run entering the same folder while the first holds it raises :class:`FolderInUse` (an
    ``OSError``) naming the first run's pid, host, command and start time. The lock dies with its process,
    so after a crash the next run takes it over. Re-entering in the same process is allowed. On leaving,
    the lock file is removed, and so are the folders entering created when they are still empty (a run
    that fails before writing anything leaves nothing behind).

    Args:
        folder: the output folder.
        name: the lock file's name. Defaults to :data:`LOCK_FILE`; runs sharing a folder on purpose
            (ranks of one job) use one name each.
        command: what the run is, for the other run's message. Defaults to this process's command line.
    """

    def __init__(self, folder, name: str = LOCK_FILE, command: str | None = None):
        self.folder = Path(folder)
        self.path = self.folder / name
        self.command = command if command is not None else " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
        self._created: list[Path] = []

    def __enter__(self) -> "OutputLock":
        check_writable(self.folder)
        key = str(self.path.absolute())
        if key in _HELD:
            _HELD[key][1] += 1
            return self
        while True:
            self._created, missing = [], self.folder.absolute()
            while not missing.exists():
                self._created.append(missing)
                missing = missing.parent
            self.folder.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # the folder was removed by a run leaving it empty: make it again
                continue
            if not _try_lock(fd):
                os.close(fd)
                raise FolderInUse(f"output folder {self.folder} is in use by {self._holder()}; wait for it to "
                                  "finish or use another output folder")
            try:  # the holder may have removed the file between our open and our lock: lock the current one
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(info) + "\n").encode())
        _HELD[key] = [fd, 1]
        return self

    def __exit__(self, *exc) -> None:
        key = str(self.path.absolute())
        _HELD[key][1] -= 1
        if _HELD[key][1]:
            return
        fd = _HELD.pop(key)[0]
        if sys.platform == "win32":
            os.close(fd)
            with contextlib.suppress(OSError):
                self.path.unlink()
        else:
            self.path.unlink(missing_ok=True)
            os.close(fd)
        for folder in self._created:  # deepest first
            try:
                folder.rmdir()
            except OSError:
                break
        self._created = []

    def _holder(self) -> str:
        try:
            info = json.loads(self.path.read_text())
            return f"process {info['pid']} on {info['host']} (`{info['command']}`, started {info['started']})"
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"


# ---------------------------------------------------------------------------------- records and markers
def file_sha256(path, chunk: int = 1 << 20) -> str:
    """The SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _first_difference(before, now, where: str = ""):
    if isinstance(before, dict) and isinstance(now, dict):
        for key in sorted(before.keys() | now.keys(), key=str):
            found = _first_difference(before.get(key), now.get(key), f"{where}.{key}" if where else str(key))
            if found:
                return found
        return None
    return None if before == now else (where or "record", before, now)


def check_record(path, record: dict, key: str = "made_with", hint: str = "") -> None:
    """Refuse to add results made differently to a folder: ``ValueError`` (one line naming the first
    differing entry and both values) when the JSON file ``path`` exists and its ``key`` differs from
    ``record``'s. Nothing when the file does not exist or has no ``key`` (an older version made it).

    ``record[key]`` holds only what the results depend on (options, the checkpoint's hash); the caller
    writes ``record`` to ``path`` after this check."""
    path = Path(path)
    if not path.is_file():
        return
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not readable JSON ({exc.__class__.__name__}); {hint}".rstrip("; ")) from None
    if not isinstance(stored, dict) or key not in stored:
        return
    found = _first_difference(stored[key], json_safe(record[key]))
    if found:
        what, before, now = found
        raise ValueError(f"{path.parent} was made with {what} = {before!r}, this run has {now!r}"
                         + (f"; {hint}" if hint else ""))


def mark_done(folder, **info) -> Path:
    """Write the completion marker of ``folder`` (with ``info`` and the time) as its last file."""
    return write_json(Path(folder) / DONE_MARKER,
                      {"finished": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), **info})


def is_done(folder) -> bool:
    """Whether ``folder`` is a finished output folder: a folder (not a link) holding its completion marker."""
    folder = Path(folder)
    return folder.is_dir() and not folder.is_symlink() and (folder / DONE_MARKER).is_file()


def remove_stale_temporaries(folder) -> list[Path]:
    """Delete the temporary files killed writes left in ``folder`` (not recursive): the hidden
    ``.{name}.tmp-*`` files of :func:`equipath.atomic.atomic_path`. Call it while holding the folder's
    :class:`OutputLock`, so no live writer owns them. Returns what was removed."""
    folder = Path(folder)
    removed = [p for p in folder.glob(".*.tmp-*") if p.is_file() and not p.is_symlink()] if folder.is_dir() else []
    for path in removed:
        path.unlink(missing_ok=True)
    if removed:
        log.info("removed %d temporary file(s) of an interrupted run in %s", len(removed), folder)
    return removed
