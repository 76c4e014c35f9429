"""``equipath evaluate --checkpoint C --data ROOT``: every metric of the checkpoint's task on a data set,
with 95 % bootstrap intervals, printed as a table and written as JSON; each image's own scores as CSV
beside it (``eval_test_items.csv``), and with ``--save-predictions`` the predictions: predicted masks and
ground-truth-vs-prediction overlays for segmentation, per-patch probabilities for a classifier.

``equipath evaluate --submission CELLS --data OCELOT_ROOT``: the OCELOT 2023 mF1 (15 px) of cell detections,
from a submission file or from the folder ``equipath predict`` wrote for the split's cell images."""

import math
from pathlib import Path

from equipath.atomic import write_json
from equipath.checkpoint import check_writable
from equipath.cli import _options
from equipath.evaluation import EVAL_DATASETS, evaluate_checkpoint
from equipath.evaluation.ocelot_submission import score_against_ocelot


def register(subparsers) -> None:
    parser = subparsers.add_parser("evaluate", help="evaluate a checkpoint: metrics with bootstrap intervals",
                                   description=__doc__)
    parser.add_argument("--checkpoint", help="a checkpoint written by equipath train (best.pt)")
    parser.add_argument("--submission", help="instead of a checkpoint: score OCELOT cell detections against --data "
                                            "(a 'Multiple points' JSON, or an 'equipath predict' output folder)")
    parser.add_argument("--data", required=True, help="the data folder (PCam h5 files, image/mask folders, OCELOT)")
    parser.add_argument("--dataset", choices=EVAL_DATASETS,
                        help="format of --data; defaults to what the checkpoint's model was trained on")
    parser.add_argument("--split", default="test", help="data split (default: test; OCELOT: train, val, test)")
    _options.add_out(parser, help="JSON file for the results (default: <checkpoint folder>/eval_<split>.json); "
                                  "the per-image CSV is written beside it as <name>_items.csv")
    parser.add_argument("--save-predictions", action="store_true",
                        help="also write the predictions into <name>_predictions/: masks/ and overlays/ PNGs "
                             "(segmentation) or probabilities.npy (classification)")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples, 0 for none (default: 2000)")
    parser.add_argument("--patch-size", type=int, help="segmentation patch side (default: the training patch size)")
    _options.add_batch_size(parser, 64)
    _options.add_workers(parser, help="data-loader processes (default: 0)")
    _options.add_device(parser)
    _options.add_seed(parser, help="seed of the bootstrap (default: 0)")
    _options.add_progress(parser)
    parser.set_defaults(func=run)


def format_table(result: dict) -> str:
    """The metrics of an evaluation result as an aligned text table with their intervals."""
    rows = [("metric", "value", "95% CI")]
    for name, value in result["metrics"].items():
        low, high = result["ci95"].get(name, (math.nan, math.nan))
        rows.append((name, f"{value:.4f}", "" if math.isnan(low) else f"[{low:.4f}, {high:.4f}]"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    title = (f"{result['model']} on {result['dataset']} {result['split']} ({result['n']} items"
             f"{', SYNTHETIC data' if result['synthetic'] else ''})")
    return "\n".join([title, *lines])


def _score_submission(args) -> int:
    if args.dataset not in (None, "ocelot"):
        raise ValueError(f"--submission scores OCELOT cell detections; --dataset {args.dataset} has none")
    out = Path(args.out) if args.out else Path(args.submission).with_name(f"eval_{args.split}.json")
    check_writable(out.parent)
    scores = score_against_ocelot(args.submission, args.data, args.split)
    write_json(out, {"submission": str(args.submission), "data": str(args.data), "split": args.split,
                     "metrics": scores})
    for name, value in scores.items():
        print(f"{name:<16}{value:.4f}")
    print(f"results: {out}")
    return 0


def run(args) -> int:
    if (args.checkpoint is None) == (args.submission is None):
        raise ValueError("give exactly one of --checkpoint (evaluate a model) and --submission (score OCELOT cells)")
    if args.submission is not None:
        return _score_submission(args)
    if args.bootstrap < 0 or args.batch_size < 1 or args.workers < 0:
        raise ValueError("--bootstrap and --workers must be >= 0 and --batch-size >= 1")
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / f"eval_{args.split}.json"
    check_writable(out.parent)
    items_csv = out.with_name(f"{out.stem}_items.csv")
    save_dir = out.with_name(f"{out.stem}_predictions") if args.save_predictions else None
    result = evaluate_checkpoint(args.checkpoint, args.data, args.dataset, args.split, patch_size=args.patch_size,
                                 device=_options.resolve_device(args.device), batch_size=args.batch_size,
                                 progress=args.progress, n_bootstrap=args.bootstrap, seed=args.seed,
                                 num_workers=args.workers, items_csv=items_csv, save_dir=save_dir)
    write_json(out, result)
    print(format_table(result))
    print(f"results: {out}; per image: {items_csv}" + (f"; predictions: {save_dir}" if save_dir else ""))
    return 0
