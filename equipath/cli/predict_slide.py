"""``equipath predict-slide``: tumour heatmaps, regions and detections of a patch classifier for one slide or
many: the classifier path of ``equipath predict``, with the same flags (:mod:`equipath.cli.predict`).

Each slide's outputs go to ``OUT/{slide name}/`` (see :mod:`equipath.wsi.pipeline`), written atomically;
a re-run skips finished slides; a slide that fails is reported at the end while the others finish (exit
status 1 when any failed). Each run's resolved options are written to ``OUT/{command}-{UTC time}.json``
(one record per run, never overwritten); what the outputs depend on (the checkpoint's SHA-256 and the
options) goes to ``OUT/made_with.json``, and a resume with anything else is refused (``--overwrite`` redoes
every slide). Two runs cannot share ``OUT``: the second stops with a message naming the first.
"""

import os
from dataclasses import asdict

from equipath.cli.predict import add_arguments, report
from equipath.wsi.batch import find_slides, run_slides
from equipath.wsi.inference import check_dense_model
from equipath.wsi.outputs import check_picture_options, write_run_record
from equipath.wsi.pipeline import PredictJob, PredictOptions
from equipath.wsi.tissue import TissueOptions


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "predict-slide", help="whole-slide tumour heatmaps, regions and detections (patch classifiers)",
        description="Run a patch classifier checkpoint fully-convolutionally over the tissue of whole-slide images "
                    "and write per slide: probability map (.npy), tissue mask, PNG heatmap, pyramidal TIFF heatmap, "
                    "QuPath GeoJSON regions and Camelyon16 detections (prob,X,Y at level 0). The classifier path of "
                    "`equipath predict`, with the same flags (segmentation models: use `equipath predict`).")
    add_arguments(p, what="slides")
    p.set_defaults(func=run)


def run(args, command: str = "predict-slide") -> int:
    options = PredictOptions(
        mpp=None if args.level is not None else (args.mpp if args.mpp is not None else 0.972), level=args.level,
        slide_mpp=args.slide_mpp, backend=args.backend,
        tissue=TissueOptions(method=args.tissue_method, saturation=args.saturation, value=args.value,
                             mpp=args.tissue_mpp),
        tile_cells=args.tile_cells, batch_size=2 if args.batch_size is None else args.batch_size,
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
