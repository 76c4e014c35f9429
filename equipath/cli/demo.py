"""``equipath demo``: the quick-start experiment on SYNTHETIC data (P4M-DenseNet vs DenseNet with and
without D4 augmentation, P4M U-Net vs U-Net; data fractions down to a few dozen items, several seeds,
paired comparisons) and its report; prints where the report is. About 10 minutes on a 2-core CPU;
``--full`` runs a longer, more decisive plan."""

from equipath.cli._options import add_device, add_out, add_progress, add_seed
from equipath.demo import DemoConfig, run_demo


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="the quick-start experiment on synthetic data; writes runs/demo/report.md",
                                   description=__doc__)
    add_out(parser, help="output folder (default: runs/demo)", default="runs/demo")
    add_seed(parser, help="seed of the synthetic data (default: 0); the training seeds are 0, 1, 2")
    add_device(parser)
    add_progress(parser)
    parser.add_argument("--full", action="store_true",
                        help="the longer plan: 5 fractions of 2,048 patches, 5 seeds, 3x the training")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite the report of the finished demo in --out (same flags) without training")
    parser.add_argument("--resume", action="store_true",
                        help="keep the finished runs in --out (same settings) and train only the others")
    parser.add_argument("--partial", action="store_true",
                        help="with --report-only: report the runs that finished, saying how many were planned")
    parser.set_defaults(func=run)


def run(args) -> int:
    config = DemoConfig(out_dir=args.out, seed=args.seed, device=args.device, progress=args.progress)
    result = run_demo(config.full() if args.full else config, report_only=args.report_only, resume=args.resume,
                      partial=args.partial)
    if args.report_only:
        print(f"SYNTHETIC-data demo report rewritten from the {len(result.runs)} runs in {args.out}: {result.report_path}")
    else:
        print(f"SYNTHETIC-data demo finished in {result.timings['total']:.0f} s; report: {result.report_path}")
    return 0
