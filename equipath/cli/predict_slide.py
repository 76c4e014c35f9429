"""``equipath predict-slide``: tumour heatmaps, regions and detections of a patch classifier for one slide or
many: the classifier path of ``equipath predict``, with the same flags (:mod:`equipath.cli.predict`).

Each slide's outputs go to ``OUT/{slide name}/`` (see :mod:`equipath.wsi.pipeline`), written atomically;
a re-run skips finished slides; a slide that fails is reported at the end while the others finish (exit
status 1 when any failed). Each run's resolved options are written to ``OUT/{command}-{UTC time}.json``
(one record per run, never overwritten); what the outputs depend on (the checkpoint's SHA-256 and the
options) goes to ``OUT/made_with.json``, and a resume with anything else is refused (``--overwrite`` redoes
every slide). Two runs cannot share ``OUT``: the second stops with a message naming the first.
"""

from equipath.cli._predict import add_arguments, run_classifier


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "predict-slide", help="whole-slide tumour heatmaps, regions and detections (patch classifiers)",
        description="Run a patch classifier checkpoint fully-convolutionally over the tissue of whole-slide images "
                    "and write per slide: probability map (.npy), tissue mask, PNG heatmap, pyramidal TIFF heatmap, "
                    "QuPath GeoJSON regions and Camelyon16 detections (prob,X,Y at level 0). The classifier path of "
                    "`equipath predict`, with the same flags (segmentation models: use `equipath predict`).")
    add_arguments(p, what="slides")
    p.set_defaults(func=run_classifier)
