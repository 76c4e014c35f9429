"""The ``equipath`` command line. Each subcommand lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``func(args) -> int``; every module here is
registered, in alphabetical order, except those whose name starts with ``_`` (shared helpers).

User errors end the program with one line on stderr, ``equipath CMD: error: ...``, and exit status 2,
never a traceback (``-v`` adds it, for a bug report). A user error is any exception a user's input can
cause: ``ValueError`` and ``OSError`` (bad files and values, named in the message), ``KeyError`` (an
unknown key), ``ImportError`` of an optional package (OpenSlide, ...), ``MemoryError`` and a device's
out-of-memory error (a batch or input too large), ``OverflowError`` (a number too large),
``RecursionError`` (input nested too deeply) and ``TypeError`` (a value of the wrong type that slipped
past validation). Everything else is a bug and keeps its traceback; so does an ``ImportError`` of
equipath's own modules.
"""

import argparse
import importlib
import logging
import pkgutil
import sys
import traceback

from equipath import __version__

log = logging.getLogger("equipath")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="equipath",
        description="Rotation- and reflection-equivariant deep learning for computational pathology.",
    )
    parser.add_argument("--version", action="version", version=f"equipath {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):  # shared helpers (e.g. _options), not commands
            continue
        importlib.import_module(f"{__name__}.{info.name}").register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except Exception as exc:  # noqa: BLE001 - sorted into user errors (one line) and bugs (re-raised)
        message = user_error(exc)
        if message is None:
            raise
        if args.verbose:
            traceback.print_exc(file=sys.stderr)
        print(f"equipath {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"equipath {args.command}: interrupted", file=sys.stderr)
        return 130


_BUG_HINT = "if the input looks right, this is a bug: run with -v and report the traceback"


def user_error(exc: BaseException) -> str | None:
    """The one-line message of an exception a user's input can cause (see the module docstring), or None
    for a bug."""
    if isinstance(exc, ImportError):
        name = getattr(exc, "name", None) or ""
        if name == "equipath" or name.startswith("equipath."):
            return None
        return f"{_first_line(exc)} (an optional package is missing: install it, see the README)"
    if isinstance(exc, KeyError):
        return str(exc.args[0]) if exc.args else "unknown key"
    if isinstance(exc, (ValueError, OSError)):
        return _first_line(exc)
    if isinstance(exc, MemoryError) or _out_of_memory(exc):
        return f"out of memory ({exc.__class__.__name__}: {_first_line(exc)}); try a smaller --batch-size or input"
    if isinstance(exc, OverflowError):
        return f"a number is too large ({_first_line(exc)})"
    if isinstance(exc, RecursionError):
        return "the input is nested too deeply (RecursionError)"
    if isinstance(exc, TypeError):
        return f"a value has the wrong type ({_first_line(exc)}); {_BUG_HINT}"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def _out_of_memory(exc: BaseException) -> bool:
    """torch's out-of-memory errors (``torch.OutOfMemoryError``, or the CPU allocator's ``RuntimeError``)."""
    text = str(exc)
    return isinstance(exc, RuntimeError) and (exc.__class__.__name__ == "OutOfMemoryError" or "out of memory" in text
                                              or "can't allocate memory" in text or "not enough memory" in text)
