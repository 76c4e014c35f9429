"""A small Markdown report builder: a title, an optional banner, and sections of Markdown added in order;
figures are saved next to the report and linked by relative path. Everything is written atomically.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> report = Report("Results", banner="SYNTHETIC DATA")
    >>> report.add_section("Metrics", markdown_table(["model", "AUC"], [["p4m_densenet", 0.91]]))
    >>> path = report.write(Path(tempfile.mkdtemp()) / "report.md")
    >>> print(path.read_text().splitlines()[6])
    | model | AUC |
"""

import math
from dataclasses import dataclass
from pathlib import Path

from equipath.atomic import atomic_write, save_figure  # noqa: F401  (save_figure: the one figure writer)

__all__ = ["Report", "Section", "markdown_table", "format_value", "save_figure"]


@dataclass(frozen=True)
class Section:
    """One section: a ``##`` heading and its Markdown body."""

    title: str
    body: str

    def to_markdown(self) -> str:
        return f"## {self.title}\n\n{self.body.strip()}\n"


class Report:
    """Sections in the order they are added, under a ``#`` title and a blockquote ``banner``."""

    def __init__(self, title: str, banner: str | None = None):
        self.title, self.banner = title, banner
        self.sections: list[Section] = []

    def add_section(self, title: str, body: str) -> None:
        self.sections.append(Section(title, body))

    def to_markdown(self) -> str:
        parts = [f"# {self.title}\n"]
        if self.banner:
            parts.append("\n".join(f"> {line}" if line else ">" for line in self.banner.splitlines()) + "\n")
        parts += [s.to_markdown() for s in self.sections]
        return "\n".join(parts)

    def write(self, path) -> Path:
        return atomic_write(path, self.to_markdown())


def format_value(value, digits: int = 4) -> str:
    """Numbers with ``digits`` decimals (scientific below 1e-3), NaN as ``-``, anything else as ``str``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "-"
    return f"{value:.2e}" if value != 0 and abs(value) < 1e-3 else f"{value:.{digits}f}"


def markdown_table(header: list, rows: list) -> str:
    """A Markdown table; cells formatted by :func:`format_value`."""
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(format_value(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"

