"""A paper table as a declared, resumable plan of runs, and the table it writes.

A :class:`Table` declares its cells (one :class:`Cell` per row, column and seed of the paper's table), the
paper's own numbers (quoted from the seed text), how to prepare its data and how to score a cell.
:func:`run_table` runs the plan in ``OUT``:

    OUT/plan.json              the declared plan (cells, their configs, data); a resume must match it
    OUT/data/                  prepared data (synthetic sets, sampled patches), each with a marker
    OUT/cells/{key}/           one folder per cell: train/ (the trainer's run: it resumes from last.pt),
                               the cell's evaluation, and the completion marker (``.done``) last
    OUT/table.md, table.csv    the table: ours (mean over seeds, bootstrap 95 % interval of that mean,
                               seed standard deviation) beside the paper's numbers, marked as the paper's

A cell whose marker exists is skipped; a killed cell resumes through the trainer's ``last.pt``; a run
into ``OUT`` while another holds it fails at once (:class:`equipath.outdir.OutputLock`). Every number of
a ``--synthetic`` run is labelled SYNTHETIC in both files.

Example:
    >>> from equipath.reproduce import TABLES
    >>> sorted(TABLES)
    ['breakhis', 'camelyon16-table2', 'cells', 'gerunet-table1', 'gunet-dice', 'ocelot-mf1', 'pcam-table1']
"""

import csv
import io
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from equipath.atomic import atomic_write, write_json
from equipath.outdir import OutputLock, check_record, is_done, mark_done, safe_name

__all__ = ["Cell", "Table", "Context", "run_table", "table_rows", "render_markdown", "render_csv"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cell:
    """One run of a table: ``row`` and ``column`` of the paper's table, ``seed``, and the training config
    (a plain dict, from the repository config ``config_file``). ``key`` names its folder."""

    row: str
    column: str
    seed: int
    config: dict
    config_file: str
    options: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        parts = [self.row, self.column, f"seed{self.seed}"]
        return safe_name("_".join(p.replace(" ", "-").replace("%", "pct").replace("+", "plus") for p in parts if p))


@dataclass
class Context:
    """What a run knows: output folder, data root, synthetic or not, device, progress, overrides."""

    out: Path
    data_root: Path | None
    synthetic: bool
    device: str = "auto"
    progress: bool = True
    overrides: dict = field(default_factory=dict)
    n_bootstrap: int = 2000
    data: dict = field(default_factory=dict)  # filled by the table's prepare step


@dataclass(frozen=True)
class Table:
    """A paper table: its cells, metrics, the paper's numbers, and how to prepare, run and score.

    Attributes:
        name: the command's TABLE argument. title: what it reproduces (paper and table).
        metrics: ``(key, label, scale)``: the value ``key`` of a score, printed times ``scale``.
        paper: ``{(row, column): {metric key: value as printed in the paper}}``.
        cells: ``cells(context, seeds) -> list[Cell]``.
        prepare: ``prepare(context) -> dict`` the data every cell uses (recorded in plan.json).
        run_cell: ``run_cell(cell, folder, context) -> None`` writes the cell's evaluation into ``folder``.
        score: ``score(folders, context) -> (values, intervals)``: the metrics of one (row, column) over its
            seeds' folders, with their bootstrap 95 % intervals.
        needs: what real data the table needs (the layout under ``--data-root``), for messages and docs.
        default_seeds: seeds per cell (>= 3 where the paper reports a spread over runs).
    """

    name: str
    title: str
    metrics: tuple
    paper: dict
    cells: Callable
    prepare: Callable
    run_cell: Callable
    score: Callable
    needs: str
    default_seeds: int = 1
    notes: str = ""


def _identity(table: Table, context: Context) -> dict:
    return {"name": table.name, "synthetic": context.synthetic,
            "data_root": None if context.data_root is None else str(context.data_root)}


def _plan_record(cells: list[Cell]) -> dict:
    return {c.key: {"row": c.row, "column": c.column, "seed": c.seed, "config_file": c.config_file,
                    "config": c.config, "options": c.options} for c in cells}


def run_table(table: Table, out, data_root=None, *, synthetic: bool = False, seeds: int | None = None,
              device: str = "auto", progress: bool = True, overrides: dict | None = None,
              n_bootstrap: int = 2000) -> list[dict]:
    """Run (or resume) ``table``'s plan in ``out`` and write ``table.md`` and ``table.csv`` (module docstring).

    Args:
        table: a :class:`Table` (``equipath.reproduce.TABLES``).
        out: the output folder.
        data_root: the real data (layout: ``table.needs``); ignored with ``synthetic``.
        synthetic: run on the procedural generator at a tiny size; every number is labelled SYNTHETIC.
        seeds: seeds per cell. Defaults to ``table.default_seeds``.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``. Defaults to ``auto``.
        progress: progress bars. Defaults to True.
        overrides: ``{dotted config key: value}`` set in every cell's training config (e.g. ``{"epochs": 1}``).
        n_bootstrap: bootstrap resamples of the intervals. Defaults to 2000 (seed 000).

    Returns:
        The table's rows (see :func:`table_rows`).
    """
    out = Path(out)
    if not synthetic:
        if data_root is None:
            raise ValueError(f"reproduce {table.name}: --data-root is required without --synthetic "
                             f"(expected layout: {table.needs})")
        data_root = Path(data_root)
        if not data_root.is_dir():
            raise FileNotFoundError(f"reproduce {table.name}: data root {data_root} does not exist "
                                    f"(expected layout: {table.needs})")
    context = Context(out, None if synthetic else data_root, synthetic, device, progress, dict(overrides or {}),
                      n_bootstrap)
    seeds = table.default_seeds if seeds is None else seeds
    if seeds < 1:
        raise ValueError(f"reproduce: --n-seeds must be >= 1, got {seeds}")
    with OutputLock(out):
        start = time.perf_counter()
        previous = _previous_seconds(out)
        hint = "use another --out for a different plan"
        check_record(out / "plan.json", {"table": _identity(table, context)}, key="table", hint=hint)
        context.data = table.prepare(context)
        cells = table.cells(context, seeds)
        record = {"table": _identity(table, context), "cells": _plan_record(cells)}
        check_record(out / "plan.json", record, key="cells", hint=hint)
        write_json(out / "plan.json", {**record, "data": context.data})
        for number, cell in enumerate(cells, start=1):
            folder = out / "cells" / cell.key
            if is_done(folder):
                log.info("cell %d/%d %s: done, skipped", number, len(cells), cell.key)
                continue
            log.info("cell %d/%d %s: running", number, len(cells), cell.key)
            cell_start = time.perf_counter()
            folder.mkdir(parents=True, exist_ok=True)
            table.run_cell(cell, folder, context)
            mark_done(folder, seconds=time.perf_counter() - cell_start)
        rows = table_rows(table, cells, context)
        seconds = previous + time.perf_counter() - start
        write_json(out / "wall_time.json", {"seconds": seconds})
        atomic_write(out / "table.md", render_markdown(table, rows, context, seconds))
        atomic_write(out / "table.csv", render_csv(table, rows, context))
    return rows


def _previous_seconds(out: Path) -> float:
    try:
        return float(json.loads((out / "wall_time.json").read_text())["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


def table_rows(table: Table, cells: list[Cell], context: Context) -> list[dict]:
    """One dict per (row, column), in plan order: ``row``, ``column``, ``seeds``, per metric ``key`` (ours),
    ``key_ci`` (95 % bootstrap interval), ``key_sd`` (seed standard deviation), ``paper_key`` (the paper's)."""
    groups: dict[tuple, list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.row, cell.column), []).append(cell)
    rows = []
    for (row, column), members in groups.items():
        folders = [context.out / "cells" / c.key for c in members]
        per_seed = [json.loads((f / "scores.json").read_text())["metrics"] for f in folders]
        values, intervals = table.score(folders, context)
        entry = {"row": row, "column": column, "seeds": len(members)}
        paper = table.paper.get((row, column), {})
        for key, _, _ in table.metrics:
            entry[key] = values.get(key, math.nan)
            entry[f"{key}_ci"] = intervals.get(key, (math.nan, math.nan))
            seed_values = [s.get(key, math.nan) for s in per_seed]
            entry[f"{key}_sd"] = float(np.std(seed_values, ddof=1)) if len(seed_values) > 1 else math.nan
            entry[f"paper_{key}"] = paper.get(key, "")
        rows.append(entry)
    return rows


def _fmt(value, scale) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value * scale:.1f}" \
        if scale != 1 else f"{value:.3f}"


def render_markdown(table: Table, rows: list[dict], context: Context, seconds: float) -> str:
    """The table in markdown: ours (mean over seeds, bootstrap 95 % interval, seed SD) beside the paper's."""
    label = "SYNTHETIC" if context.synthetic else "ours"
    lines = [f"# {table.title}", ""]
    if context.synthetic:
        lines += ["**SYNTHETIC**: every number of ours below comes from the procedural generator at a tiny size "
                  "(`--synthetic`); it checks that the plan runs end to end and says nothing about the paper's "
                  "claims. The paper's numbers are quoted for the layout only.", ""]
    data = "synthetic generator (equipath.data.synthetic)" if context.synthetic else str(context.data_root)
    has_ci = any(not math.isnan(r[f"{key}_ci"][0]) for r in rows for key, _, _ in table.metrics)
    intervals = f"percentile bootstrap, {context.n_bootstrap} resamples of the test items" if has_ci else "none"
    lines += [f"Data: {data}. Wall time: {seconds:.0f} s. Seeds per cell: {rows[0]['seeds'] if rows else 0}. "
              f"Intervals: {intervals}.", ""]
    head = ["row", "column"]
    for key, name, _ in table.metrics:
        head += [f"{name} ({label})", f"{name} 95% CI", f"{name} seed SD", f"{name} (paper)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["row"], r["column"]]
        for key, _, scale in table.metrics:
            lo, hi = r[f"{key}_ci"]
            ci = "" if math.isnan(lo) else f"({_fmt(lo, scale)}, {_fmt(hi, scale)})"
            cells += [_fmt(r[key], scale), ci, _fmt(r[f"{key}_sd"], scale), str(r[f"paper_{key}"])]
        lines.append("| " + " | ".join(cells) + " |")
    if table.notes:
        lines += ["", table.notes]
    return "\n".join(lines) + "\n"


def render_csv(table: Table, rows: list[dict], context: Context) -> str:
    """The table as CSV, one line per (row, column); the ``source`` column says SYNTHETIC or the data root."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    head = ["table", "source", "row", "column", "seeds"]
    for key, _, _ in table.metrics:
        head += [key, f"{key}_ci_low", f"{key}_ci_high", f"{key}_seed_sd", f"paper_{key}"]
    writer.writerow(head)
    source = "SYNTHETIC" if context.synthetic else str(context.data_root)
    for r in rows:
        line = [table.name, source, r["row"], r["column"], r["seeds"]]
        for key, _, _ in table.metrics:
            lo, hi = r[f"{key}_ci"]
            line += [_num(r[key]), _num(lo), _num(hi), _num(r[f"{key}_sd"]), r[f"paper_{key}"]]
        writer.writerow(line)
    return buffer.getvalue()


def _num(value) -> str:
    return "" if isinstance(value, float) and math.isnan(value) else f"{value:.6g}"
