"""The import tiers of the package, read from the source with ``ast`` (nothing is imported).

A module may import modules of its own tier or of a lower one, never of a higher one:

    0 base      equipath (the root: the version), groups, atomic, outdir, processes, configs (the shipped YAML
                files and their lookup), checkpoint (the file format: written atomically, read with
                weights_only; it builds no model)
    1 testing   equipath.testing (the equivariance checker and the output-kind dispatcher; groups only)
    2 nn        equivariant layers
    3 models    architectures, the registry, load_model (a checkpoint -> its model, normalisation in front)
    4 library   data, training, evaluation, wsi, analysis, cells
    5 apps      reproduce, demo, viewer
    6 cli       the command line (and ``python -m equipath``)

Inside tier 4 the packages may use each other, but their dependency graph has no cycle (a cycle means two
packages are one, or a piece sits in the wrong one: e.g. tissue detection lives in ``data`` because both
``wsi`` and ``analysis`` use it). Command modules of ``equipath.cli`` import no other command: what they
share lives in ``equipath.cli._options`` or in the library (``load_yaml`` is in ``equipath.training.config``).

Module-level imports are what importing a module pulls in, so they are held strictly. An import inside a
function runs only when the function does; upward ones are listed in ``LAZY_UPWARD`` with their reason.
"""

import ast
import itertools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "equipath"

TIERS = {
    "equipath": 0, "equipath.groups": 0, "equipath.atomic": 0, "equipath.outdir": 0, "equipath.processes": 0,
    "equipath.checkpoint": 0, "equipath.configs": 0,
    "equipath.testing": 1,
    "equipath.nn": 2,
    "equipath.models": 3,
    "equipath.data": 4, "equipath.training": 4, "equipath.evaluation": 4, "equipath.wsi": 4,
    "equipath.analysis": 4, "equipath.cells": 4,
    "equipath.reproduce": 5, "equipath.demo": 5, "equipath.viewer": 5,
    "equipath.cli": 6, "equipath.__main__": 6,
}
LIBRARY = [name for name, tier in TIERS.items() if tier == 4]

# (importing module, imported module): why a function-level import may point up a tier
LAZY_UPWARD = {
    ("equipath.checkpoint", "equipath.models"):
        "checkpoint.load_model, the documented entry point, forwards to equipath.models.load_model",
}


def _name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, source: str | None = None):
    """``(imported module, module_level)`` for every ``equipath`` import of the file (or of ``source`` read
    as if it were that file)."""
    module = _name(path)
    tree = ast.parse(path.read_text() if source is None else source, str(path))
    top = set(map(id, tree.body))
    top |= {id(n) for stmt in tree.body if isinstance(stmt, (ast.If, ast.Try)) for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                names = [".".join(base + ([node.module] if node.module else []))]
            else:
                names = [node.module or ""]
            # ``from equipath.cli import _options`` imports the submodule
            names += [f"{names[0]}.{a.name}" for a in node.names if (PACKAGE.parent / names[0].replace(".", "/")
                                                                      / f"{a.name}.py").exists()]
        else:
            continue
        for name in names:
            if name == "equipath" or name.startswith("equipath."):
                yield name, id(node) in top


def _tier(module: str) -> tuple[str, int]:
    # the root "equipath" names only itself: an unlisted module must not fall back to tier 0
    key = max((k for k in TIERS if module == k or (k != "equipath" and module.startswith(k + "."))), key=len,
              default=None)
    if key is None:
        raise AssertionError(f"{module} has no tier: add it to TIERS in tests/test_tiers.py (and to the docs)")
    return key, TIERS[key]


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_tier():
    for path in MODULES:
        _tier(_name(path))


def test_imports_point_down_the_tiers():
    wrong = []
    for path in MODULES:
        module = _name(path)
        _, level = _tier(module)
        for imported, module_level in _imports(path):
            key, target = _tier(imported)
            if target <= level:
                continue
            if not module_level and (_tier(module)[0], key) in LAZY_UPWARD:
                continue
            wrong.append(f"{module} (tier {level}) imports {imported} (tier {target})"
                         f"{'' if module_level else ' inside a function'}")
    assert not wrong, "imports against the tiers:\n" + "\n".join(wrong)


def test_the_library_packages_have_no_import_cycle():
    edges = {name: set() for name in LIBRARY}
    for path in MODULES:
        source, level = _tier(_name(path))
        if level != 4:
            continue
        for imported, _ in _imports(path):
            target, target_level = _tier(imported)
            if target_level == 4 and target != source:
                edges[source].add(target)

    def reaches(a, b, seen=()):
        return b in edges[a] or any(reaches(c, b, seen + (a,)) for c in edges[a] if c not in seen)

    cycles = [f"{a} <-> {b}" for a, b in itertools.combinations(LIBRARY, 2) if reaches(a, b) and reaches(b, a)]
    assert not cycles, f"library packages that import each other (both ways): {cycles}; graph: {edges}"


def test_commands_import_no_other_command():
    commands = [p for p in (PACKAGE / "cli").glob("*.py") if not p.name.startswith("_")]
    wrong = [f"{_name(p)} imports {imported}" for p in commands for imported, _ in _imports(p)
             if imported.startswith("equipath.cli.") and not imported.split(".")[2].startswith("_")]
    assert not wrong, wrong


@pytest.mark.parametrize("source, expected", [
    ("from equipath.wsi.tissue import tissue_mask\n", [("equipath.wsi.tissue", True)]),
    ("def f():\n    from .models import create_model\n", [("equipath.models", False)]),
    ("try:\n    import equipath.nn.conv as c\nexcept ImportError:\n    pass\n", [("equipath.nn.conv", True)]),
])
def test_the_checker_sees_module_and_function_level_imports(source, expected):
    """The checker itself: imports planted in the text of a tier-0 module are found, with their level, and
    the tier rule refuses the module-level one."""
    path = PACKAGE / "groups.py"
    assert list(_imports(path, source)) == expected
    assert _tier(expected[0][0])[1] > _tier(_name(path))[1]
