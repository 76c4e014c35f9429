"""Whole-slide benchmark on the real CMU slide: fully-convolutional vs patch-by-patch inference of
``p4m_densenet`` on the same output grid, side by side in one run.

    python benchmarks/slide.py [--mpp 0.972] [--positions 96] [--tile-cells 16] [--batch-size 4] [--device cpu]

Both modes read the slide through the same SlideView (10x, resampled from 0.499 um/px) and predict the
same tissue cells of the grid (stride 32 px, receptive field 96 px). Patch-by-patch is timed on a random
subset of the tissue cells (``--positions``; all of them with ``--positions 0``) and extrapolated to
every tissue cell, and its values are checked against the fully-convolutional map. Each mode runs in a
fresh process, so its peak memory (resident set size on the CPU, ``max_memory_allocated`` on a GPU) is its
own; CPU time (all threads of the process) is printed beside wall time, as it varies less with the load
of a shared machine. Weights are random (timing only); a GPU is used when present, in bf16 autocast.

Also measured: the cost of 8x D4 test-time augmentation against built-in equivariance on a 10 x 10-cell
window, and rotation stability (max |f(T_g x) - T_g f(x)| over D4) of p4m_densenet and of the planar
``densenet`` baseline with and without TTA. The projection for a Camelyon16-size slide at 10x prints its
arithmetic and its assumptions.
"""

import argparse
import os
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from equipath.wsi.inference import plan_tiles

CMU = Path(__file__).resolve().parents[1] / "tests" / "data" / "CMU-1-Small-Region.svs"
# A Camelyon16 slide, e.g. tumor_001.tif: 97,792 x 221,184 pixels at 0.243 um/px (level 0).
CAMELYON_LEVEL0, CAMELYON_MPP = (97_792, 221_184), 0.243


def _device(name):
    import torch

    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak(device) -> float:
    """Peak memory in MiB: GPU allocations on CUDA, else the process's peak resident set size."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _setup(args):
    import torch

    from equipath.models import create_model
    from equipath.wsi import Grid, SlideView, open_slide, tissue_cells

    torch.manual_seed(0)
    device = _device(args.device)
    model = create_model("p4m_densenet").eval().to(device)
    slide = open_slide(CMU)
    view = SlideView.at(slide, mpp=args.mpp)
    grid = Grid.for_view(view, model)
    t0 = time.perf_counter()
    _, _, cells = tissue_cells(view, grid)
    return device, model, view, grid, cells, time.perf_counter() - t0


def run_dense(args):
    import torch

    from equipath.wsi import predict_dense

    device, model, view, grid, cells, tissue_s = _setup(args)
    before = _peak(device)
    size = (args.tile_cells - 1) * grid.stride + grid.receptive_field
    with torch.inference_mode():  # warm-up: one tile
        model.forward_dense(torch.rand(1, 3, size, size, device=device))
    _sync(device)
    kwargs = dict(tile_cells=args.tile_cells, batch_size=args.batch_size, device=device, progress=False)
    t0, c0 = time.perf_counter(), time.process_time()
    prob = predict_dense(model, view, grid, cells, **kwargs)
    _sync(device)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"seconds": seconds, "cpu": cpu, "peak": _peak(device), "before": before, "prob": np.asarray(prob), "cells": cells,
            "grid": grid, "tissue_s": tissue_s, "view_shape": view.shape, "device": str(device)}


def run_patches(args, positions):
    from equipath.wsi import predict_patches

    device, model, view, grid, _, _ = _setup(args)
    before = _peak(device)
    predict_patches(model, view, grid, positions[:8], batch_size=8, device=device, progress=False)  # warm-up
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    values = predict_patches(model, view, grid, positions, batch_size=args.patch_batch, device=device, progress=False)
    _sync(device)
    return {"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0, "peak": _peak(device),
            "before": before, "values": values}


def run_tta_and_stability(args):
    """TTA cost and D4 stability on a 10 x 10-cell square window of the slide (a symmetric grid)."""
    import torch

    from equipath.groups import get_group
    from equipath.models import create_model
    from equipath.wsi import Grid, SlideView, open_slide, predict_dense

    device, p4m, view, grid, cells, _ = _setup(args)
    rows, cols = np.nonzero(cells)
    i0, j0 = int(np.median(rows)) - 5, int(np.median(cols)) - 5
    image = view.read(j0 * 32, i0 * 32, 320, 320)
    d4 = get_group("p4m")
    torch.manual_seed(0)
    baseline = create_model("densenet").eval().to(device)

    def predict(model, img, tta):
        v = SlideView.at(open_slide(np.ascontiguousarray(img)))
        t0 = time.perf_counter()
        p = predict_dense(model, v, Grid.for_view(v, model), tile_cells=10, batch_size=1, device=device,
                          tta=tta, progress=False)
        _sync(device)
        return np.asarray(p), time.perf_counter() - t0

    def act(img, g):  # the planar action on an (H, W, 3) image, through the group module
        return d4.transform(img.transpose(2, 0, 1), g).transpose(1, 2, 0)

    def instability(model, tta):
        ref, _ = predict(model, image, tta)
        return max(np.abs(predict(model, act(image, g), tta)[0] - d4.transform(ref, g)).max() for g in range(1, 8))

    predict(p4m, image, False)  # warm-up
    plain, t_plain = predict(p4m, image, False)
    tta, t_tta = predict(p4m, image, True)
    return {"t_plain": t_plain, "t_tta": t_tta, "p4m_tta_change": float(np.abs(tta - plain).max()),
            "p4m": instability(p4m, False), "densenet": instability(baseline, False),
            "densenet_tta": instability(baseline, True)}


def _in_fresh_process(fn, *args):
    with ProcessPoolExecutor(1, mp_context=get_context("spawn"), max_tasks_per_child=1) as pool:
        return pool.submit(fn, *args).result()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mpp", type=float, default=0.972, help="model resolution (default 0.972: 10x)")
    parser.add_argument("--positions", type=int, default=96, help="tissue cells timed patch by patch (0: all)")
    parser.add_argument("--tile-cells", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=2, help="tiles per forward pass")
    parser.add_argument("--patch-batch", type=int, default=64, help="patches per forward pass")
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--tissue-fraction", type=float, default=0.3,
                        help="tissue fraction assumed for the Camelyon16 projection (default 0.3)")
    parser.add_argument("--no-tta", action="store_true", help="skip the TTA / stability measurements")
    args = parser.parse_args()

    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, os.cpu_count() = {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    dense = _in_fresh_process(run_dense, args)
    grid, cells = dense["grid"], dense["cells"]
    tissue = np.argwhere(cells)
    n_tissue = len(tissue)
    rng = np.random.default_rng(0)
    subset = tissue if args.positions <= 0 or args.positions >= n_tissue else \
        tissue[rng.choice(n_tissue, args.positions, replace=False)]
    patches = _in_fresh_process(run_patches, args, subset)
    agreement = np.abs(dense["prob"][subset[:, 0], subset[:, 1]] - patches["values"]).max()
    t_dense = dense["seconds"]
    t_patch = patches["seconds"] * n_tissue / len(subset)
    cpu_dense, cpu_patch = dense["cpu"], patches["cpu"] * n_tissue / len(subset)
    s = grid.stride
    tissue_mpx = n_tissue * s * s / 1e6

    print(f"\nCMU-1-Small-Region.svs (real H&E), p4m_densenet (K=64, random weights), device {dense['device']}")
    print(f"view {dense['view_shape'][1]} x {dense['view_shape'][0]} px at {args.mpp} um/px; grid "
          f"{grid.shape[1]} x {grid.shape[0]} cells of {s} px, {n_tissue} tissue cells = {tissue_mpx:.3f} Mpx of tissue "
          f"(tissue detection {dense['tissue_s']:.2f} s)")
    print(f"{'mode':<28}{'wall s':>10}{'CPU s':>10}{'peak MiB':>11}{'(before run)':>14}{'tissue Mpx/s':>14}")
    print(f"{'fully-convolutional':<28}{t_dense:>10.2f}{cpu_dense:>10.2f}{dense['peak']:>11.0f}{dense['before']:>14.0f}"
          f"{tissue_mpx / t_dense:>14.4f}")
    print(f"{'patch-by-patch (extrap.)':<28}{t_patch:>10.2f}{cpu_patch:>10.2f}{patches['peak']:>11.0f}"
          f"{patches['before']:>14.0f}{tissue_mpx / t_patch:>14.4f}")
    print(f"patch-by-patch measured on {len(subset)} of {n_tissue} tissue cells in {patches['seconds']:.2f} s, "
          f"extrapolated x {n_tissue / len(subset):.2f}")
    print(f"speed-up fully-convolutional / patch-by-patch: {t_patch / t_dense:.1f}x in wall time, "
          f"{cpu_patch / cpu_dense:.1f}x in CPU time (target >= 20x)")
    rf = grid.receptive_field
    tiles = plan_tiles(cells, args.tile_cells)
    dense_px = sum(((h - 1) * s + rf) * ((w - 1) * s + rf) for _, _, h, w in tiles)
    patch_px = n_tissue * rf * rf
    print(f"input pixels through the model: fully-convolutional {len(tiles)} tiles of up to {args.tile_cells}^2 "
          f"cells = {dense_px / 1e6:.2f} Mpx, patch-by-patch {n_tissue} x {rf}^2 = {patch_px / 1e6:.2f} Mpx "
          f"(ratio {patch_px / dense_px:.1f}x; at most (rf / s)^2 = {(rf / s) ** 2:.0f}x, on solid tissue)")
    print(f"per input pixel: fully-convolutional {dense_px / 1e6 / t_dense:.4f} Mpx/s, patch-by-patch "
          f"{patch_px / 1e6 / t_patch:.4f} Mpx/s")
    print(f"max |fully-convolutional - patch-by-patch| on the timed cells: {agreement:.2e}")

    w0, h0 = CAMELYON_LEVEL0
    factor = args.mpp / CAMELYON_MPP
    w, h = w0 / factor, h0 / factor
    total_mpx = w * h / 1e6
    camelyon_tissue = total_mpx * args.tissue_fraction
    rate = tissue_mpx / t_dense
    print("\nProjection for a Camelyon16 slide at 10x:")
    print(f"  {w0:,} x {h0:,} px at {CAMELYON_MPP} um/px -> / {factor:.2f} -> {w:,.0f} x {h:,.0f} px = "
          f"{total_mpx:,.0f} Mpx at {args.mpp} um/px")
    print(f"  x {args.tissue_fraction} tissue (assumed) = {camelyon_tissue:,.0f} Mpx of tissue")
    print(f"  / {rate:.4f} Mpx/s (measured above) = {camelyon_tissue / rate:,.0f} s "
          f"= {camelyon_tissue / rate / 60:,.1f} min fully-convolutional on {dense['device']}")
    print(f"  patch by patch: {camelyon_tissue / (tissue_mpx / t_patch) / 3600:,.1f} h")
    print("  (the target of < 60 s per slide applies to an H100; the figures above are for this device)")

    if not args.no_tta:
        st = _in_fresh_process(run_tta_and_stability, args)
        print("\nD4 test-time augmentation vs built-in equivariance (10 x 10-cell window, random weights):")
        print(f"  p4m_densenet: {st['t_plain']:.2f} s plain, {st['t_tta']:.2f} s with 8x TTA "
              f"({st['t_tta'] / st['t_plain']:.1f}x); max |TTA - plain| = {st['p4m_tta_change']:.1e}")
        print("  max |f(T_g x) - T_g f(x)| over the 7 non-identity elements of D4 (probabilities):")
        print(f"    p4m_densenet          {st['p4m']:.1e}")
        print(f"    densenet (planar)     {st['densenet']:.1e}")
        print(f"    densenet + 8x TTA     {st['densenet_tta']:.1e}")


if __name__ == "__main__":
    main()
