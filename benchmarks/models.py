"""Model benchmark: size, compute, speed and memory of every registered model, side by side in one run.

    python benchmarks/models.py [--models p4m_densenet,densenet] [--eval-batch 8] [--train-batch 32]
                                [--repeats 3] [--threads N] [--device cpu|cuda]

Per model, at its default (paper) configuration:
  params      trainable parameters
  GMAC        multiply-accumulates per input (torch.utils.flop_counter on the meta device), at the
              benchmark size and at the paper's input size (seed 000: 96; 001: 320 -> 321; 004: 448 -> 449;
              002: 1024)
  eval img/s  eval-mode throughput (inference mode, batch --eval-batch) before and after fold_model();
              the two alternate repeat by repeat and the medians are shown, so machine load hits both alike
  train MiB   peak memory of one training step (forward, loss, backward, Adam) at batch --train-batch, in a
              fresh process: peak resident set during the step (Linux VmHWM after clear_refs) and its rise
              over the resident set before the step; on CUDA, torch.cuda.max_memory_allocated
  build s     instantiation time, median of 3 (target <= 0.5 s; an e2cnn U-Net is reported to take ~16 s),
              wall-clock and CPU seconds (the CPU time is less sensitive to other load on the machine)

Benchmark sizes: 96 x 96 for the DenseNets; each segmentation model's ``input_size`` (33 / 32 px), since
a CPU step of p4m_unet at 321 x 321 and batch 32 takes minutes. Pass --seg-size to choose another.
"""

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from equipath.models import create_model, list_models
from equipath.nn import fold_model

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import reset_peak_resident, resident_mib  # noqa: E402

PAPER_SIZE = {"densenet": 96, "unet": 321, "gerunet": 449, "resunet": 449, "iso_unet": 1024}


def paper_size(name: str) -> int:
    for key in ("densenet", "gerunet", "resunet", "iso_unet", "unet"):
        if key in name:
            return PAPER_SIZE[key]
    raise ValueError(f"no paper input size known for {name!r}")


def bench_size(model, seg_size: int | None) -> int:
    if model.task == "classification" or seg_size is None:
        return model.input_size[0]
    model.check_input_size(seg_size, seg_size)
    return seg_size


def gmac(model, size: int) -> float:
    meta = model.to("meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta(torch.empty(1, 3, size, size, device="meta"))
    return counter.get_total_flops() / 2e9


def build_time(name: str, repeats: int = 3) -> tuple[float, float]:
    """Median wall-clock and CPU seconds of ``create_model(name)``."""
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        create_model(name)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def eval_throughput(model, size: int, batch: int, repeats: int, device) -> tuple[float, float]:
    model = model.to(device).eval()
    folded = fold_model(model)
    x = torch.rand(batch, 3, size, size, device=device)
    fns = {"model": lambda: model(x), "folded": lambda: folded(x)}
    samples = {k: [] for k in fns}
    with torch.inference_mode():
        for fn in fns.values():  # warm-up: caches the expanded filters, picks kernels
            fn()
        for _ in range(repeats):
            for k, fn in fns.items():
                _sync(device)
                t0 = time.perf_counter()
                fn()
                _sync(device)
                samples[k].append(time.perf_counter() - t0)
    return tuple(batch / statistics.median(samples[k]) for k in ("model", "folded"))


def _train_step_memory(name: str, size: int, batch: int, threads: int, device: str, queue) -> None:
    torch.set_num_threads(threads)
    device = torch.device(device)
    model = create_model(name).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(batch, 3, size, size, device=device)
    if model.task == "classification":
        target = torch.randint(0, 2, (batch, 1), device=device).float()
        loss_fn = F.binary_cross_entropy_with_logits
    else:
        target = torch.randint(0, model.num_classes, (batch, size, size), device=device)
        loss_fn = F.cross_entropy
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device) / 2**20
    else:
        reset_peak_resident()
        before = resident_mib("VmRSS")
    t0 = time.perf_counter()
    loss_fn(model(x), target).backward()
    optimizer.step()
    _sync(device)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else resident_mib("VmHWM")
    queue.put((peak, peak - before, seconds))


def train_step_memory(name: str, size: int, batch: int, threads: int, device: str) -> tuple[float, float, float]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_train_step_memory, args=(name, size, batch, threads, device, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(list_models()), help="comma-separated names (default: all)")
    parser.add_argument("--eval-batch", type=int, default=8)
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seg-size", type=int, default=None, help="input side for segmentation models")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = args.models.split(",")

    print(f"equipath model benchmark: torch {torch.__version__}, device {args.device}, {args.threads} threads, "
          f"{os.cpu_count()} CPUs; eval batch {args.eval_batch}, train batch {args.train_batch}, "
          f"median of {args.repeats}")
    header = ("model", "group", "params", "size", "GMAC", "paper", "GMAC", "eval img/s", "folded", "ratio",
              "train MiB", "(rise)", "step s", "build s", "(cpu s)")
    print("  ".join(f"{h:>10}" if i else f"{h:<19}" for i, h in enumerate(header)))
    for name in names:
        build, build_cpu = build_time(name)
        model = create_model(name)
        params = sum(p.numel() for p in model.parameters())
        size, big = bench_size(model, args.seg_size), paper_size(name)
        rate, rate_folded = eval_throughput(model, size, args.eval_batch, args.repeats, device)
        macs, macs_big = gmac(model, size), gmac(model, big)
        peak, rise, step = train_step_memory(name, size, args.train_batch, args.threads, args.device)
        row = (name, model.group.name, f"{params:,}", size, f"{macs:.3f}", big, f"{macs_big:.1f}", f"{rate:.1f}",
               f"{rate_folded:.1f}", f"{rate_folded / rate:.2f}x", f"{peak:.0f}", f"{rise:+.0f}", f"{step:.2f}",
               f"{build:.3f}" + ("" if build <= 0.5 else " SLOW"), f"{build_cpu:.3f}")
        print("  ".join(f"{c:>10}" if i else f"{c:<19}" for i, c in enumerate(row)), flush=True)
    print("ratio = folded / unfolded eval throughput; size, paper: input side of the measured and the paper's "
          "inputs; GMAC at each; train MiB: peak during one training step, (rise) over the resident set before it")


if __name__ == "__main__":
    main()
