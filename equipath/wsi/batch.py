"""Many slides: sharded across ranks, run by worker processes, each slide's outputs written atomically.

A slide's output folder is named by :func:`output_name`: its file name without the suffix, made safe by
:func:`equipath.outdir.safe_name` (a slide named ``...svs`` gets ``__-<hash>``, never the parent folder).
Its outputs are written into a hidden partial folder ``OUT/.{name}.partial-{pid}``, marked complete
(:func:`equipath.outdir.mark_done`) and renamed to ``OUT/{name}`` when the job returns. A re-run skips
every slide whose folder holds the marker, so a killed run resumes where it stopped; an unmarked folder
(an older version's, or an empty one) is re-run. Nothing outside ``OUT`` is ever deleted: every delete is
checked by :func:`equipath.outdir.confined`.

A run holds ``OUT``'s lock (:class:`equipath.outdir.OutputLock`, one per rank) from start to end, so a
second run into the same folder stops at once with a message naming the first. With a ``record`` (what
the outputs depend on: the checkpoint's hash and the options), a resume made differently is refused in one
line instead of mixing two models' outputs in one folder. Worker processes die with the run
(:func:`equipath.processes.die_with_parent`). A slide that fails is reported, and the others still run.

Ranks: slides (sorted) are dealt out ``slides[rank::world_size]``; under ``torchrun`` the ``RANK`` and
``WORLD_SIZE`` environment variables give the defaults, and no communication is needed.

Example:
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> def job(slide, out):
    ...     (out / "result.txt").write_text(slide.name)
    ...     return {"warnings": []}
    >>> [o.status for o in run_slides([root / "a.svs", root / "b.svs"], root / "out", job)]
    ['done', 'done']
    >>> [o.status for o in run_slides([root / "a.svs"], root / "out", job)]
    ['skipped']
    >>> output_name(root / "...svs")
    '__-5ec1f7e7'

"""

import glob
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from tqdm.auto import tqdm

from equipath.atomic import write_json
from equipath.outdir import (LOCK_FILE, OutputLock, check_record, confined, is_done, mark_done, remove,
                             remove_stale_temporaries, safe_name)
from equipath.wsi.reader import SLIDE_SUFFIXES
from equipath.processes import die_with_parent

__all__ = ["SlideOutcome", "find_slides", "run_slides", "output_name"]

log = logging.getLogger(__name__)


@dataclass
class SlideOutcome:
    """What became of one slide: ``status`` is ``done``, ``skipped`` (already done) or ``failed``."""

    slide: str
    output: str
    status: str
    error: str | None = None
    warnings: list = field(default_factory=list)
    seconds: float = 0.0


def find_slides(inputs) -> list[Path]:
    """Slide paths from files, folders (their slide files, not recursive) and ``.txt`` lists (one path per
    line, relative to the list's folder; ``#`` starts a comment). Missing paths are kept, to fail per slide."""
    slides = []
    for item in map(Path, inputs):
        if item.is_dir():
            slides += sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in SLIDE_SUFFIXES)
        elif item.suffix.lower() == ".txt" and item.is_file():
            for line in item.read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    path = Path(line)
                    slides.append(path if path.is_absolute() else item.parent / path)
        else:
            slides.append(item)
    if not slides:
        raise ValueError(f"no slides found in {', '.join(map(str, inputs))} (slide suffixes: {' '.join(SLIDE_SUFFIXES)})")
    return slides


def output_name(slide: Path, reserved=()) -> str:
    """The output folder name of a slide: its file name without the suffix, through
    :func:`equipath.outdir.safe_name` (``reserved``: the names of the run's own files beside it)."""
    return safe_name(Path(slide).stem, reserved)


def _run_one(job, slide: Path, out_root: Path, name: str) -> SlideOutcome:
    final = confined(out_root / name, out_root)
    partial = confined(out_root / f".{name}.partial-{os.getpid()}", out_root)
    remove(partial, out_root)
    partial.mkdir(parents=True)
    start = time.perf_counter()
    try:
        summary = job(slide, partial)
        mark_done(partial, slide=str(slide), seconds=round(time.perf_counter() - start, 3))
        remove(final, out_root)
        partial.rename(final)
    except Exception as exc:  # noqa: BLE001 - one slide's failure must not stop the others
        remove(partial, out_root)
        log.debug("slide %s failed", slide, exc_info=True)
        return SlideOutcome(str(slide), str(final), "failed", f"{exc.__class__.__name__}: {exc}",
                            seconds=time.perf_counter() - start)
    warnings = list((summary or {}).get("warnings", []))
    return SlideOutcome(str(slide), str(final), "done", None, warnings, time.perf_counter() - start)


def _init_worker(threads: int, parent: int) -> None:
    import torch

    die_with_parent(parent)
    torch.set_num_threads(threads)


def run_slides(slides, out_root, job, *, workers: int = 1, rank: int | None = None, world_size: int | None = None,
               resume: bool = True, progress: bool = True, record: dict | None = None,
               record_file: str = "run.json") -> list[SlideOutcome]:
    """Run ``job(slide, folder) -> summary dict`` for this rank's slides; returns one outcome per slide.

    Args:
        slides: slide paths (see :func:`find_slides`); their output names must differ (ignoring case).
        out_root: the output folder; slide ``s`` goes to ``out_root / output_name(s)``.
        job: a picklable callable (top-level function or object) writing a slide's outputs into the folder
            it is given, returning a summary (its ``"warnings"`` are reported).
        workers: processes running slides at once (spawned; each uses ``cpu_count // workers`` threads).
            Defaults to 1 (in this process).
        rank, world_size: this process's share of the slides. Defaults to the ``RANK`` / ``WORLD_SIZE``
            environment variables, else 0 / 1.
        resume: skip slides whose output folder is marked done. Defaults to True.
        progress: show a progress bar over slides. Defaults to True.
        record: what the outputs depend on, written to ``out_root / record_file``; its ``"made_with"``
            entry must match the stored one when resuming (:func:`equipath.outdir.check_record`).
            Defaults to None (nothing checked or written).
        record_file: the record's file name in ``out_root``. Defaults to ``run.json``.
    """
    slides = sorted(map(Path, slides))
    names = {s: output_name(s, [record_file]) for s in slides}
    folded = [n.casefold() for n in names.values()]
    duplicates = sorted({n for n in names.values() if folded.count(n.casefold()) > 1})
    if duplicates:
        raise ValueError(f"slides must have unique names, but {', '.join(duplicates)} occur more than once")
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank {rank} of {world_size}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers > (os.cpu_count() or 1):
        log.warning("%d workers on %d CPU cores: using %d", workers, os.cpu_count() or 1, os.cpu_count() or 1)
        workers = os.cpu_count() or 1
    out_root = Path(out_root)
    with OutputLock(out_root, LOCK_FILE if rank == 0 else f"{LOCK_FILE}-rank{rank}"):
        out_root = out_root.resolve()
        if rank == 0:
            remove_stale_temporaries(out_root)
        if record is not None:
            if resume:
                check_record(out_root / record_file, record, hint="re-run with --overwrite to redo every slide, "
                                                                   "or use another output folder")
            if rank == 0:  # the only writer in out_root (its temporaries are cleaned above)
                write_json(out_root / record_file, record)
        return _run_rank(slides[rank::world_size], names, out_root, job, workers, rank, world_size, resume,
                         progress)


def _run_rank(mine, names, out_root, job, workers, rank, world_size, resume, progress) -> list[SlideOutcome]:
    outcomes, todo = [], []
    for slide in mine:
        final = out_root / names[slide]
        for stale in out_root.glob(f".{glob.escape(final.name)}.partial-*"):
            remove(stale, out_root)
        if resume and is_done(final):
            outcomes.append(SlideOutcome(str(slide), str(final), "skipped"))
        else:
            todo.append(slide)
    log.info("rank %d/%d: %d slides, %d already done, %d to run with %d worker(s)", rank, world_size, len(mine),
             len(mine) - len(todo), len(todo), workers)
    bar = tqdm(total=len(todo), desc="slides", unit="slide", disable=not progress)
    if workers == 1 or len(todo) <= 1:
        for slide in todo:
            outcomes.append(_run_one(job, slide, out_root, names[slide]))
            bar.update()
    else:
        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker,
                                 initargs=(threads, os.getpid())) as pool:
            futures = [pool.submit(_run_one, job, slide, out_root, names[slide]) for slide in todo]
            for future in as_completed(futures):
                outcomes.append(future.result())
                bar.update()
    bar.close()
    for o in outcomes:
        if o.status == "failed":
            log.error("slide %s failed: %s", o.slide, o.error)
        for w in o.warnings:
            log.warning("slide %s: %s", o.slide, w)
    order = {str(s): k for k, s in enumerate(mine)}
    return sorted(outcomes, key=lambda o: order[o.slide])
