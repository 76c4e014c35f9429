"""Layer benchmark: a p4m GroupConv2d against the plain Conv2d it computes, measured side by side.

    python benchmarks/layers.py [--batch 32] [--repeats 7]

Workload (issue 2): 16 -> 16 p4m group channels (128 -> 128 planar), k = 3, padding 1, input
(32, 16, 8, 48, 48) vs a plain nn.Conv2d 128 -> 128 on (32, 128, 48, 48). Each row alternates the two
modules repeat by repeat and reports medians, so machine load affects both alike. Where e2cnn imports,
its R2Conv on the same D4 regular fields is timed too.
"""

import argparse
import statistics
import time

import torch
from torch import nn

from equipath.nn import GroupConv2d, IsotropicConv2d, LiftingConv2d, ProjectionConv2d, GroupConvTranspose2d


def _time(fn, repeats):
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def _side_by_side(fns: dict, repeats: int) -> dict:
    for fn in fns.values():
        fn()
    samples = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in samples.items()}


def _e2cnn_layer(channels):
    try:
        from e2cnn import gspaces
        from e2cnn import nn as enn

        space = gspaces.FlipRot2dOnR2(N=4)
        field = enn.FieldType(space, channels * [space.regular_repr])
        return (enn.R2Conv(field, field, 3, padding=1), field), None
    except Exception as exc:  # not installed, or broken beside this numpy / torch
        return None, f"e2cnn unavailable ({exc.__class__.__name__}: {exc}); its rows are skipped"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.manual_seed(0)
    B, C, G, S = args.batch, 16, 8, args.size
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu")
    print(f"workload: p4m GroupConv2d {C}->{C} ({C * G}->{C * G} planar), k=3, input ({B}, {C}, {G}, {S}, {S})\n")

    group = GroupConv2d(C, C, 3, "p4m", padding=1)
    plain = nn.Conv2d(C * G, C * G, 3, padding=1)
    folded = group.fold()
    x = torch.randn(B, C, G, S, S)
    xp = x.flatten(1, 2).contiguous()

    def train_step(module, inp):
        def run():
            module.zero_grad(set_to_none=True)
            module(inp).sum().backward()
        return run

    def forward(module, inp):
        def run():
            module(inp)
        return run

    def no_grad(fn):
        def run():
            with torch.no_grad():
                fn()
        return run

    rows = []
    group.train(), plain.train()
    t = _side_by_side({"g": forward(group, x), "p": forward(plain, xp)}, args.repeats)
    rows.append(("forward (train mode, autograd)", t["g"], t["p"], None))
    t = _side_by_side({"g": train_step(group, x), "p": train_step(plain, xp)}, args.repeats)
    rows.append(("forward + backward", t["g"], t["p"], 1.10))
    group.eval(), plain.eval()
    t = _side_by_side({"g": no_grad(forward(group, x)), "p": no_grad(forward(plain, xp)),
                       "f": no_grad(forward(folded, xp))}, args.repeats)
    rows.append(("eval forward (filter cached)", t["g"], t["p"], 1.05))
    rows.append(("folded nn.Conv2d forward", t["f"], t["p"], 1.05))
    x1, xp1 = x[:1].clone(), xp[:1].clone()
    t = _side_by_side({"g": no_grad(forward(group, x1)), "p": no_grad(forward(plain, xp1))}, args.repeats * 5)
    rows.append(("batch-1 eval forward", t["g"], t["p"], 1.10))

    e2, note = _e2cnn_layer(C)
    if e2 is not None:
        from e2cnn import nn as enn
        layer, field = e2
        gx = enn.GeometricTensor(xp, field)
        layer.train()
        t = _side_by_side({"e": train_step(lambda inp: layer(inp).tensor, gx), "p": train_step(plain, xp)},
                          args.repeats)
        rows.append(("e2cnn R2Conv forward + backward", t["e"], t["p"], None))

    print(f"{'row':36s} {'equipath ms':>12s} {'plain ms':>10s} {'ratio':>7s} {'target':>8s}")
    for name, a, b, target in rows:
        verdict = "" if target is None else f"<= {target:.2f} {'ok' if a / b <= target else 'MISSED'}"
        print(f"{name:36s} {a * 1e3:12.2f} {b * 1e3:10.2f} {a / b:7.3f} {verdict:>8s}")
    if note:
        print(f"\n{note}")

    print("\nbuilding each layer (median of 20, ms; target <= 5 ms):")
    builders = {
        "LiftingConv2d(3, 16, 3, p4m)": lambda: LiftingConv2d(3, 16, 3, "p4m"),
        "GroupConv2d(16, 16, 3, p4m)": lambda: GroupConv2d(16, 16, 3, "p4m"),
        "GroupConv2d(64, 64, 3, p4m)": lambda: GroupConv2d(64, 64, 3, "p4m"),
        "ProjectionConv2d(16, 2, 1, p4m)": lambda: ProjectionConv2d(16, 2, 1, "p4m"),
        "GroupConvTranspose2d(16, 16, 3, p4m)": lambda: GroupConvTranspose2d(16, 16, 3, "p4m", stride=2),
        "IsotropicConv2d(64, 64, 5)": lambda: IsotropicConv2d(64, 64, 5),
    }
    for name, build in builders.items():
        ms = _time(build, 20) * 1e3
        print(f"  {name:38s} {ms:6.2f} ms  {'ok' if ms <= 5 else 'MISSED'}")


if __name__ == "__main__":
    main()
