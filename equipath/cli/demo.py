"""``equipath demo``: the quick-start job on SYNTHETIC data (train P4M-DenseNet and DenseNet at two data
regimes, evaluate, check equivariance) and its report; prints where the report is."""

from equipath.demo import DemoConfig, run_demo


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="the quick-start job on synthetic data; writes runs/demo/report.md",
                                   description=__doc__)
    parser.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data, initialisation and sampling (default: 0)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=run)


def run(args) -> int:
    result = run_demo(DemoConfig(out_dir=args.out, seed=args.seed, device=args.device, progress=not args.no_progress))
    print(f"SYNTHETIC-data demo finished in {result.timings['total']:.0f} s; report: {result.report_path}")
    return 0
