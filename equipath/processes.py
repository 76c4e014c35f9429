"""Worker processes that die with the process that started them.

A worker blocked on its task queue never notices that its parent was killed (``kill -9`` runs no clean-up
code), and would finish the job unsupervised. :func:`die_with_parent`, called first in a worker
(``ProcessPoolExecutor(initializer=...)``), ends the worker when its parent goes:

* Linux: the kernel sends ``SIGKILL`` on the parent's death (``prctl(PR_SET_PDEATHSIG)``);
* everywhere (the only means elsewhere): a daemon thread checks every ``interval`` seconds that the parent
  is still alive (on POSIX: ``os.getppid()`` still names it; on Windows: its process handle is not
  signalled) and ends the worker with ``os._exit`` otherwise.

The multiprocessing helper a spawned pool starts (its resource tracker) exits on its own once the last
process holding its pipe is gone.

Example:
    First thing in a worker; the parent passes its pid:

    >>> import os
    >>> die_with_parent(os.getppid())  # doctest: +SKIP
"""

import ctypes
import logging
import os
import sys
import threading

__all__ = ["die_with_parent"]

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_SIGKILL = 9


def _parent_alive(parent: int) -> bool:
    if sys.platform == "win32":
        kernel = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel.OpenProcess(0x00100000, False, parent)  # SYNCHRONIZE
        if not handle:
            return False
        try:
            return kernel.WaitForSingleObject(handle, 0) != 0  # WAIT_OBJECT_0: the process ended
        finally:
            kernel.CloseHandle(handle)
    return os.getppid() == parent


def _watch(parent: int, interval: float) -> None:
    stop = threading.Event()
    while not stop.wait(interval):
        if not _parent_alive(parent):
            os._exit(1)


def die_with_parent(parent: int, interval: float = 1.0) -> None:
    """End this process when the process ``parent`` (its parent's pid, passed by the parent) dies."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0) != 0:
                log.debug("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
        except (OSError, AttributeError):
            log.debug("prctl is not available; watching the parent instead")
    if not _parent_alive(parent):  # the parent died before the signal was armed
        os._exit(1)
    threading.Thread(target=_watch, args=(parent, interval), daemon=True, name="die-with-parent").start()
