"""One grammar for every command: the shared flags have one spelling and one meaning everywhere.

Read from the parser (``equipath.cli.build_parser``), not from the docs: every leaf command (``train``,
``analyze tta``, ``synth pcam``, ...) must be listed in ``EXPECTED`` with the shared flags it takes, and
each shared flag must behave as ``equipath.cli._options`` defines it:

- ``--model NAME`` repeatable (``--model a --model b``), never ``--models a b``;
- ``--set KEY=VALUE`` repeatable config overrides, never ``--key value``;
- ``--no-progress`` a switch, never ``--progress false``;
- ``--device`` defaulting to ``auto`` (config-backed commands: the config's value, itself ``auto``);
- ``--batch-size`` / ``--workers`` / ``--seed`` integers, never ``--batch`` / ``--seeds``;
- ``--out PATH`` for what a command writes.

A new command fails ``test_every_command_is_listed`` until its shared flags are written down here.
"""

import argparse
import re

import pytest

from equipath.cli import build_parser, main

SHARED = {"--model", "--set", "--no-progress", "--device", "--batch-size", "--workers", "--seed", "--out"}
# spellings of the same things that some commands used to have
FORBIDDEN = {"--models", "--batch", "--progress", "--seeds", "--out-dir", "--out_dir", "--output", "--batch_size",
             "--no_progress", "--num-workers", "--n-workers", "--jobs", "--gpu", "--cuda", "--cpu", "--threads-per-worker"}

RUNS = {"--model", "--device", "--seed", "--out", "--no-progress"}  # the analyses of models
EXPECTED = {
    "analyze equivariance": RUNS | {"--batch-size"},
    "analyze stability": RUNS | {"--batch-size"},
    "analyze tta": RUNS | {"--batch-size"},
    "analyze efficiency": {"--model", "--set", "--seed", "--out", "--no-progress"},
    "analyze redundancy": RUNS,
    "cells synth": {"--out", "--seed", "--no-progress"},
    "cells train": {"--set", "--out", "--device", "--seed", "--batch-size", "--no-progress"},
    "cells evaluate": {"--device", "--seed", "--out"},
    "cells experiment": {"--set", "--out", "--device", "--seed", "--batch-size", "--no-progress"},
    "configs": set(),
    "demo": {"--out", "--seed", "--device", "--no-progress"},
    "evaluate": {"--out", "--batch-size", "--workers", "--device", "--seed", "--no-progress"},
    "froc": {"--seed", "--out"},
    "models": {"--model"},
    "predict": {"--out", "--batch-size", "--device", "--workers", "--no-progress"},
    "predict-slide": {"--out", "--batch-size", "--device", "--workers", "--no-progress"},
    "reproduce": {"--out", "--set", "--device", "--no-progress"},  # --n-seeds: how many seeds per cell
    "synth pcam": {"--out", "--seed", "--workers", "--no-progress"},
    "synth tiles": {"--out", "--seed", "--no-progress"},
    "synth segmentation": {"--out", "--seed", "--no-progress"},
    "synth ocelot": {"--out", "--seed", "--no-progress"},
    "synth preview": {"--out", "--seed"},
    "tiles": {"--out", "--seed", "--no-progress"},
    "train": {"--set", "--out", "--device", "--seed", "--batch-size", "--workers", "--no-progress"},
    "view": set(),
}


def _leaves(parser, prefix=()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield " ".join(prefix), parser
        return
    for action in subs:
        for name, sub in action.choices.items():
            yield from _leaves(sub, prefix + (name,))


LEAVES = dict(_leaves(build_parser()))


def _flags(parser) -> dict:
    return {o: a for a in parser._actions for o in a.option_strings if o.startswith("--") and o != "--help"}


def test_every_command_is_listed():
    assert sorted(LEAVES) == sorted(EXPECTED), \
        f"new: {sorted(set(LEAVES) - set(EXPECTED))}, gone: {sorted(set(EXPECTED) - set(LEAVES))}"


@pytest.mark.parametrize("command", sorted(LEAVES))
def test_command_takes_its_shared_flags_with_one_spelling(command):
    parser, flags = LEAVES[command], _flags(LEAVES[command])
    assert EXPECTED.get(command, set()) <= set(flags), f"{command}: missing {EXPECTED[command] - set(flags)}"
    assert not FORBIDDEN & set(flags), f"{command}: old spellings {FORBIDDEN & set(flags)}"
    for flag in flags:
        assert re.fullmatch(r"--[a-z0-9]+(-[a-z0-9]+)*", flag), f"{command}: {flag} is not lower-case kebab-case"
    has_config = "--set" in flags or "--config" in flags
    for flag in SHARED & set(flags):
        action = flags[flag]
        if flag in ("--model", "--set"):
            assert isinstance(action, argparse._AppendAction), f"{command}: {flag} must be repeatable"
        if flag == "--set":
            assert action.metavar == "KEY=VALUE"
        if flag == "--no-progress":
            assert action.nargs == 0, f"{command}: --no-progress is a switch"
        if flag == "--device":
            assert action.default == "auto" or (action.default is None and has_config and "auto" in action.help), \
                f"{command}: --device must default to auto, got {action.default!r}"
        if flag in ("--batch-size", "--workers", "--seed"):
            assert action.type is not None and action.type("3") == 3, f"{command}: {flag} takes an integer"
        if flag == "--out":
            assert action.nargs is None, f"{command}: --out takes one path"


@pytest.mark.parametrize("command", sorted(LEAVES))
def test_help_lists_the_shared_flags(command, capsys):
    with pytest.raises(SystemExit) as stop:
        main([*command.split(), "-h"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    for flag in EXPECTED.get(command, set()):
        assert re.search(rf"(^|[\s\[,]){re.escape(flag)}\b", text), f"equipath {command} -h does not show {flag}"


def test_the_flags_parse_the_same_everywhere():
    """The same words give the same values in two unrelated commands."""
    a = build_parser().parse_args(["analyze", "tta", "--model", "x", "--model", "y", "--device", "cpu", "--seed", "3",
                                   "--batch-size", "4", "--no-progress", "--out", "o"])
    b = build_parser().parse_args(["evaluate", "--checkpoint", "c.pt", "--data", "d", "--device", "cpu", "--seed", "3",
                                   "--batch-size", "4", "--no-progress", "--out", "o"])
    assert a.model == ["x", "y"]
    for name in ("device", "seed", "batch_size", "out"):
        assert getattr(a, name) == getattr(b, name), name
    assert getattr(a, "progress", None) is False or getattr(a, "no_progress", None) is True
    assert getattr(b, "progress", None) is False or getattr(b, "no_progress", None) is True
