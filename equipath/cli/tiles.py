"""``equipath tiles``: seed 001's training tiles from annotated slides, split 8:1:1 by slide, into the folder
format ``equipath train`` reads (``dataset: segmentation``); see :mod:`equipath.wsi.tiles`.

Slides come as files, folders or ``.txt`` lists, each annotated by ``{stem}.xml`` (ASAP) or
``{stem}.geojson`` / ``{stem}.json`` (QuPath) in ``--annotations`` (default: beside the slide; none means no
tumour), or as a ``.csv`` with the columns ``slide`` and ``annotation`` (empty: none).
"""

import csv
from pathlib import Path

from equipath.atomic import write_json
from equipath.cli._options import add_out, add_progress, add_seed
from equipath.outdir import OutputLock
from equipath.wsi.batch import find_slides
from equipath.wsi.tiles import build_tiles
from equipath.wsi.tissue import TissueOptions


def register(subparsers) -> None:
    p = subparsers.add_parser("tiles", help="seed 001 image + mask tiles from annotated slides, split by slide",
                              description=__doc__.split("\n\n")[0].removeprefix("``equipath tiles``: "))
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="slides, folders, .txt lists, or a .csv of "
                                                              "slide,annotation")
    p.add_argument("--annotations", help="folder of {slide stem}.xml / .geojson (default: beside each slide)")
    add_out(p, required=True, help="output folder: {train,valid,test}/{images,masks}/ and tiles.csv")
    p.add_argument("-n", "--tiles", type=int, default=1000, help="tiles over all splits (default 1000)")
    p.add_argument("--size", type=int, default=321, help="tile side in pixels (default 321, seed 001's 320 made "
                                                         "admissible for the U-Nets)")
    p.add_argument("--mpp", type=float, default=0.972, help="microns per tile pixel (default 0.972, 10x)")
    p.add_argument("--ratios", type=int, nargs=3, default=[8, 1, 1], metavar=("TRAIN", "VALID", "TEST"),
                   help="split ratio by slide (default 8 1 1)")
    p.add_argument("--slide-mpp", type=float, help="level-0 microns per pixel of slides whose files do not say")
    p.add_argument("--backend", default="auto", choices=["auto", "openslide", "tiffslide", "image"])
    add_seed(p)
    add_progress(p)
    p.set_defaults(func=run)


def _annotation(slide: Path, folder: Path | None) -> Path | None:
    for suffix in (".xml", ".geojson", ".json"):
        candidate = (folder or slide.parent) / f"{slide.stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _sources(inputs, annotations) -> list[tuple[Path, Path | None]]:
    if len(inputs) == 1 and inputs[0].lower().endswith(".csv"):
        path = Path(inputs[0])
        if not path.is_file():
            raise FileNotFoundError(f"slide list {path} does not exist")
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or "slide" not in rows[0]:
            raise ValueError(f"slide list {path}: expected a header with the columns slide and annotation")
        resolve = lambda p: None if not p else Path(p) if Path(p).is_absolute() else path.parent / p  # noqa: E731
        return [(resolve(r["slide"]), resolve((r.get("annotation") or "").strip())) for r in rows]
    folder = Path(annotations) if annotations else None
    return [(s, _annotation(s, folder)) for s in find_slides(inputs)]


def run(args) -> int:
    if args.tiles < 1 or args.size < 1 or min(args.ratios) < 0 or sum(args.ratios) < 1:
        raise ValueError(f"-n and --size must be >= 1 and --ratios non-negative, got {args.tiles}, {args.size}, "
                         f"{args.ratios}")
    sources = _sources(args.inputs, args.annotations)
    for slide, _ in sources:
        if not slide.is_file():
            raise FileNotFoundError(f"slide {slide} does not exist")
    with OutputLock(args.out, command="tiles"):
        summary = build_tiles(sources, args.out, args.tiles, size=args.size, mpp=args.mpp, ratios=tuple(args.ratios),
                              tissue=TissueOptions(), seed=args.seed, backend=args.backend,
                              slide_mpp=args.slide_mpp, progress=args.progress)
        write_json(Path(args.out) / "tiles.json", {**summary, "sources": [[str(s), str(a) if a else None]
                                                                       for s, a in sources],
                                                   "size": args.size, "mpp": args.mpp, "seed": args.seed})
    print(f"{sum(summary['tiles'].values())} tiles ({summary['tiles']}) from {len(sources)} slides -> {args.out}")
    return 0
