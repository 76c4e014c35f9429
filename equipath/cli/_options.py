"""The flags every ``equipath`` command shares, each with one spelling (the CLI loader skips this module).

A command adds the ones it needs, e.g. ``add_device(parser)``; the spellings are:

- ``--model NAME`` (repeatable: ``--model a --model b``) where models are named;
- ``--set KEY=VALUE`` (repeatable) config overrides, dotted keys for nested values (``data.root=/x``);
- ``--no-progress`` hides progress bars (``args.progress`` is then False);
- ``--device`` ``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``; default ``auto``,
  resolved by :func:`resolve_device`;
- ``--batch-size N``, ``--workers N``, ``--seed N``, ``--out PATH``.

``tests/test_cli_grammar.py`` checks every subcommand against these spellings.
"""

import argparse

__all__ = ["COMMON_FLAGS", "add_model", "add_set", "add_progress", "add_device", "add_batch_size", "add_workers",
           "add_seed", "add_out", "parse_sets", "resolve_device", "positive_int"]

# flag -> the spelling it replaced in some command (the grammar test refuses the old ones)
COMMON_FLAGS = {"--model": "--models", "--set": None, "--no-progress": "--progress", "--device": None,
                "--batch-size": "--batch", "--workers": None, "--seed": "--seeds", "--out": None}


def _int_at_least(minimum: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = what.replace(" ", "_")
    return parse


positive_int = _int_at_least(1, "a positive integer")  # an argparse type: an integer >= 1
_non_negative_int = _int_at_least(0, "an integer >= 0")


def unit_interval(text: str) -> float:
    """An argparse type: a number in [0, 1] (NaN refused)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def add_model(parser, help: str = "model name (repeatable: --model a --model b)", required: bool = False,
              metavar: str = "NAME"):
    """``--model NAME``, repeatable; ``args.model`` is a list (or None when not given)."""
    return parser.add_argument("--model", action="append", metavar=metavar, required=required, help=help)


def add_set(parser, help: str = "override a config key (repeatable), e.g. epochs=3 or data.root=/data"):
    """``--set KEY=VALUE``, repeatable; ``args.set`` is a list of strings (empty when not given)."""
    return parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=help)


def add_progress(parser, help: str = "hide progress bars"):
    """``--no-progress``; ``args.progress`` is True unless it is given."""
    return parser.add_argument("--no-progress", dest="progress", action="store_false", help=help)


def add_device(parser, help: str = "auto (CUDA when available, else the CPU), cpu, cuda or cuda:N (default: auto)"):
    """``--device`` with default ``auto``; resolve it with :func:`resolve_device`."""
    return parser.add_argument("--device", default="auto", help=help)


def add_batch_size(parser, default: int | None, help: str | None = None):
    """``--batch-size N`` (N >= 1)."""
    return parser.add_argument("--batch-size", type=positive_int, default=default,
                               help=help or f"items per forward pass (default: {default})")


def add_workers(parser, default: int = 0, help: str | None = None):
    """``--workers N`` (N >= 0)."""
    return parser.add_argument("--workers", type=_non_negative_int, default=default,
                               help=help or f"worker processes (default: {default})")


def add_seed(parser, default: int = 0, help: str | None = None):
    """``--seed N``."""
    return parser.add_argument("--seed", type=int, default=default, help=help or f"random seed (default: {default})")


def add_out(parser, help: str = "output folder", required: bool = False, default=None):
    """``--out PATH``."""
    return parser.add_argument("--out", required=required, default=default, metavar="PATH", help=help)


def parse_sets(pairs) -> dict[str, str]:
    """``["a.b=1", "c=x"]`` -> ``{"a.b": "1", "c": "x"}`` (values stay text); ``ValueError`` for a pair
    without ``=`` or with an empty key."""
    out = {}
    for pair in pairs or ():
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"--set {pair}: expected KEY=VALUE")
        out[key.strip()] = value
    return out


def resolve_device(name: str):
    """The ``torch.device`` of a ``--device`` value (``auto``: CUDA when available, else the CPU)."""
    from equipath.training.distributed import resolve_device as resolve

    return resolve(name)
