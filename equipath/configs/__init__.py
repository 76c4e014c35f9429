"""The configs shipped inside the package, addressable by name: ``equipath train --config pcam_p4m_densenet``.

Each ``NAME.yaml`` here starts with a comment saying what it runs: the paper row it reproduces (``Seed 000
...``), or for a ``NAME_cpu.yaml`` the CPU-sized sibling of ``NAME`` (small width, batch and epochs, on
SYNTHETIC data unless you point it at the real set). ``equipath configs`` lists them.

Example:
    >>> resolve_config_path("pcam_p4m_densenet").name
    'pcam_p4m_densenet.yaml'
    >>> info = {c.name: c for c in list_configs()}["pcam_p4m_densenet"]
    >>> info.command, info.summary.startswith("Seed 000")
    ('train', True)
"""

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CONFIG_DIR", "ConfigInfo", "list_configs", "resolve_config_path"]

_SENTENCE_END = re.compile(r"(?<!\bal)(?<!\be\.g)(?<!\bi\.e)\.\s+(?=[A-Z`])")

CONFIG_DIR = Path(__file__).parent


@dataclass(frozen=True)
class ConfigInfo:
    """A shipped config: ``name`` (file stem), ``path``, ``command`` that reads it (``train``, ``cells train``
    or ``cells experiment``) and ``summary`` (its header comment, one paragraph)."""

    name: str
    path: Path
    command: str
    summary: str

    @property
    def first_sentence(self) -> str:
        """What the config runs, in one sentence (the paper row, or the CPU-sized sibling's origin)."""
        return _SENTENCE_END.split(self.summary, maxsplit=1)[0].rstrip(".") + "."


def _header(path: Path) -> str:
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if text.startswith("equipath "):  # a usage line, not the description
            continue
        lines.append(text)
    return " ".join(lines)


def list_configs() -> list[ConfigInfo]:
    """Every shipped config, sorted by name."""
    configs = []
    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        name = path.stem
        command = ("cells experiment" if name == "cells_experiment" else "cells train") if name.startswith("cells_") \
            else "train"
        configs.append(ConfigInfo(name, path, command, _header(path)))
    return configs


def resolve_config_path(name_or_path) -> Path:
    """A YAML file path as it is, else the shipped config of that name (``.yaml`` optional).

    Raises:
        FileNotFoundError: neither exists; the message points to ``equipath configs``.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = CONFIG_DIR / (path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml")
    if path.parent == Path(".") and shipped.is_file():
        return shipped
    raise FileNotFoundError(f"config file {name_or_path} does not exist, and no config shipped in the package has "
                            f"that name (equipath configs lists them)")
