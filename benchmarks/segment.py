"""Tiled segmentation (``equipath.wsi.segment``): throughput, computed work per output pixel, and memory
that does not grow with the slide.

    python benchmarks/segment.py                       # all three parts, CPU defaults (a few minutes)
    python benchmarks/segment.py --width 64 --repeats 5 --device cuda   # the paper widths on a GPU

1. **Throughput**: predicted tissue megapixels per second of ``p4m_unet`` and ``unet`` (the same ``--width``,
   random weights: timing only) over the CMU slide at 10x (0.972 um/px, resampled from 0.499), tissue
   only, exact margin; interleaved repeats (rotating order), median [quartiles] and the paired ratio.
2. **Work**: pixels run through the model per predicted pixel, from the tile plan over the same tissue, at
   the default margin (the receptive radius: exact) and at half and a quarter of it (approximate), for both
   models and a few tile sides.
3. **Memory**: a synthetic pyramidal TIFF at two sizes (the same 1024 x 1024 px of real CMU tissue in the
   middle, glass around it, JPEG tiles, levels at 4x and 16x), each segmented (``p4m_unet``, width 4) in a
   fresh process writing its map to disk; the peak resident memory (``VmHWM``) of each process beside the
   size of the map it wrote (``--repeats`` fresh processes per size). The slides are written to a temporary
   folder and deleted afterwards.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import interleaved, paired_ratios, spread  # noqa: E402

CMU = Path(__file__).resolve().parents[1] / "tests" / "data" / "CMU-1-Small-Region.svs"
TISSUE = 1024


def _view():
    from equipath.wsi.reader import SlideView, open_slide

    return SlideView.at(open_slide(CMU), mpp=0.972)


def throughput(width: int, repeats: int, tile: int, device: str) -> list[str]:
    import torch

    from equipath.models import create_model
    from equipath.wsi.segment import segment_view

    torch.manual_seed(0)
    view = _view()
    models = {name: create_model(name, width=width).eval() for name in ("p4m_unet", "unet")}
    predicted = {}

    def run(name):
        prob = segment_view(models[name], view, tile=tile, device=device, progress=False)
        predicted[name] = int(np.isfinite(prob[0]).sum())

    samples = interleaved({name: (lambda n=name: run(n)) for name in models}, repeats, warmup=1)
    mpx = predicted["unet"] / 1e6
    lines = [f"CMU at 10x: view {view.shape[1]} x {view.shape[0]} px, {mpx:.2f} Mpx predicted (tissue cores), "
             f"width {width}, tile {tile}, {repeats} repeats, device {device}, torch threads {torch.get_num_threads()}"]
    for name, s in samples.items():
        lines.append(f"  {name:9s} tissue Mpx/s {spread([mpx / t for t in s.wall], digits=3)}  "
                     f"(wall s {spread(s.wall)})")
    ratio = paired_ratios(samples["p4m_unet"].wall, samples["unet"].wall)
    lines.append(f"  p4m_unet / unet wall time: {spread(ratio)}")
    return lines


def work(tiles: list[int]) -> list[str]:
    from equipath.models import create_model
    from equipath.wsi.segment import _tissue_cores, plan_segmentation
    from equipath.wsi.tissue import TissueOptions

    view = _view()
    lines = ["computed / predicted pixels over the CMU tissue at 10x (tile plan; r = receptive radius):",
             "  model      tile  margin r  margin r/2  margin r/4"]
    for name in ("p4m_unet", "unet"):
        model = create_model(name, width=2)
        r = model.receptive_radius
        for tile in tiles:
            ratios = []
            for margin in (r, r // 2, r // 4):
                plan = plan_segmentation(model, view.shape, tile, margin)
                keep = _tissue_cores(view, plan, TissueOptions())
                computed = plan.computed_pixels(int(sum(keep[i, j] for i, j in plan.tiles)))
                H, W = view.shape
                output = sum((min(e0 - plan.rows.pad, H) - max(b0 - plan.rows.pad, 0))
                             * (min(e1 - plan.cols.pad, W) - max(b1 - plan.cols.pad, 0))
                             for i, (b0, e0) in enumerate(plan.rows.cores)
                             for j, (b1, e1) in enumerate(plan.cols.cores) if keep[i, j])
                ratios.append(computed / output)
            lines.append(f"  {name:9s} {tile:5d}  " + "  ".join(f"{x:8.2f}" for x in ratios) + f"   (r = {r})")
    return lines


def _write_slide(path: Path, side: int) -> None:
    """A ``side`` x ``side`` pyramidal TIFF: glass, with the same CMU tissue block in the middle."""
    import tifffile

    from equipath.wsi.reader import SlideView, open_slide

    tissue = SlideView.at(open_slide(CMU)).read(500, 1500, TISSUE, TISSUE)
    t, lo = 256, (side - TISSUE) // 2
    lo -= lo % t

    def tile(r, c):
        block = np.full((t, t, 3), 240, np.uint8)
        y, x = r * t - lo, c * t - lo
        if 0 <= y < TISSUE and 0 <= x < TISSUE:
            block[:] = tissue[y:y + t, x:x + t]
        return block

    options = dict(photometric="rgb", compression="jpeg", compressionargs={"level": 90}, tile=(t, t),
                   resolutionunit="CENTIMETER")
    n = side // t
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write((tile(r, c) for r in range(n) for c in range(n)), shape=(side, side, 3), dtype=np.uint8,
                  resolution=(1e4 / 0.972, 1e4 / 0.972), **options)
        for f in (4, 16):
            level = np.full((side // f, side // f, 3), 240, np.uint8)
            level[lo // f:(lo + TISSUE) // f, lo // f:(lo + TISSUE) // f] = tissue[::f, ::f]
            tif.write(level, subfiletype=1, resolution=(1e4 / (0.972 * f),) * 2, **options)


def _hwm_mib() -> float:
    """Peak resident memory of this process so far (``VmHWM``), MiB."""
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) / 1024


def _child(slide: str, out: str, tile: int, device: str) -> None:
    """Segment ``slide`` into ``out``; print the view width, predicted pixels, the peak resident memory
    before and after the segmentation (model built, modules imported), the map's size and the seconds."""
    import torch

    from equipath.models import create_model
    from equipath.wsi.reader import SlideView, open_slide
    from equipath.wsi.segment import segment_view

    torch.manual_seed(0)
    model = create_model("p4m_unet", width=4).eval()
    model.receptive_radius  # the probe runs before the baseline is taken
    with open_slide(slide) as reader:
        view = SlideView.at(reader, level=0)
        before = _hwm_mib()
        t0 = time.perf_counter()
        prob = segment_view(model, view, tile=tile, device=device, dtype=np.float16, out=out, progress=False)
        seconds = time.perf_counter() - t0
        after = _hwm_mib()
        predicted = sum(int(np.isfinite(prob[0, y:y + 256]).sum()) for y in range(0, prob.shape[1], 256))
    print(f"{view.shape[1]} {predicted} {before:.0f} {after:.0f} {os.path.getsize(out) / 2**20:.0f} {seconds:.1f}")


def memory(sides: list[int], tile: int, device: str, repeats: int) -> list[str]:
    lines = ["peak resident memory (VmHWM) of a fresh process segmenting a synthetic pyramid (p4m_unet width 4, "
             f"map on disk), tile {tile}; baseline = after imports and the model, before segment_view:",
             "  slide side  predicted Mpx  map on disk MiB  baseline MiB  peak MiB  peak - baseline  seconds"]
    with tempfile.TemporaryDirectory() as tmp:
        for side in sides:
            slide = Path(tmp) / f"slide{side}.tif"
            _write_slide(slide, side)
            for _ in range(repeats):
                result = subprocess.run([sys.executable, __file__, "--child", str(slide),
                                         str(Path(tmp) / f"map{side}.npy"), "--tile", str(tile), "--device", device],
                                        capture_output=True, text=True, check=True)
                w, predicted, before, after, disk, seconds = result.stdout.split()
                lines.append(f"  {int(w):10d}  {int(predicted) / 1e6:12.2f}  {int(disk):15d}  {int(before):12d}  "
                             f"{int(after):8d}  {int(after) - int(before):15d}  {seconds:>7s}")
                (Path(tmp) / f"map{side}.npy").unlink()
            slide.unlink()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=8, help="U-Net width for the throughput part (default 8)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sides", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--parts", nargs="+", default=["throughput", "work", "memory"],
                        choices=["throughput", "work", "memory"])
    parser.add_argument("--child", nargs=2, metavar=("SLIDE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child, args.tile, args.device)
        return
    for part in args.parts:
        lines = {"throughput": lambda: throughput(args.width, args.repeats, args.tile, args.device),
                 "work": lambda: work([321, 513, 1025]),
                 "memory": lambda: memory(args.sides, args.tile, args.device, args.repeats)}[part]()
        print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
