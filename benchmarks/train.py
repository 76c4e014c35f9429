"""Training-step throughput of P4M-DenseNet against two controls, measured side by side in one run.

One training step = forward, binary cross-entropy, backward (with the input gradient, as a step of an
adversarial or saliency method would need and as the layer benchmark does) and an Adam update, on a batch
of 96 x 96 patches (default 64, seed 000). Variants:

    p4m_densenet            the group network (filters expanded from the group weights every step)
    p4m_densenet (folded)   the SAME network folded to plain convolutions (equipath.nn.fold_model): the
                            same arithmetic without the group machinery -> "overhead over the same arithmetic"
    densenet_m              the planar DenseNet with as many planar maps (Table 1, MAC-matched control)
                            -> "time over MACs": seconds per multiply-accumulate against plain convolutions
    densenet                the parameter-matched planar baseline (seed 000)

The variants run interleaved with a rotating order, ``--repeats`` times (median with the interquartile
range; wall and CPU time); the overhead is the median of the per-repeat ratios. MACs per patch are the
forward multiply-accumulates (torch.utils.flop_counter). The folded network trains its expanded filters as
free weights, so its Adam update touches |G| times more weight entries (a few ms per step, against seconds
of convolution on the CPU).

Device decisions come from equipath.training.device.device_plan, as in the trainer: on the CPU float32; on
a CUDA GPU float32 and bf16 autocast + channels-last. ``--smoke`` runs tiny models on the CPU with the CUDA
decisions forced on (bf16 autocast, channels-last): the GPU code path, checked where there is no GPU.

    python benchmarks/train.py                        # CPU, and the GPU when there is one
    python benchmarks/train.py --device cpu --repeats 7 --batch 32
    python benchmarks/train.py --smoke
"""

import argparse
import copy
import os
import platform
import statistics
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

from equipath.models import create_model
from equipath.nn import fold_model
from equipath.training.device import device_plan

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import append_rows, interleaved, paired_ratios, quartiles, spread  # noqa: E402

PCAM_TRAIN = 262_144
VARIANTS = ("p4m_densenet", "p4m_densenet (folded)", "densenet_m", "densenet")
SMOKE_KWARGS = {"p4m_densenet": {"growth": 8}, "densenet_m": {"growth": 8}, "densenet": {"growth": 2}}


def forward_macs(model, size: int = 96) -> float:
    """Forward multiply-accumulates for one ``size x size`` patch."""
    meta = copy.deepcopy(model).to("meta").eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta(torch.empty(1, 3, size, size, device="meta"))
    return counter.get_total_flops() / 2


def build(name: str, smoke: bool):
    base = name.split(" ")[0]
    torch.manual_seed(0)
    model = create_model(base, **(SMOKE_KWARGS[base] if smoke else {}))
    return fold_model(model) if name.endswith("(folded)") else model


def step_fn(model, plan, batch: int):
    """One training step (forward, BCE, backward with the input gradient, Adam) on a fixed batch."""
    model = plan.apply(model).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = plan.inputs(torch.rand(batch, 3, 96, 96)).requires_grad_(True)
    y = (torch.rand(batch, device=plan.device) > 0.5).float()

    def step():
        x.grad = None
        with plan.autocast():
            logits = model(x)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float()[:, 0], y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def measure(plan, batch: int, repeats: int, smoke: bool) -> dict:
    models = {name: build(name, smoke) for name in VARIANTS}
    info = {name: (sum(p.numel() for p in m.parameters()), forward_macs(m)) for name, m in models.items()}
    steps = {name: step_fn(m, plan, batch) for name, m in models.items()}
    sync = (lambda: torch.cuda.synchronize(plan.device)) if plan.device.type == "cuda" else (lambda: None)
    samples = interleaved(steps, repeats, warmup=1, sync=sync)
    return {"samples": samples, "info": info}


def report(title: str, result: dict, batch: int, repeats: int, markdown: list) -> None:
    samples, info = result["samples"], result["info"]
    print(f"\n{title}: batch {batch}, {repeats} interleaved repeats, median [IQR]")
    print(f"{'variant':<24}{'weights':>10}{'GMAC/patch':>11}{'wall s/step':>22}{'CPU s/step':>22}"
          f"{'patches/s':>10}{'ns/MAC':>8}{'PCam epoch':>12}")
    rows = []
    for name in VARIANTS:
        wall, cpu = samples[name].wall, samples[name].cpu
        params, macs = info[name]
        t = statistics.median(wall)
        epoch = PCAM_TRAIN / batch * t
        ns_mac = t / (3 * macs * batch) * 1e9  # a training step is about 3 forward passes of arithmetic
        print(f"{name:<24}{params:>10,}{macs / 1e9:>11.3f} {spread(wall, 1, 3):>21} {spread(cpu, 1, 3):>21}"
              f"{batch / t:>10.1f}{ns_mac:>8.3f}{epoch / 60:>9.1f} min")
        rows.append((f"train step ({title})", f"{name}: s/step, batch {batch}", f"{t:.3f}",
                     f"IQR {spread(wall, 1, 3)}; CPU {spread(cpu, 1, 3)}; {batch / t:.1f} patches/s; "
                     f"PCam epoch (262,144 patches) projected {epoch:.0f} s"))
    p4m, folded, planar = (samples[n] for n in VARIANTS[:3])
    over_wall = paired_ratios(p4m.wall, folded.wall)
    over_cpu = paired_ratios(p4m.cpu, folded.cpu)
    q1, q2, q3 = quartiles(over_wall)
    print(f"overhead over the same arithmetic (p4m_densenet / its folded copy, per-repeat ratios): "
          f"wall {(q2 - 1) * 100:+.1f} % [IQR {(q1 - 1) * 100:+.1f} to {(q3 - 1) * 100:+.1f} %, "
          f"min-max {(min(over_wall) - 1) * 100:+.1f} to {(max(over_wall) - 1) * 100:+.1f} %], "
          f"CPU {spread([r - 1 for r in over_cpu], 100, 1)} %")
    mac_ratio = info[VARIANTS[0]][1] / info[VARIANTS[2]][1]
    time_ratio = paired_ratios(p4m.wall, planar.wall)
    per_mac = [r / mac_ratio for r in time_ratio]
    print(f"time over MACs against densenet_m (plain convolutions): p4m_densenet has {mac_ratio:.2f}x its MACs, "
          f"step-time ratio {spread(time_ratio)}, time-per-MAC ratio {spread(per_mac)} (1.00 = as fast per MAC)")
    markdown += rows
    markdown.append((f"train step ({title})", "overhead p4m_densenet over its folded copy (wall)",
                     f"{(q2 - 1) * 100:+.1f} %", f"IQR {spread([r - 1 for r in over_wall], 100, 1)} %; "
                     f"CPU {spread([r - 1 for r in over_cpu], 100, 1)} %"))
    markdown.append((f"train step ({title})", "time per MAC p4m_densenet / densenet_m", f"{statistics.median(per_mac):.2f}",
                     f"IQR {spread(per_mac)}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64, help="patches per step (default: 64, seed 000)")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved repeats, >= 7 for the docs (default: 7)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's default)")
    parser.add_argument("--device", choices=("all", "cpu", "cuda"), default="all",
                        help="cpu, cuda, or all available (default)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny models, batch 2, 3 repeats, on the CPU with the CUDA decisions forced on")
    parser.add_argument("--markdown", help="append the rows as a markdown table to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    markdown = []
    print(f"equipath training benchmark: torch {torch.__version__}, {platform.machine()}, "
          f"{torch.get_num_threads()} CPU threads, os.cpu_count() = {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}; forward + BCE + backward (input gradient too) + Adam")
    if args.smoke:
        plan = device_plan("cpu", as_cuda=True)
        report("CPU smoke, bf16 autocast + channels-last (CUDA decisions)", measure(plan, 2, 3, True), 2, 3, markdown)
    else:
        if args.device in ("all", "cpu"):
            report("CPU, float32", measure(device_plan("cpu"), args.batch, args.repeats, False), args.batch,
                   args.repeats, markdown)
        if args.device in ("all", "cuda"):
            if not torch.cuda.is_available():
                print("\nno CUDA device: GPU numbers not measured")
            else:
                name = torch.cuda.get_device_name(0)
                for amp, title in ((False, "float32 + channels-last"), (True, "bf16 autocast + channels-last")):
                    plan = device_plan("cuda", amp=amp)
                    report(f"{name}, {title}", measure(plan, args.batch, args.repeats, False), args.batch,
                           args.repeats, markdown)
    if args.markdown:
        append_rows(args.markdown, markdown)


if __name__ == "__main__":
    main()
