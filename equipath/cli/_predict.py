"""What ``equipath predict`` and ``equipath predict-slide`` share: one set of flags, the classifier path
(:mod:`equipath.wsi.pipeline`), the segmentation path (:mod:`equipath.wsi.segment_pipeline`) and the report
(the CLI loader skips this module: it is no command)."""

import argparse
import os
from dataclasses import asdict

from equipath.cli._options import add_device, add_out, add_progress, add_workers
from equipath.wsi.batch import find_slides, run_slides
from equipath.wsi.inference import check_dense_model
from equipath.wsi.outputs import DEFAULT_CMAP, check_picture_options, write_run_record
from equipath.wsi.pipeline import PredictJob, PredictOptions
from equipath.wsi.segment_pipeline import SegmentJob, SegmentOptions
from equipath.wsi.tissue import TissueOptions

__all__ = ["add_arguments", "run_classifier", "run_segmentation", "report"]


def add_arguments(p, what: str = "images, slides") -> None:
    """The flags of ``predict`` and ``predict-slide`` (one set for both tasks)."""
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help=f"{what}: files, folders of them, or .txt lists of paths")
    p.add_argument("--checkpoint", required=True, help="an equipath checkpoint (its task picks the outputs)")
    add_out(p, required=True, help="output folder (one sub-folder per input)")
    res = p.add_mutually_exclusive_group()
    res.add_argument("--mpp", type=float, help="microns per pixel the model runs at (default: classifiers 0.972 "
                                               "(10x); segmentation: level 0)")
    res.add_argument("--level", type=int, help="run at this pyramid level instead of --mpp")
    p.add_argument("--slide-mpp", type=float, help="level-0 microns per pixel of inputs whose files do not say")
    p.add_argument("--backend", default="auto", choices=["auto", "openslide", "tiffslide", "image"])
    p.add_argument("--tissue-method", default="hsv", choices=["hsv", "otsu"])
    p.add_argument("--saturation", type=float, default=0.07,
                   help="tissue: minimum blurred HSV saturation (default 0.07)")
    p.add_argument("--value", type=float, default=0.1, help="tissue: minimum blurred HSV value (default 0.1)")
    p.add_argument("--tissue-mpp", type=float, default=8.0, help="resolution of the tissue mask (default 8.0)")
    seg = p.add_argument_group("segmentation models")
    seg.add_argument("--all-pixels", action="store_true", help="predict every pixel, not only tissue")
    seg.add_argument("--tile", type=int, default=512, help="tile (window) side in pixels (default 512)")
    seg.add_argument("--margin", type=int, help="pixels read around each kept tile centre (default: the model's "
                                                "receptive radius: exact; smaller is faster and approximate)")
    seg.add_argument("--dtype", default="float16", choices=["float16", "float32"],
                     help="of probabilities.npy (default float16)")
    seg.add_argument("--cells", action=argparse.BooleanOptionalAction, default=None,
                     help="write cell detections (default: for checkpoints trained on OCELOT)")
    seg.add_argument("--min-distance", type=int, default=8, help="cells: least distance in pixels (default 8)")
    seg.add_argument("--cell-threshold", type=float, default=0.5, help="cells: least probability (default 0.5)")
    cls = p.add_argument_group("patch classifiers")
    cls.add_argument("--tile-cells", type=int, help="largest tile side in output cells (default: from memory)")
    cls.add_argument("--tta", action="store_true", help="average over the 8 D4 transforms of every tile (8x cost)")
    cls.add_argument("--threshold", type=float, default=0.5, help="probability of GeoJSON regions (default 0.5)")
    cls.add_argument("--nms-window", type=int, default=5, help="square NMS window in cells (default 5)")
    cls.add_argument("--nms-threshold", type=float, default=0.5, help="lowest detection probability (default 0.5)")
    cls.add_argument("--cmap", default=DEFAULT_CMAP,
                     help=f"matplotlib colour map of the heatmaps (default {DEFAULT_CMAP}, perceptually uniform)")
    cls.add_argument("--alpha", type=float, default=0.5, help="heatmap opacity over the thumbnail, 0..1 (default 0.5)")
    # plain ints, checked with the other numbers before any input is read (errors exit 2 through main)
    p.add_argument("--batch-size", type=int, help="tiles per forward pass (default: 4 for segmentation, 2 for "
                                                  "classifiers)")
    add_device(p)
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast (default: on for CUDA, off on the CPU)")
    add_workers(p, default=1, help="inputs processed at once, one process each (default 1)")
    p.add_argument("--rank", type=int, help="this process's shard (default: $RANK or 0)")
    p.add_argument("--world-size", type=int, help="number of shards (default: $WORLD_SIZE or 1)")
    p.add_argument("--overwrite", action="store_true",
                   help="re-run inputs whose outputs exist (also with another checkpoint or other options)")
    add_progress(p)


def report(outcomes) -> int:
    """Print one line per input and a total; 1 when any input failed."""
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


def _check_numbers(args) -> None:
    checks = [("--batch-size", args.batch_size, 1, 4096), ("--tile", args.tile, 1, 1 << 16),
              ("--margin", args.margin, 0, 1 << 16), ("--min-distance", args.min_distance, 1, 1 << 16)]
    for flag, value, low, high in checks:
        if value is not None and not low <= value <= high:
            raise ValueError(f"{flag} must be in [{low}, {high}], got {value}")
    for flag, value in (("--mpp", args.mpp), ("--slide-mpp", args.slide_mpp), ("--tissue-mpp", args.tissue_mpp)):
        if value is not None and not 0 < value < float("inf"):
            raise ValueError(f"{flag} must be a positive number of microns per pixel, got {value}")
    if not 0 <= args.cell_threshold <= 1:
        raise ValueError(f"--cell-threshold must be in [0, 1], got {args.cell_threshold}")


def run_segmentation(args) -> int:
    _check_numbers(args)
    options = SegmentOptions(
        mpp=args.mpp, level=args.level, slide_mpp=args.slide_mpp, backend=args.backend,
        tissue=None if args.all_pixels else TissueOptions(method=args.tissue_method, saturation=args.saturation,
                                                          value=args.value, mpp=args.tissue_mpp),
        tile=args.tile, margin=args.margin, batch_size=4 if args.batch_size is None else args.batch_size,
        device=args.device, amp=args.amp,
        progress=args.progress, cells=args.cells, min_distance=args.min_distance, cell_threshold=args.cell_threshold,
        dtype=args.dtype)
    job = SegmentJob(os.path.abspath(args.checkpoint), options)
    model, checkpoint = job.load()
    inputs = find_slides(args.inputs)
    if (args.rank if args.rank is not None else int(os.environ.get("RANK", 0))) == 0:
        write_run_record(args.out, "predict", {"checkpoint": job.checkpoint, "model": checkpoint.get("model"),
                                               "task": "segmentation", "inputs": [str(s) for s in inputs],
                                               "options": asdict(options), "workers": args.workers})
    outcomes = run_slides(inputs, args.out, job, workers=max(1, args.workers), rank=args.rank,
                          world_size=args.world_size, resume=not args.overwrite, progress=args.progress,
                          record=job.record(), record_file="made_with.json")
    return report(outcomes)


def run_classifier(args, command: str = "predict-slide") -> int:
    """The classifier path: :mod:`equipath.wsi.pipeline` over every slide (``predict-slide``, ``predict``)."""
    options = PredictOptions(
        mpp=None if args.level is not None else (args.mpp if args.mpp is not None else 0.972), level=args.level,
        slide_mpp=args.slide_mpp, backend=args.backend,
        tissue=TissueOptions(method=args.tissue_method, saturation=args.saturation, value=args.value,
                             mpp=args.tissue_mpp),
        tile_cells=args.tile_cells, batch_size=args.batch_size,
        device=None if args.device == "auto" else args.device, amp=args.amp, tta=args.tta,
        threshold=args.threshold, nms_window=args.nms_window, nms_threshold=args.nms_threshold,
        cmap=args.cmap, alpha=args.alpha, progress=args.progress)
    check_picture_options(args.cmap, args.alpha)
    job = PredictJob(os.path.abspath(args.checkpoint), options)
    model, checkpoint = job.load()
    check_dense_model(model)
    slides = find_slides(args.inputs)
    if (args.rank if args.rank is not None else int(os.environ.get("RANK", 0))) == 0:
        write_run_record(args.out, command,
                         {"checkpoint": job.checkpoint, "model": checkpoint.get("model"),
                          "slides": [str(s) for s in slides], "options": asdict(options), "workers": args.workers})
    outcomes = run_slides(slides, args.out, job, workers=max(1, args.workers), rank=args.rank,
                          world_size=args.world_size, resume=not args.overwrite, progress=args.progress,
                          record=job.record(), record_file="made_with.json")
    return report(outcomes)
