"""Training throughput of P4M-DenseNet vs its parameter-matched DenseNet, side by side in one run.

One training step = forward, binary cross-entropy, backward and an Adam update on a batch of 96 x 96 patches
(default 64, seed 000). The models are timed in alternating rounds so that a change of machine load hits
both; the median step time of each gives patches/s and the time of one PCam epoch (262,144 patches).

On the CPU (always): float32. On a CUDA GPU (when present): float32 and bf16 autocast with channels-last,
as the trainer runs there.

    python benchmarks/train.py                   # CPU, and the GPU when there is one
    python benchmarks/train.py --device cpu --steps 3 --threads 2
"""

import argparse
import contextlib
import platform
import statistics
import time

import torch

from equipath.models import create_model

PCAM_TRAIN = 262_144
MODELS = ("p4m_densenet", "densenet")


def _step_fn(model, optimizer, x, y, amp: bool):
    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext():
            logits = model(x)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float()[:, 0], y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(device: torch.device, batch: int, steps: int, warmup: int, rounds: int, amp: bool) -> dict:
    """Median seconds per training step of each model, timed in ``rounds`` alternating rounds."""
    torch.manual_seed(0)
    setups = {}
    for name in MODELS:
        model = create_model(name).to(device).train()
        x = torch.rand(batch, 3, 96, 96, device=device)
        if amp:
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        y = (torch.rand(batch, device=device) > 0.5).float()
        step = _step_fn(model, torch.optim.Adam(model.parameters(), lr=1e-3), x, y, amp)
        for _ in range(warmup):
            step()
        _sync(device)
        setups[name] = (step, sum(p.numel() for p in model.parameters()))
    times = {name: [] for name in MODELS}
    for _ in range(rounds):
        for name, (step, _) in setups.items():
            start = time.perf_counter()
            for _ in range(steps):
                step()
            _sync(device)
            times[name].append((time.perf_counter() - start) / steps)
    return {name: (statistics.median(t), setups[name][1]) for name, t in times.items()}


def report(title: str, results: dict, batch: int) -> None:
    print(f"\n{title}")
    print(f"{'model':<14} {'weights':>9} {'s/step':>9} {'patches/s':>10} {'PCam epoch (262,144 patches)':>30}")
    for name, (seconds, params) in results.items():
        rate = batch / seconds
        epoch = PCAM_TRAIN / rate
        print(f"{name:<14} {params:>9,} {seconds:>9.3f} {rate:>10.1f} {epoch:>12.0f} s = {epoch / 3600:6.2f} h")
    a, b = (results[m][0] for m in MODELS)
    print(f"ratio p4m_densenet / densenet step time: {a / b:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64, help="patches per step (default: 64, seed 000)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round (default: 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default: 1)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (default: 2)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's default)")
    parser.add_argument("--device", choices=("all", "cpu", "cuda"), default="all",
                        help="cpu, cuda, or all available (default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"equipath training benchmark: torch {torch.__version__}, {platform.machine()}, "
          f"{torch.get_num_threads()} CPU threads, batch {args.batch}, {args.rounds} rounds x {args.steps} steps "
          "(median step), forward + BCE + backward + Adam")
    if args.device in ("all", "cpu"):
        report("CPU, float32", measure(torch.device("cpu"), args.batch, args.steps, args.warmup, args.rounds, False),
               args.batch)
    if args.device in ("all", "cuda"):
        if not torch.cuda.is_available():
            print("\nno CUDA device: GPU numbers not measured")
            return
        device = torch.device("cuda")
        print(f"\nGPU: {torch.cuda.get_device_name(device)}")
        for amp, title in ((False, "float32"), (True, "bf16 autocast + channels-last (the trainer's GPU mode)")):
            report(f"GPU, {title}", measure(device, args.batch, args.steps * 5, args.warmup * 5, args.rounds, amp),
                   args.batch)


if __name__ == "__main__":
    main()
