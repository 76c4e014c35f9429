"""Layer benchmark: each equivariant layer against the plain convolution it computes (its ``fold()``: the
same filter bank as an ``nn.Conv2d``), measured side by side, and optional peers (escnn, e2cnn).

    python benchmarks/layers.py [--batch 32] [--size 48] [--repeats 7] [--device cpu|cuda] [--markdown FILE]

Main workload (issue 2): 16 -> 16 p4m group channels (128 -> 128 planar), k = 3, padding 1, input
(32, 16, 8, 48, 48), against the folded nn.Conv2d 128 -> 128 on (32, 128, 48, 48). A training step is
forward + backward of ``sum(output)`` with the gradient of the input as well as of the weights. Every row
runs its variants interleaved, in an order rotating every repeat; it prints the median and interquartile
range of wall and CPU time (all threads of the process) and the median of the per-repeat ratios. Where
escnn / e2cnn import and build, their R2Conv on the same D4 regular fields is timed in the same rotation;
otherwise the row says why it is skipped. On CUDA the layers run as the trainer runs them there
(equipath.training.device: bf16 autocast + channels-last).
"""

import argparse
import os
import statistics
import sys

import torch
from torch import nn

from equipath.nn import GroupConv2d, GroupConvTranspose2d, IsotropicConv2d, LiftingConv2d, ProjectionConv2d
from equipath.training.device import device_plan

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import append_rows, interleaved, paired_ratios, spread  # noqa: E402


class PeerConv(nn.Module):
    """An escnn / e2cnn ``R2Conv`` on ``channels`` D4 regular fields as a plain module on planar tensors
    ``(B, 8 * channels, H, W)``, so it is timed (and zeroed, and differentiated) like any other."""

    def __init__(self, library: str, channels: int):
        super().__init__()
        package = __import__(library)
        gspaces, enn = package.gspaces, package.nn
        space = gspaces.flipRot2dOnR2(N=4) if library == "escnn" else gspaces.FlipRot2dOnR2(N=4)
        self.field = enn.FieldType(space, channels * [space.regular_repr])
        self.geometric = enn.GeometricTensor
        self.conv = enn.R2Conv(self.field, self.field, 3, padding=1)

    def forward(self, x):
        return self.conv(self.geometric(x, self.field)).tensor


def peer(library: str, channels: int, x: torch.Tensor):
    """``(module, None)`` when the library builds and runs a layer, else ``(None, reason)``."""
    try:
        module = PeerConv(library, channels).to(x.device)
        module(x[:1])
        return module, None
    except Exception as exc:  # not installed, or broken beside this numpy / torch
        return None, f"{library} skipped ({exc.__class__.__name__}: {str(exc).splitlines()[0][:100]})"


def train_step(module, x, plan):
    """Forward + backward of ``sum(output)``, with the input gradient."""
    x = x.detach().requires_grad_(True)

    def run():
        module.zero_grad(set_to_none=True)
        x.grad = None
        with plan.autocast():
            y = module(x)
        y.float().sum().backward()
    return run


def eval_forward(module, x, plan):
    def run():
        with torch.no_grad(), plan.autocast():
            module(x)
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--channels", type=int, default=16, help="group channels of the main workload")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--markdown", help="append the rows as a markdown table to this file")
    args = parser.parse_args()
    plan = device_plan(args.device)
    sync = (lambda: torch.cuda.synchronize(plan.device)) if plan.device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    B, C, G, S = args.batch, args.channels, 8, args.size
    where = torch.cuda.get_device_name(plan.device) if plan.device.type == "cuda" else "cpu"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, os.cpu_count() = {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}, device {where}, autocast {plan.amp_dtype}, "
          f"channels-last {plan.channels_last}")
    print(f"main workload: p4m GroupConv2d {C}->{C} ({C * G}->{C * G} planar), k=3, input ({B}, {C}, {G}, {S}, {S}); "
          f"{args.repeats} interleaved repeats, median [IQR]\n")

    def pair(layer, x):
        """The layer and its folded nn.Conv2d, on the device, with their inputs (group maps flattened)."""
        folded = layer.fold()
        layer, folded = plan.apply(layer), plan.apply(folded)
        x = x.to(plan.device)
        xp = plan.inputs(x.flatten(1, 2) if x.dim() == 5 else x)
        return layer, x, folded, xp

    rows, notes = [], []

    def row(name, fns):
        rows.append((name, interleaved(fns, args.repeats, warmup=1, sync=sync)))

    x = torch.randn(B, C, G, S, S)
    group, xg, folded, xp = pair(GroupConv2d(C, C, 3, "p4m", padding=1), x)
    group.train(), folded.train()
    fns = {"equipath": train_step(group, xg, plan), "folded": train_step(folded, xp, plan)}
    for library in ("escnn", "e2cnn"):
        module, note = peer(library, C, xp)
        if module is None:
            notes.append(note)
        else:
            fns[library] = train_step(module.train(), xp, plan)
    row("GroupConv2d training step (fwd + bwd, input grad)", fns)
    group.eval(), folded.eval()
    row("GroupConv2d eval forward (filter cached)", {"equipath": eval_forward(group, xg, plan),
                                                    "folded": eval_forward(folded, xp, plan)})
    row("GroupConv2d batch-1 eval forward", {"equipath": eval_forward(group, xg[:1].clone(), plan),
                                            "folded": eval_forward(folded, xp[:1].clone(), plan)})
    others = {
        f"LiftingConv2d 3->{C} training step": (LiftingConv2d(3, C, 3, "p4m", padding=1), torch.randn(B, 3, S, S)),
        f"ProjectionConv2d {C}->{C} k3 training step": (ProjectionConv2d(C, C, 3, "p4m", padding=1), x),
        f"GroupConvTranspose2d {C}->{C} s2 training step": (GroupConvTranspose2d(C, C, 2, "p4m", stride=2),
                                                         torch.randn(B, C, G, S // 2, S // 2)),
        f"IsotropicConv2d {C * G}->{C * G} k5 training step": (IsotropicConv2d(C * G, C * G, 5, padding=2),
                                                      torch.randn(B, C * G, S, S)),
    }
    for name, (layer, inp) in others.items():
        layer, inp, fold, inp_p = pair(layer, inp)
        layer.train(), fold.train()
        row(name, {"equipath": train_step(layer, inp, plan), "folded": train_step(fold, inp_p, plan)})

    header = (f"{'row':<48}{'variant':>10}{'wall ms':>24}{'CPU ms':>24}{'ratio to folded (wall)':>26}"
              f"{'ratio to folded (CPU)':>26}")
    print(header)
    markdown = []
    for name, samples in rows:
        for k, (variant, v) in enumerate(samples.items()):
            r = "" if variant == "folded" else spread(paired_ratios(v.wall, samples["folded"].wall), 1, 3)
            rc = "" if variant == "folded" else spread(paired_ratios(v.cpu, samples["folded"].cpu), 1, 3)
            print(f"{name if k == 0 else '':<48} {variant:>9} {spread(v.wall, 1e3):>23} {spread(v.cpu, 1e3):>23} {r:>25}"
                  f" {rc:>25}")
            markdown.append((f"layers ({where})", f"{name}: {variant}", f"{statistics.median(v.wall) * 1e3:.2f} ms",
                             f"IQR {spread(v.wall, 1e3)}; CPU {spread(v.cpu, 1e3)} ms"
                             + (f"; ratio to folded {r} (wall), {rc} (CPU)" if r else "")))
    for note in notes:
        print(note)

    print("\nbuilding each layer (median of 20, ms; target <= 5 ms):")
    builders = {
        "LiftingConv2d(3, 16, 3, p4m)": lambda: LiftingConv2d(3, 16, 3, "p4m"),
        "GroupConv2d(16, 16, 3, p4m)": lambda: GroupConv2d(16, 16, 3, "p4m"),
        "GroupConv2d(64, 64, 3, p4m)": lambda: GroupConv2d(64, 64, 3, "p4m"),
        "ProjectionConv2d(16, 2, 1, p4m)": lambda: ProjectionConv2d(16, 2, 1, "p4m"),
        "GroupConvTranspose2d(16, 16, 3, p4m)": lambda: GroupConvTranspose2d(16, 16, 3, "p4m", stride=2),
        "IsotropicConv2d(64, 64, 5)": lambda: IsotropicConv2d(64, 64, 5),
    }
    build = interleaved(builders, 20, warmup=1)
    for name, s in build.items():
        ms = statistics.median(s.wall) * 1e3
        print(f"  {name:38s} {ms:6.2f} ms  {'ok' if ms <= 5 else 'MISSED'}")
    if args.markdown:
        append_rows(args.markdown, markdown + [(f"layers ({where})", note, "", "") for note in notes])


if __name__ == "__main__":
    main()
