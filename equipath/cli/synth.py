"""``equipath synth``: write the embedded synthetic data (always labelled synthetic).

    equipath synth pcam --out OUT --n 2048            PCam-format h5 files (train / valid / test)
    equipath synth tiles --out OUT --n 64 --size 320  segmentation tiles: images/, masks/, pairs.csv
    equipath synth segmentation --out OUT --n 8       data.root layout of segmentation: {train,valid}/{images,masks}
    equipath synth ocelot --out OUT --n 2             the OCELOT 2023 layout (metadata.json, images/, annotations/)
    equipath synth preview --out OUT.png              16 patches of each label, to look at
"""

from equipath.cli._options import (add_out, add_progress, add_seed, add_workers, positive_int as _positive,
                                   unit_interval)
from equipath.data import write_preview, write_synthetic_pcam, write_synthetic_tiles
from equipath.data.synthetic import DEFAULT_DIFFICULTY
from equipath.data.synthetic_sets import write_synthetic_ocelot


def _add_difficulty(parser) -> None:
    parser.add_argument("--difficulty", type=unit_interval, default=DEFAULT_DIFFICULTY,
                        help=f"0 = clear tumour cues, 1 = subtle, overlapping (default: {DEFAULT_DIFFICULTY:g}; "
                             "see docs/data.md)")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "synth", help="write the synthetic H&E-like data (PCam format, segmentation tiles, preview)",
        description="Write the deterministic procedural H&E-like data set that equipath uses when no real "
                    "data is given. Everything it writes is labelled SYNTHETIC.")
    sub = parser.add_subparsers(dest="what", metavar="WHAT", required=True)

    pcam = sub.add_parser("pcam", help="classification patches in the official PCam h5 format",
                          description="Write camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5 and "
                                      "_meta.csv of synthetic 96x96 patches, labelled 1 when a tumour-like "
                                      "nucleus lies in the centre 32x32; balanced.")
    add_out(pcam, required=True, help="output folder")
    pcam.add_argument("--n", type=_positive, default=1024, help="patches per split (default: 1024)")
    for split in ("train", "valid", "test"):
        pcam.add_argument(f"--n-{split}", type=_positive, default=None,
                          help=f"patches in the {split} split (default: --n)")
    add_seed(pcam, help="generator seed (default: 0)")
    add_workers(pcam, help="parallel processes (default: 0, this one)")
    pcam.add_argument("--label-noise", type=unit_interval, default=0.0,
                      help="probability of a flipped training label, below 0.5 (default: 0; valid and test stay clean)")
    add_progress(pcam)
    _add_difficulty(pcam)
    pcam.set_defaults(func=_run_pcam)

    tiles = sub.add_parser("tiles", help="segmentation tiles with tumour masks (PNG folders + pairs.csv)")
    add_out(tiles, required=True, help="output folder")
    tiles.add_argument("--n", type=_positive, default=64, help="number of tiles (default: 64)")
    tiles.add_argument("--size", type=_positive, nargs="+", default=[320], metavar="PX",
                       help="tile side, or height and width (default: 320)")
    tiles.add_argument("--split", choices=("train", "valid", "test"), default="train",
                       help="which random stream (default: train)")
    add_seed(tiles, help="generator seed (default: 0)")
    add_progress(tiles)
    _add_difficulty(tiles)
    tiles.set_defaults(func=_run_tiles)

    seg = sub.add_parser("segmentation", help="the segmentation training layout: {train,valid}/{images,masks}/",
                         description="Write OUT/train and OUT/valid, each images/ + masks/ (same file names) of "
                                     "synthetic tiles: the folder `data.dataset: segmentation` trains on.")
    add_out(seg, required=True, help="output folder (the config's data.root)")
    seg.add_argument("--n", type=_positive, default=16, help="training tiles (default: 16)")
    seg.add_argument("--n-valid", type=_positive, default=4, help="validation tiles (default: 4)")
    seg.add_argument("--size", type=_positive, default=64, help="tile side (default: 64)")
    add_seed(seg, help="generator seed (default: 0)")
    add_progress(seg)
    _add_difficulty(seg)
    seg.set_defaults(func=_run_segmentation)

    ocelot = sub.add_parser("ocelot", help="a tiny set in the OCELOT 2023 layout",
                            description="Write metadata.json, images/{train,val,test}/{cell,tissue}/NNN.jpg and "
                                        "annotations/{split}/cell/NNN.csv (x,y,class) + tissue/NNN.png of synthetic "
                                        "tiles, readable as data.dataset: ocelot.")
    add_out(ocelot, required=True, help="output folder (the config's data.root)")
    ocelot.add_argument("--n", type=_positive, default=2, help="samples per split (default: 2)")
    ocelot.add_argument("--size", type=_positive, default=256, help="image side (default: 256; OCELOT's is 1024)")
    add_seed(ocelot, help="generator seed (default: 0)")
    add_progress(ocelot)
    _add_difficulty(ocelot)
    ocelot.set_defaults(func=_run_ocelot)

    preview = sub.add_parser("preview", help="a picture of synthetic patches of each label",
                             description="Write a picture of synthetic patches, N of each label, with the "
                                         "centre 32x32 that decides the label outlined.")
    add_out(preview, required=True, help="image file to write (.png, .pdf, ...)")
    preview.add_argument("--n", type=_positive, default=16, help="patches per label (default: 16)")
    add_seed(preview, help="generator seed (default: 0)")
    _add_difficulty(preview)
    preview.set_defaults(func=_run_preview)


def _run_pcam(args) -> int:
    counts = {s: getattr(args, f"n_{s}") or args.n for s in ("train", "valid", "test")}
    paths = write_synthetic_pcam(args.out, counts, seed=args.seed, progress=args.progress,
                                 workers=args.workers, difficulty=args.difficulty, label_noise=args.label_noise)
    for split, (x, _) in paths.items():
        print(f"{split}: {counts[split]} SYNTHETIC patches -> {x.parent}")
    return 0


def _run_tiles(args) -> int:
    if len(args.size) > 2:
        raise ValueError(f"--size takes one or two values, got {len(args.size)}")
    size = (args.size[0], args.size[-1])
    csv_path = write_synthetic_tiles(args.out, args.n, size, seed=args.seed, split=args.split,
                                     progress=args.progress, difficulty=args.difficulty)
    print(f"{args.n} SYNTHETIC tiles of {size[0]}x{size[1]} -> {csv_path}")
    return 0


def _run_segmentation(args) -> int:
    for split, n in (("train", args.n), ("valid", args.n_valid)):
        write_synthetic_tiles(f"{args.out}/{split}", n, (args.size, args.size), seed=args.seed, split=split,
                              progress=args.progress, difficulty=args.difficulty)
    print(f"{args.n} + {args.n_valid} SYNTHETIC tiles -> {args.out}/{{train,valid}}/{{images,masks}}")
    return 0


def _run_ocelot(args) -> int:
    root = write_synthetic_ocelot(args.out, args.n, args.size, seed=args.seed, progress=args.progress,
                                  difficulty=args.difficulty)
    print(f"{args.n} SYNTHETIC samples per split (train, val, test) in the OCELOT layout -> {root}")
    return 0


def _run_preview(args) -> int:
    path = write_preview(args.out, n_per_class=args.n, seed=args.seed, difficulty=args.difficulty)
    print(f"SYNTHETIC preview -> {path}")
    return 0
