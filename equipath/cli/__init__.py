"""The ``equipath`` command line. Each subcommand lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``func(args) -> int``; every module here is
registered, in alphabetical order, except those whose name starts with ``_`` (shared helpers).

User errors (bad files, bad arguments) end the program with one line on stderr and exit status 2, never
a traceback; everything else is a bug and keeps its traceback.
"""

import argparse
import importlib
import logging
import pkgutil
import sys

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
    except (ValueError, OSError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"equipath {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"equipath {args.command}: interrupted", file=sys.stderr)
        return 130
