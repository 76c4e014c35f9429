"""``equipath froc``: the Camelyon16 lesion-level FROC and slide-level AUC of a folder of detections."""

from equipath.atomic import write_json
from equipath.cli._options import add_out, add_seed
from equipath.wsi.camelyon import CAMELYON16_EXCLUDED, collect_hits
from equipath.wsi.froc import TIE_RULES, evaluate_froc


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "froc", help="Camelyon16 FROC score and slide-level AUC of detections",
        description="Evaluate detections (DIR/{slide}.csv with 'prob,X,Y' at level 0, or predict-slide output folders) "
                    "against ASAP XML annotations or mask TIFFs by the Camelyon16 protocol: 75 um growth, isolated "
                    "tumour cells excluded, one true positive per lesion, mean sensitivity at 1/4, 1/2, 1, 2, 4 and 8 "
                    "false positives per slide, bootstrap 95% intervals; slides without ground truth are normal.")
    p.add_argument("detections", help="folder of {slide}.csv files or predict-slide output folders")
    p.add_argument("--ground-truth", help="folder of {slide}.xml (ASAP) or {slide}.tif / {slide}_mask.tif masks")
    p.add_argument("--slides", help="folder of the slides (their size, for ASAP files without slide.json)")
    p.add_argument("--mpp", type=float, default=0.243,
                   help="level-0 microns per pixel when neither slide.json nor the slide says (default 0.243)")
    p.add_argument("--level", type=int, default=5, help="evaluation level, downsample 2**level (default 5)")
    p.add_argument("--ties", choices=sorted(TIE_RULES), default="official",
                   help="official: as Evaluation_FROC.py (false positives float64, lesions float32); strict: both "
                        "float64 (default official)")
    p.add_argument("--exclude", action="append", default=[], metavar="SLIDE",
                   help="leave a slide out (repeatable); 'camelyon16' stands for the challenge's exclusions "
                        f"({', '.join(CAMELYON16_EXCLUDED)})")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples of slides (default 2000; 0: none)")
    add_seed(p, help="bootstrap seed (default: 0)")
    add_out(p, help="write the full report (curve, per-slide table) to this JSON file")
    p.set_defaults(func=run)


def run(args) -> int:
    if not 0 <= args.bootstrap <= 1_000_000:
        raise ValueError(f"--bootstrap must be in [0, 1000000], got {args.bootstrap}")
    if not 1 <= args.level <= 16:  # level 0 would rasterise lesions at full resolution (gigapixels)
        raise ValueError(f"--level must be in [1, 16], got {args.level}")
    if not 1e-3 <= args.mpp <= 1e3:  # NaN fails too
        raise ValueError(f"--mpp must be a number in [0.001, 1000], got {args.mpp}")
    exclude = [n for name in args.exclude for n in (CAMELYON16_EXCLUDED if name == "camelyon16" else (name,))]
    hits = collect_hits(args.detections, args.ground_truth, args.slides, mpp=args.mpp, level=args.level,
                        ties=args.ties, exclude=exclude)
    report = evaluate_froc(hits, n_bootstrap=args.bootstrap, seed=args.seed)
    print(f"{report.n_slides} slides ({report.n_tumour_slides} with tumour), {report.n_lesions} lesions "
          f"(isolated tumour cells excluded)")
    print("FPs/slide  sensitivity")
    for fp, sens in zip(report.eval_fps, report.sensitivities):
        print(f"{fp:9g}  {sens:.4f}")
    lo, hi = report.froc_ci
    print(f"FROC score {report.froc:.4f}  (95% CI {lo:.4f}-{hi:.4f}, {args.bootstrap} bootstrap samples)")
    lo, hi = report.auc_ci
    print(f"slide AUC  {report.auc:.4f}  (95% CI {lo:.4f}-{hi:.4f})")
    if args.out:
        write_json(args.out, report.to_dict())
        print(f"report written to {args.out}")
    return 0
