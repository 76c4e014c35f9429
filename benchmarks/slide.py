"""Whole-slide inference at the machine's limit: ``predict_dense`` of ``p4m_densenet`` (K = 64, random
weights: timing only) at 10x, end to end, against the two bounds it cannot beat, and where the rest goes.

    python benchmarks/slide.py                        # the CMU slide (real H&E, 0.499 um/px, resampled to 10x)
    python benchmarks/slide.py --large                # a generated Camelyon16-size slide, 1/8 of the area
    python benchmarks/slide.py --large --area 1       # the full 25,000 x 50,000 px (about 1.25 Gpx) slide
    python benchmarks/slide.py --plan legacy --tile-cells 16 --batch-size 2 --no-fold   # the previous planner

Definitions (issue 15):

* useful work: the multiply-accumulates the tissue cells need with full reuse. The model's cost on an
  ``h x w``-cell tile is exactly ``A h w + B (h + w) + C`` (:class:`equipath.wsi.inference.TileCost`,
  counted on the model); useful = ``A * tissue cells + B / 2 * tissue perimeter (cell edges)``: every cell
  once, plus the receptive-field margin of the tissue's own outline.
* roofline: the useful work at the multiply-accumulate rate of a plain conv stack (3x3 convolutions,
  256 channels, 128 x 128 px, float32, the same process and device) measured in the same run.
* decode rate: level-0 megapixels per second (wall, and per CPU-second of the decoding thread) a fresh
  reader of the slide decodes (JPEG) over the tiles of the run; decode bound = tissue level-0 pixels at
  that rate.
* fraction of roofline (of decode rate) = bound time / measured time, in wall time and in CPU time (on a
  shared machine only the CPU-time fractions mean much); target >= 0.8 of the larger bound.

Where the time goes: the work computed beyond the useful (cells off tissue, tile margins) in MACs and in
seconds at the measured model rate; reading split into decoding and resampling; the model on tiles
already in memory; and the rest of the wall time (reading not hidden behind compute, Python, writing the
map); with ``--sample``, these are measured on that many tiles and scaled by MACs, so they carry the
sample's error (printed as not resolved where it exceeds the quantity). Each slide runs in a fresh
process; the peak memory is the run's own: the kernel's peak resident set (``VmHWM``), reset when
``predict_dense`` starts (CUDA: ``max_memory_allocated``), beside the process's lifetime peak.
``--large`` writes the slide (JPEG tiles via tifffile, a pyramid at 8x and 32x, about a third tissue
from real CMU tiles and the synthetic generator) into a temporary folder and deletes it afterwards.
"""

import argparse
import math
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import append_rows, reset_peak_resident, resident_mib  # noqa: E402

CMU = Path(__file__).resolve().parents[1] / "tests" / "data" / "CMU-1-Small-Region.svs"
LARGE_SIZE, LARGE_MPP, LARGE_TILE = (50_000, 25_000), 0.97, 512  # (W, H): Camelyon16 at 10x


# ------------------------------------------------------------------------------------------ the large slide
def _tissue_bank(seed: int, n_cmu: int = 24, n_synthetic: int = 4) -> list:
    """512 x 512 tissue tiles: crops of the CMU slide halved to 0.998 um/px (tissue only), and synthetic
    tiles (256 x 256, four D4 poses of one tile side by side)."""
    from equipath.data.synthetic import synthetic_tile
    from equipath.wsi import open_slide

    rng = np.random.default_rng(seed)
    with open_slide(CMU) as slide:
        full = slide.read_region(0, 0, *slide.dimensions)
    h, w = full.shape[0] // 2, full.shape[1] // 2
    cmu = full[:2 * h, :2 * w].reshape(h, 2, w, 2, 3).mean(axis=(1, 3)).astype(np.uint8)
    bank = []
    while len(bank) < n_cmu:
        y, x = rng.integers(0, cmu.shape[0] - LARGE_TILE), rng.integers(0, cmu.shape[1] - LARGE_TILE)
        crop = cmu[y:y + LARGE_TILE, x:x + LARGE_TILE]
        if (crop.min(axis=2) < 200).mean() > 0.6:  # mostly stained tissue
            bank.append(np.ascontiguousarray(crop))
    for i in range(n_synthetic):
        q = synthetic_tile(i, seed=seed, size=(LARGE_TILE // 2, LARGE_TILE // 2)).image
        bank.append(np.concatenate([np.concatenate([q, np.rot90(q)], 1),
                                    np.concatenate([np.rot90(q, 2), np.rot90(q, 3)], 1)], 0))
    return bank


def write_large_slide(path: Path, width: int, height: int, seed: int = 0) -> dict:
    """A JPEG-tiled pyramidal TIFF ``width x height`` at 0.97 um/px: blobs of tissue (about a third of the
    area) filled with tiles of the bank (random D4 poses), white glass with noise elsewhere."""
    import tifffile

    from equipath.data.tissue import resize_nearest

    rng = np.random.default_rng(seed)
    bank = _tissue_bank(seed)
    t = LARGE_TILE
    rows, cols = math.ceil(height / t), math.ceil(width / t)
    # tissue mask at 1/64: a few ellipses, grown until about a third of the slide is covered
    mh, mw = math.ceil(height / 64), math.ceil(width / 64)
    yy, xx = np.mgrid[:mh, :mw]
    mask = np.zeros((mh, mw), bool)
    while mask.mean() < 1 / 3:
        cy, cx = rng.uniform(0, mh), rng.uniform(0, mw)
        ry, rx = rng.uniform(0.05, 0.2) * mh, rng.uniform(0.05, 0.2) * mw
        mask |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
    levels = {8: np.empty((height // 8, width // 8, 3), np.uint8), 32: np.empty((height // 32, width // 32, 3), np.uint8)}

    def tiles():
        for r in range(rows):
            for c in range(cols):
                glass = (240 + rng.integers(-4, 5, (t, t, 1))).astype(np.uint8).repeat(3, axis=2)
                block = mask[r * 8:(r + 1) * 8, c * 8:(c + 1) * 8]
                if block.any():
                    k = rng.integers(len(bank))
                    tissue = np.rot90(bank[k], rng.integers(4))
                    tissue = tissue[:, ::-1] if rng.random() < 0.5 else tissue
                    full = np.zeros((8, 8), bool)
                    full[:block.shape[0], :block.shape[1]] = block
                    m = resize_nearest(full, (t, t))[..., None]
                    glass = np.where(m, tissue, glass)
                y0, x0 = r * t, c * t
                for f, level in levels.items():
                    part = glass[::f, ::f][: max(0, level.shape[0] - y0 // f), : max(0, level.shape[1] - x0 // f)]
                    level[y0 // f:y0 // f + part.shape[0], x0 // f:x0 // f + part.shape[1]] = part
                yield glass

    options = dict(photometric="rgb", compression="jpeg", compressionargs={"level": 90}, tile=(t, t),
                   resolutionunit="CENTIMETER")
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(tiles(), shape=(rows * t, cols * t, 3), dtype=np.uint8,
                  resolution=(1e4 / LARGE_MPP, 1e4 / LARGE_MPP), **options)
        for f, level in levels.items():
            tif.write(level, subfiletype=1, resolution=(1e4 / (LARGE_MPP * f),) * 2, **options)
    return {"size": (cols * t, rows * t), "tissue_fraction": float(mask.mean())}


# ------------------------------------------------------------------------------------------ measurements
def _peak_mib(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _PeakDuring:
    """The largest memory of this process while the block runs: the run's own peak, which the process's
    lifetime peak (``ru_maxrss``) hides when something before the run used more. The CPU: the kernel's
    peak resident set (``VmHWM``) reset at the start; CUDA: the allocator's peak. ``peak`` is None where
    neither can be read."""

    def __init__(self, device):
        self.device, self.peak, self.start = device, None, None

    def __enter__(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated() / 2**20
            return self
        try:
            reset_peak_resident()
            self.start = resident_mib("VmRSS")
        except OSError:  # not Linux
            pass
        return self

    def __exit__(self, *exc):
        import torch

        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated() / 2**20
        elif self.start is not None:
            self.peak = resident_mib("VmHWM")
        return False


def legacy_band_tiles(cells: np.ndarray, tile_cells: int) -> list:
    """The previous planner (before issue 15), for the before/after comparison: bands of ``tile_cells``
    rows cut into runs of tissue columns (gaps under 4 cells merged), each run into equal pieces."""
    tiles = []
    for i in range(0, cells.shape[0], tile_cells):
        h = min(tile_cells, cells.shape[0] - i)
        band = np.flatnonzero(cells[i:i + h].any(axis=0))
        if not len(band):
            continue
        for run in np.split(band, np.flatnonzero(np.diff(band) > 3) + 1):
            length = int(run[-1] + 1 - run[0])
            width = -(-length // -(-length // tile_cells))
            tiles += [(i, int(j), h, min(width, int(run[-1]) + 1 - int(j))) for j in range(run[0], run[-1] + 1, width)]
    return tiles


def _perimeter(cells: np.ndarray) -> int:
    """Cell edges between tissue and non-tissue (the slide's outside counts as non-tissue)."""
    p = np.pad(cells, 1)
    return int((p[1:] != p[:-1]).sum() + (p[:, 1:] != p[:, :-1]).sum())


def _conv_stack(model, side: int, device):
    """The model's own convolutions (folded: plain ``nn.Conv2d``), each on a random input of the shape it
    gets on a ``side x side`` px tile, as a plain stack: the same arithmetic without anything else."""
    import torch

    from equipath.nn import fold_model

    model = fold_model(model)
    shapes = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: shapes.append((mod, tuple(inp[0].shape))))
             for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.inference_mode():
        model.forward_dense(torch.zeros(1, 3, side, side, device=device))
    for hook in hooks:
        hook.remove()
    inputs = [(mod, torch.rand(shape, device=device)) for mod, shape in shapes]
    macs = sum(mod(x).numel() * mod.weight[0].numel() for mod, x in inputs)

    def run():
        with torch.inference_mode():
            for mod, x in inputs:
                mod(x)
    return run, macs


def _generic_stack(device):
    """3x3 convolutions, 256 channels, 128 x 128 px, float32: what this device does at its best."""
    import torch

    stack = torch.nn.Sequential(*[torch.nn.Conv2d(256, 256, 3, padding=1, bias=False) for _ in range(2)]).to(device)
    x = torch.rand(1, 256, 128, 128, device=device)

    def run():
        with torch.inference_mode():
            stack(x)
    return run, 2 * 128 * 128 * 256 * 256 * 9


def _rates(model, side: int, device, repeats: int = 7) -> dict:
    """MACs per wall second and per CPU second of the roofline stack (the model's own convolutions) and of
    the generic stack, timed interleaved."""
    import torch

    from _timing import interleaved

    own, own_macs = _conv_stack(model, side, device)
    generic, generic_macs = _generic_stack(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t = interleaved({"own": own, "generic": generic}, repeats, warmup=1, sync=sync)
    return {"own_wall": own_macs / statistics.median(t["own"].wall), "own_cpu": own_macs / statistics.median(t["own"].cpu),
            "generic_wall": generic_macs / statistics.median(t["generic"].wall),
            "generic_cpu": generic_macs / statistics.median(t["generic"].cpu)}


def measure(args, slide_path: str) -> dict:
    """One slide, in this (fresh) process: end-to-end run, bounds and breakdown."""
    import torch

    from equipath.models import create_model
    from equipath.training.device import device_plan
    from equipath.wsi import Grid, SlideView, open_slide, predict_dense, tissue_cells
    from equipath.wsi.inference import TileCost, _Runner, memory_plan, plan_tiles

    torch.manual_seed(0)
    plan = device_plan(args.device or "auto")
    model = create_model("p4m_densenet").eval()
    reader = open_slide(slide_path)
    view = SlideView.at(reader, mpp=args.mpp)
    grid = Grid.for_view(view, model)
    t0 = time.perf_counter()
    _, _, cells = tissue_cells(view, grid)
    tissue_s = time.perf_counter() - t0
    s, rf = grid.stride, grid.receptive_field
    legacy = args.plan == "legacy"
    # the plan predict_dense will use, its work, and the roofline stack's rate before the run
    runner = _Runner(model, plan, fold=not args.no_fold)
    cost = TileCost.of_model(runner.model)
    auto_cells, auto_batch = memory_plan(runner.model, plan.device)
    tile_cells, batch_size = args.tile_cells or auto_cells, args.batch_size or auto_batch
    tiles = legacy_band_tiles(cells, tile_cells) if legacy else plan_tiles(cells, tile_cells, cost)
    n = int(cells.sum())
    computed_cells = sum(h * w for *_, h, w in tiles)
    computed = sum(cost(h, w) for *_, h, w in tiles)
    useful = cost.A * n + cost.B / 2 * _perimeter(cells)
    off_tissue = cost.A * (computed_cells - n)
    margins = computed - cost.A * computed_cells
    side = (int(np.clip(round(math.sqrt(computed_cells / len(tiles))), 2, 16)) - 1) * s + rf  # a typical tile
    rates_before = _rates(runner.model, side, plan.device)
    before = _peak_mib(plan.device)
    kwargs = dict(tile_cells=args.tile_cells, batch_size=args.batch_size, device=plan, fold=not args.no_fold,
                  progress=False)
    with torch.inference_mode():  # warm-up: one 2 x 2-cell tile (first-call initialisation of torch)
        model.forward_dense(torch.rand(1, 3, s + rf, s + rf, device=plan.device))
    if legacy:
        import equipath.wsi.inference as inference

        planner, inference.plan_tiles = inference.plan_tiles, lambda c, t, cost=None: legacy_band_tiles(c, t)
    with _PeakDuring(plan.device) as during:
        t0, c0 = time.perf_counter(), time.process_time()
        prob = predict_dense(model, view, grid, cells, **kwargs)
        if plan.device.type == "cuda":
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    # the lifetime peak: resetting VmHWM also resets what getrusage reports, so the peak before counts too
    peak = max(before, _peak_mib(plan.device))
    run_peak, start_mib = during.peak or peak, during.start
    if legacy:
        inference.plan_tiles = planner

    # breakdown on a sample of tiles (all of them unless --sample): read, decode, model
    rng = np.random.default_rng(0)
    sample = tiles if args.sample <= 0 or args.sample >= len(tiles) else \
        [tiles[k] for k in sorted(rng.choice(len(tiles), args.sample, replace=False))]
    share = sum(cost(h, w) for *_, h, w in sample) / computed
    read_s = decode_s = model_s = model_cpu = 0.0
    level0_px = 0
    f, ds = view.factor, reader.level_downsamples[view.level]
    predictor = _dense(runner)
    decoder = open_slide(slide_path)  # fresh readers: no decoded tile is served from the other's cache
    fresh_view = SlideView(open_slide(slide_path), view.downsample)
    decode_cpu = 0.0
    for i, j, h, w in sample:
        x, y = grid.patch_origin(i, j)
        W, H = (w - 1) * s + rf, (h - 1) * s + rf
        t0, c0 = time.perf_counter(), time.thread_time()
        decoder.read_region(math.floor(x * f), math.floor(y * f), math.ceil(W * f), math.ceil(H * f), view.level)
        decode_s += time.perf_counter() - t0
        decode_cpu += time.thread_time() - c0
        level0_px += math.ceil(W * f * ds) * math.ceil(H * f * ds)
        t0 = time.perf_counter()
        pixels = fresh_view.read(x, y, W, H)
        read_s += time.perf_counter() - t0
        t0, c0 = time.perf_counter(), time.process_time()
        runner.probabilities(predictor, np.array(pixels)[None])
        if plan.device.type == "cuda":
            torch.cuda.synchronize()
        model_s += time.perf_counter() - t0
        model_cpu += time.process_time() - c0
    read_s, decode_s, model_s, model_cpu = read_s / share, decode_s / share, model_s / share, model_cpu / share
    after = _rates(runner.model, side, plan.device)
    # the roofline is an upper bound: the faster of the two measurements, before and after the run (a long
    # run can leave the machine slower, e.g. memory too fragmented for huge pages; both are printed)
    rates = {k: max(rates_before[k], after[k]) for k in after}
    rates["own_wall_before"], rates["own_wall_after"] = rates_before["own_wall"], after["own_wall"]
    decode_rate = level0_px / (decode_s * share)  # level-0 px per second
    decode_rate_cpu = level0_px / decode_cpu  # per CPU-second of the decoding thread
    tissue_level0 = n * (s * grid.downsample) ** 2
    roofline_s, decode_bound_s = useful / rates["own_wall"], tissue_level0 / decode_rate
    roofline_cpu = useful / rates["own_cpu"]
    decode_bound_cpu = tissue_level0 / decode_rate_cpu
    model_rate = computed / model_s
    return {
        "slide": Path(slide_path).name, "device": str(plan.device), "view": view.shape, "grid": grid.shape,
        "tissue_cells": n, "tissue_mpx": n * s * s / 1e6, "tissue_s": tissue_s, "wall": wall, "cpu": cpu,
        "peak": peak, "before": before, "run_peak": run_peak, "start": start_mib, "tiles": len(tiles), "tile_cells": tile_cells, "batch_size": batch_size,
        "computed_cells": computed_cells, "useful": useful, "computed": computed, "off_tissue": off_tissue,
        "margins": margins, "useful_margin": cost.B / 2 * _perimeter(cells), "rates": rates, "rate": rates["own_wall"],
        "model_rate": model_rate, "model_cpu": model_cpu, "roofline_cpu": roofline_cpu, "stack_side": side,
        "decode_rate_cpu": decode_rate_cpu, "decode_bound_cpu": decode_bound_cpu,
        "decode_rate": decode_rate, "roofline_s": roofline_s, "decode_bound_s": decode_bound_s,
        "read_s": read_s, "decode_s": decode_s, "model_s": model_s, "sampled": len(sample),
        "prob_checksum": float(np.asarray(prob)[cells].sum()), "plan": args.plan, "fold": not args.no_fold,
    }


def _dense(runner):
    from equipath.wsi.inference import _predictor

    return _predictor(runner.model, dense=True, tta=False)


def _in_fresh_process(fn, *args):
    with ProcessPoolExecutor(1, mp_context=get_context("spawn"), max_tasks_per_child=1) as pool:
        return pool.submit(fn, *args).result()


def report(r: dict, title: str) -> list:
    print(f"\n{title}: {r['slide']}, p4m_densenet (K=64, random weights), device {r['device']}, planner {r['plan']}, "
          f"fold {r['fold']}")
    print(f"  view {r['view'][1]:,} x {r['view'][0]:,} px at 10x; grid {r['grid'][1]} x {r['grid'][0]} cells of 32 px; "
          f"{r['tissue_cells']:,} tissue cells = {r['tissue_mpx']:.1f} Mpx (tissue detection {r['tissue_s']:.1f} s)")
    print(f"  plan: {r['tiles']} tiles of at most {r['tile_cells']}^2 cells, batches of {r['batch_size']}; "
          f"{r['computed_cells']:,} cells computed for {r['tissue_cells']:,} tissue cells "
          f"({r['computed_cells'] / r['tissue_cells']:.2f}x)")
    bound = max(r["roofline_s"], r["decode_bound_s"])
    print(f"  end to end: wall {r['wall']:.1f} s, CPU {r['cpu']:.1f} s, tissue {r['tissue_mpx'] / r['wall']:.3f} Mpx/s, "
          f"peak memory during the run {r['run_peak']:,.0f} MiB ({r['start'] or 0:,.0f} MiB at its start; the "
          f"process's lifetime peak {r['peak']:,.0f} MiB, {r['before']:,.0f} MiB before the run)")
    g = r["rates"]
    print(f"  roofline: useful {r['useful'] / 1e12:.3f} TMAC at the rate of the model's own convolutions as a plain "
          f"stack ({r['stack_side']} px tile): {g['own_wall'] / 1e9:.1f} GMAC/s wall (the faster of "
          f"{g['own_wall_before'] / 1e9:.1f} before the run and {g['own_wall_after'] / 1e9:.1f} after) = {r['roofline_s']:.1f} s -> "
          f"fraction of roofline {r['roofline_s'] / r['wall']:.2f} (wall); {g['own_cpu'] / 1e9:.1f} GMAC per CPU-s = "
          f"{r['roofline_cpu']:.1f} CPU-s -> {r['roofline_cpu'] / r['cpu']:.2f} (CPU time)")
    print(f"  (a generic 256-channel 3x3 stack runs {g['generic_wall'] / 1e9:.1f} GMAC/s wall, "
          f"{g['generic_cpu'] / 1e9:.1f} GMAC per CPU-s: fraction {r['useful'] / g['generic_cpu'] / r['cpu']:.2f} "
          f"of that in CPU time)")
    print(f"  decode: {r['decode_rate'] / 1e6:.1f} level-0 Mpx/s wall, {r['decode_rate_cpu'] / 1e6:.1f} per CPU-s -> "
          f"tissue decode bound {r['decode_bound_s']:.1f} s, {r['decode_bound_cpu']:.1f} CPU-s -> fraction of decode "
          f"rate {r['decode_bound_s'] / r['wall']:.2f} (wall), {r['decode_bound_cpu'] / r['cpu']:.2f} (CPU time)")
    print(f"  fraction of the larger bound (target >= 0.80): {bound / r['wall']:.2f} (wall), "
          f"{max(r['roofline_cpu'], r['decode_bound_cpu']) / r['cpu']:.2f} (CPU time)")
    per_s = r["model_s"] / r["computed"]  # seconds per computed MAC at the model's measured rate
    print(f"  where the work goes (MACs): useful cells {r['useful'] - r['useful_margin']:.3g} + tissue outline margin "
          f"{r['useful_margin']:.3g} | computed {r['computed']:.3g}: cells off tissue {r['off_tissue']:.3g} "
          f"({r['off_tissue'] / r['computed']:.0%}), tile margins {r['margins']:.3g} ({r['margins'] / r['computed']:.0%})")
    print(f"  where the time goes (s; measured serially on {r['sampled']} of {r['tiles']} tiles, scaled by MACs):")
    print(f"    model on tiles in memory {r['model_s']:.1f} s, {r['model_cpu']:.1f} CPU-s ({r['model_rate'] / 1e9:.1f} GMAC/s = "
          f"{r['model_rate'] / r['rate']:.2f} of the plain stack): useful {r['useful'] * per_s:.1f}, off-tissue cells "
          f"{r['off_tissue'] * per_s:.1f}, tile margins beyond the outline {(r['margins'] - r['useful_margin']) * per_s:.1f}")
    resample = r["read_s"] - r["decode_s"]
    print(f"    reading {r['read_s']:.1f} s = decoding {r['decode_s']:.1f} + resampling "
          + (f"{resample:.1f}" if resample >= 0 else "not resolved (the sample read faster than it decoded)")
          + " (in threads beside the model)")
    rest = r["wall"] - r["model_s"]
    if rest >= 0 or r["sampled"] >= r["tiles"]:
        print(f"    rest of the wall time (reading not hidden, Python, writing the map): {rest:.1f} s")
    else:  # the sampled tiles' rate, scaled to the whole run, overshoots it: the sample's error, not time
        print(f"    rest of the wall time: not resolved; the {r['sampled']} sampled tiles, timed alone and scaled "
              f"by MACs, overshoot the whole run by {-rest:.0f} s ({-rest / r['wall']:.0%}): the breakdown's "
              f"sampling error")
    name = f"slide {r['slide']} ({r['device']}, planner {r['plan']})"
    return [(name, "end to end wall s", f"{r['wall']:.1f}", f"CPU {r['cpu']:.1f} s"),
            (name, "tissue Mpx/s", f"{r['tissue_mpx'] / r['wall']:.3f}", f"{r['tissue_mpx']:.1f} Mpx of tissue"),
            (name, "fraction of roofline (wall; CPU time)", f"{r['roofline_s'] / r['wall']:.2f}",
             f"{r['roofline_cpu'] / r['cpu']:.2f} in CPU time; own convs as a plain stack {r['rate'] / 1e9:.1f} GMAC/s"),
            (name, "fraction of decode rate (wall; CPU time)", f"{r['decode_bound_s'] / r['wall']:.2f}",
             f"{r['decode_bound_cpu'] / r['cpu']:.2f} in CPU time; {r['decode_rate'] / 1e6:.1f} level-0 Mpx/s"),
            (name, "peak memory MiB (during the run)", f"{r['run_peak']:,.0f}",
             f"{r['start'] or 0:,.0f} at its start; process lifetime peak {r['peak']:,.0f}"),
            (name, "cells computed / tissue cells", f"{r['computed_cells'] / r['tissue_cells']:.2f}",
             f"{r['tiles']} tiles")]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mpp", type=float, default=0.972, help="model resolution (default 0.972: 10x)")
    parser.add_argument("--large", action="store_true", help="generate and time a Camelyon16-size slide")
    parser.add_argument("--area", type=float, default=0.125,
                        help="with --large: fraction of the 25,000 x 50,000 px area (default 1/8; 1 = full size)")
    parser.add_argument("--tile-cells", type=int, help="largest tile side in cells (default: from memory)")
    parser.add_argument("--batch-size", type=int, help="tiles per forward pass (default: from memory)")
    parser.add_argument("--no-fold", action="store_true", help="run the group layers unfolded")
    parser.add_argument("--plan", choices=("tissue", "legacy"), default="tissue",
                        help="tiles following the tissue (default) or the previous band planner")
    parser.add_argument("--sample", type=int, default=0, help="tiles timed for the breakdown (0: all)")
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--keep", help="with --large: write the slide here and keep it")
    parser.add_argument("--markdown", help="append the rows to this markdown table")
    args = parser.parse_args()

    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, os.cpu_count() = {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    rows = []
    if not args.large:
        rows += report(_in_fresh_process(measure, args, str(CMU)), "CMU slide")
    else:
        folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="equipath_large_"))
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "large_10x.tif"
        try:
            scale = math.sqrt(args.area)
            width, height = (max(LARGE_TILE, round(v * scale / LARGE_TILE) * LARGE_TILE) for v in LARGE_SIZE)
            t0 = time.perf_counter()
            info = _in_fresh_process(write_large_slide, path, width, height)
            print(f"\nwrote {path} ({path.stat().st_size / 2**20:,.0f} MiB): {info['size'][0]:,} x {info['size'][1]:,} px at "
                  f"{LARGE_MPP} um/px (level 0; pyramid 8x, 32x), JPEG tiles of {LARGE_TILE}, "
                  f"{info['tissue_fraction']:.0%} tissue (mask), area {args.area:g} of Camelyon16 at 10x, "
                  f"in {time.perf_counter() - t0:.0f} s")
            rows += report(_in_fresh_process(measure, args, str(path)),
                           f"generated slide, {args.area:g} of the Camelyon16 area")
        finally:
            if not args.keep:
                shutil.rmtree(folder, ignore_errors=True)
    if args.markdown:
        append_rows(args.markdown, rows)


if __name__ == "__main__":
    main()
