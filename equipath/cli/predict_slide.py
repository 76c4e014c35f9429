"""``equipath predict-slide``: tumour heatmaps, regions and detections for one slide or many.

Each slide's outputs go to ``OUT/{slide name}/`` (see :mod:`equipath.wsi.pipeline`), written atomically;
a re-run skips finished slides; a slide that fails is reported at the end while the others finish (exit
status 1 when any failed). Each run's resolved options are written to ``OUT/predict-slide-{UTC time}.json``
(one record per run, never overwritten); what the outputs depend on (the checkpoint's SHA-256 and the
options) goes to ``OUT/made_with.json``, and a resume with anything else is refused (``--overwrite`` redoes
every slide). Two runs cannot share ``OUT``: the second stops with a message naming the first.
"""

import argparse
import os
from dataclasses import asdict

from equipath.wsi.batch import find_slides, run_slides
from equipath.wsi.inference import check_dense_model
from equipath.wsi.outputs import DEFAULT_CMAP, check_picture_options, write_run_record
from equipath.wsi.pipeline import PredictJob, PredictOptions
from equipath.wsi.tissue import TissueOptions


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "predict-slide", help="whole-slide tumour heatmaps, regions and detections",
        description="Run a patch classifier checkpoint fully-convolutionally over the tissue of whole-slide images "
                    "and write per slide: probability map (.npy), tissue mask, PNG heatmap, pyramidal TIFF heatmap, "
                    "QuPath GeoJSON regions and Camelyon16 detections (prob,X,Y at level 0).")
    p.add_argument("slides", nargs="+", help="slide files, folders of slides, or .txt lists of slide paths")
    p.add_argument("--checkpoint", required=True, help="an equipath checkpoint of a patch classifier")
    p.add_argument("--out", required=True, help="output folder (one sub-folder per slide)")
    res = p.add_mutually_exclusive_group()
    res.add_argument("--mpp", type=float, default=0.972, help="microns per pixel the model runs at (default 0.972, 10x)")
    res.add_argument("--level", type=int, help="run at this pyramid level instead of --mpp")
    p.add_argument("--slide-mpp", type=float, help="level-0 microns per pixel of slides whose files do not say")
    p.add_argument("--backend", default="auto", choices=["auto", "openslide", "tiffslide", "image"])
    p.add_argument("--tissue-method", default="hsv", choices=["hsv", "otsu"])
    p.add_argument("--saturation", type=float, default=0.07, help="tissue: minimum blurred HSV saturation (default 0.07)")
    p.add_argument("--value", type=float, default=0.1, help="tissue: minimum blurred HSV value (default 0.1)")
    p.add_argument("--tissue-mpp", type=float, default=8.0, help="resolution of the tissue mask (default 8.0)")
    p.add_argument("--tile-cells", type=int, default=16, help="output cells per tile side (default 16)")
    p.add_argument("--batch-size", type=int, default=2, help="tiles per forward pass (default 2)")
    p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast (default: on for CUDA, off on the CPU)")
    p.add_argument("--tta", action="store_true", help="average over the 8 D4 transforms of every tile (8x cost)")
    p.add_argument("--threshold", type=float, default=0.5, help="probability of GeoJSON regions (default 0.5)")
    p.add_argument("--nms-window", type=int, default=5, help="square NMS window in cells (default 5)")
    p.add_argument("--nms-threshold", type=float, default=0.5, help="lowest detection probability (default 0.5)")
    p.add_argument("--cmap", default=DEFAULT_CMAP,
                   help=f"matplotlib colour map of the heatmaps (default {DEFAULT_CMAP}, perceptually uniform)")
    p.add_argument("--alpha", type=float, default=0.5, help="heatmap opacity over the thumbnail, 0..1 (default 0.5)")
    p.add_argument("--workers", type=int, default=1, help="slides processed at once, one process each (default 1)")
    p.add_argument("--rank", type=int, help="this process's shard (default: $RANK or 0)")
    p.add_argument("--world-size", type=int, help="number of shards (default: $WORLD_SIZE or 1)")
    p.add_argument("--overwrite", action="store_true",
                   help="re-run slides whose outputs exist (also with another checkpoint or other options)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    options = PredictOptions(
        mpp=None if args.level is not None else args.mpp, level=args.level, slide_mpp=args.slide_mpp,
        backend=args.backend,
        tissue=TissueOptions(method=args.tissue_method, saturation=args.saturation, value=args.value,
                             mpp=args.tissue_mpp),
        tile_cells=args.tile_cells, batch_size=args.batch_size, device=args.device, amp=args.amp, tta=args.tta,
        threshold=args.threshold, nms_window=args.nms_window, nms_threshold=args.nms_threshold,
        cmap=args.cmap, alpha=args.alpha, progress=not args.no_progress)
    check_picture_options(args.cmap, args.alpha)
    job = PredictJob(os.path.abspath(args.checkpoint), options)
    model, checkpoint = job.load()
    check_dense_model(model)
    slides = find_slides(args.slides)
    if (args.rank if args.rank is not None else int(os.environ.get("RANK", 0))) == 0:
        write_run_record(args.out, "predict-slide",
                         {"checkpoint": job.checkpoint, "model": checkpoint.get("model"),
                          "slides": [str(s) for s in slides], "options": asdict(options), "workers": args.workers})
    outcomes = run_slides(slides, args.out, job, workers=args.workers, rank=args.rank, world_size=args.world_size,
                          resume=not args.overwrite, progress=not args.no_progress, record=job.record(),
                          record_file="made_with.json")
    failed = [o for o in outcomes if o.status == "failed"]
    for o in outcomes:
        note = f" ({len(o.warnings)} warning(s): {'; '.join(o.warnings)})" if o.warnings else ""
        print(f"{o.status:8s} {o.slide} -> {o.output}{note}" + (f" [{o.seconds:.1f} s]" if o.status == "done" else ""))
    done = sum(o.status == "done" for o in outcomes)
    skipped = sum(o.status == "skipped" for o in outcomes)
    print(f"{done} done, {skipped} skipped (already done), {len(failed)} failed")
    for o in failed:
        print(f"FAILED {o.slide}: {o.error}")
    return 1 if failed else 0
