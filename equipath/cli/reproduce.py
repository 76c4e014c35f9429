"""``equipath reproduce TABLE``: a paper's table as one resumable plan of runs, written beside the paper's numbers."""

import logging
import time

from equipath.cli._options import add_device, add_out, add_progress, add_set, parse_sets

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    from equipath.reproduce import TABLES

    lines = "; ".join(f"{name}: {t.title}" for name, t in TABLES.items())
    p = subparsers.add_parser(
        "reproduce", help="run a paper's table end to end (train, evaluate, tabulate beside the paper)",
        description="Run the declared plan of one table of the papers: one folder per cell (a finished cell is "
                    "skipped, a killed one resumes), then OUT/table.md and OUT/table.csv with our numbers "
                    "(bootstrap 95%% intervals, seed SD), the paper's, the data used and the wall time. "
                    f"Tables: {lines}.")
    p.add_argument("table", choices=sorted(TABLES), help="the table to reproduce")
    p.add_argument("--data-root", help="the real data (the layout each table expects: see docs/reproduce.md)")
    p.add_argument("--synthetic", action="store_true",
                   help="run on the procedural generator at a tiny size (minutes on a CPU); numbers are SYNTHETIC")
    p.add_argument("--n-seeds", dest="seeds", type=int, default=None,
                   help="seeds per cell, 0 .. N-1 (default: the table's)")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples of the intervals (default 2000)")
    add_out(p, required=True, help="output folder (resumed when it holds the same plan)")
    add_set(p, help="override a key of every cell's training config (repeatable), e.g. epochs=3")
    add_device(p)
    add_progress(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from equipath.reproduce import TABLES, run_table

    if args.bootstrap < 0:
        raise ValueError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    start = time.perf_counter()
    run_table(TABLES[args.table], args.out, args.data_root, synthetic=args.synthetic, seeds=args.seeds,
              device=args.device, progress=args.progress, overrides=parse_sets(args.set), n_bootstrap=args.bootstrap)
    print(f"{args.out}/table.md and table.csv written ({time.perf_counter() - start:.0f} s this run)")
    print(open(f"{args.out}/table.md").read(), end="")
    return 0
