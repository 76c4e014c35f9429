"""Many slides: sharded across ranks, run by worker processes, each slide's outputs written atomically.

A slide's outputs are written into a hidden partial folder ``OUT/.{name}.partial-{pid}`` and renamed to
``OUT/{name}`` only when the job returns, so ``OUT/{name}`` exists only complete. A re-run skips every
slide whose folder exists, so a killed run resumes where it stopped (partial folders of the slides it
re-runs are removed). A slide that fails is reported, and the others still run.

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
"""

import logging
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from tqdm.auto import tqdm

from equipath.wsi.reader import SLIDE_SUFFIXES

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


def output_name(slide: Path) -> str:
    """The output folder name of a slide: its file name without the suffix."""
    return Path(slide).stem


def _run_one(job, slide: Path, out_root: Path) -> SlideOutcome:
    final = out_root / output_name(slide)
    partial = out_root / f".{final.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    start = time.perf_counter()
    try:
        summary = job(slide, partial)
        if final.exists():
            shutil.rmtree(final)
        partial.rename(final)
    except Exception as exc:  # noqa: BLE001 - one slide's failure must not stop the others
        shutil.rmtree(partial, ignore_errors=True)
        log.debug("slide %s failed", slide, exc_info=True)
        return SlideOutcome(str(slide), str(final), "failed", f"{exc.__class__.__name__}: {exc}",
                            seconds=time.perf_counter() - start)
    warnings = list((summary or {}).get("warnings", []))
    return SlideOutcome(str(slide), str(final), "done", None, warnings, time.perf_counter() - start)


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def run_slides(slides, out_root, job, *, workers: int = 1, rank: int | None = None, world_size: int | None = None,
               resume: bool = True, progress: bool = True) -> list[SlideOutcome]:
    """Run ``job(slide, folder) -> summary dict`` for this rank's slides; returns one outcome per slide.

    Args:
        slides: slide paths (see :func:`find_slides`); their names (stems) must be unique.
        out_root: the output folder; slide ``s`` goes to ``out_root / s.stem``.
        job: a picklable callable (top-level function or object) writing a slide's outputs into the folder
            it is given, returning a summary (its ``"warnings"`` are reported).
        workers: processes running slides at once (spawned; each uses ``cpu_count // workers`` threads).
            Defaults to 1 (in this process).
        rank, world_size: this process's share of the slides. Defaults to the ``RANK`` / ``WORLD_SIZE``
            environment variables, else 0 / 1.
        resume: skip slides whose output folder exists. Defaults to True.
        progress: show a progress bar over slides. Defaults to True.
    """
    slides = sorted(map(Path, slides))
    names = [output_name(s) for s in slides]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"slides must have unique names, but {', '.join(duplicates)} occur more than once")
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank {rank} of {world_size}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    mine = slides[rank::world_size]
    outcomes, todo = [], []
    for slide in mine:
        final = out_root / output_name(slide)
        for stale in out_root.glob(f".{final.name}.partial-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if resume and final.is_dir():
            outcomes.append(SlideOutcome(str(slide), str(final), "skipped"))
        else:
            todo.append(slide)
    log.info("rank %d/%d: %d slides, %d already done, %d to run with %d worker(s)", rank, world_size, len(mine),
             len(mine) - len(todo), len(todo), workers)
    bar = tqdm(total=len(todo), desc="slides", unit="slide", disable=not progress)
    if workers == 1 or len(todo) <= 1:
        for slide in todo:
            outcomes.append(_run_one(job, slide, out_root))
            bar.update()
    else:
        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker,
                                 initargs=(threads,)) as pool:
            futures = [pool.submit(_run_one, job, slide, out_root) for slide in todo]
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
