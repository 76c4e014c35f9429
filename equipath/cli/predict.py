"""``equipath predict``: one prediction command for every registered model, the task read from the checkpoint.

- **segmentation** checkpoints (``p4m_unet``, ``p4m_gerunet``, ``iso_unet``, ...): tiled inference equal to
  one whole-image pass (:mod:`equipath.wsi.segment`) over images and whole slides, per input
  ``OUT/{name}/``: ``probabilities.npy`` (float16, NaN = not predicted), ``labels.tif`` (pyramidal, with
  resolution tags), ``overlay.png`` (with a legend), ``regions.geojson`` (QuPath polygons with holes) and,
  for cell models, ``cells.geojson`` and ``cells.json`` (OCELOT 2023 submission format);
- **classification** checkpoints (patch classifiers, ``p4m_densenet``): the whole-slide heatmaps,
  regions and detections of ``equipath predict-slide`` (:mod:`equipath.cli.predict_slide`, the same flags).

Inputs are image or slide files, folders of them and ``.txt`` lists (one path per line). Outputs are
written atomically per input into confined, safely named folders; a re-run skips finished inputs and
refuses to resume with another checkpoint or other options (``--overwrite`` redoes them); two runs cannot
share ``OUT``.
"""

from equipath.checkpoint import load_checkpoint
from equipath.cli._predict import add_arguments, run_classifier, run_segmentation


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "predict", help="predict with any checkpoint: segmentation maps or slide heatmaps",
        description=__doc__.split("\n\n")[0].removeprefix("``equipath predict``: ") + " Segmentation models "
                    "write per input probabilities (.npy), a label mask (pyramidal TIFF), an overlay PNG and QuPath "
                    "GeoJSON regions (cell models also cell points and an OCELOT submission); patch classifiers "
                    "write what `equipath predict-slide` writes.")
    add_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    task = load_checkpoint(args.checkpoint).get("task")
    if task == "classification":
        return run_classifier(args, command="predict")
    if task != "segmentation":
        raise ValueError(f"checkpoint {args.checkpoint}: task {task!r}, expected segmentation or classification")
    return run_segmentation(args)
