"""Cell-representation benchmark (seed 003): cost of the harmonic encoders, and how closely the harmonic
layers keep their transformation law at angles between quarter turns, in one run.

    python benchmarks/cells.py [--threads 1] [--batch 64] [--steps 5]

Measured here, in this order, on this machine (all numbers printed, nothing asserted):

1. training throughput (images/s, forward + backward, median of ``--steps`` after a warm-up) of the
   encoders of every CellVAE variant at the experiment's default size (32x32, width 8, latent 16), of
   the spatial transformer and of the decoder, with each encoder's cost as a multiple of the plain one;
2. one harmonic 3x3 convolution (8 complex channels, orders (0, 2) -> (0, 2)) against an ``nn.Conv2d``
   on the same planar view (32 -> 32 real channels), forward + backward;
3. the law at arbitrary angles on band-limited images (float64, 5x5 filters): relative RMS error of an
   order-0 layer's magnitude, and phase error of order-1 and order-2 layers, against the angle;
4. procedural cell patches per second (one process).
"""

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from equipath.data.rotation import rotate
from equipath.cells.procedural import make_cell_patches
from equipath.cells.vae import Decoder, HarmonicEncoder, PlainEncoder, SpatialTransformer
from equipath.nn.harmonic import HarmonicConv2d, as_complex, magnitude


def rate(module: nn.Module, x: torch.Tensor, steps: int) -> float:
    """Images/s of forward + backward (median over ``steps`` after one warm-up step)."""
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        out = module(x)
        (out[0] if isinstance(out, tuple) else out).sum().backward()
        if i:
            times.append(time.perf_counter() - start)
    return len(x) / statistics.median(times)


def smooth_disk_images(n: int, size: int) -> torch.Tensor:
    x = torch.randn(n * 3, 1, size, size, dtype=torch.float64)
    g = torch.arange(-9, 10, dtype=torch.float64)
    k = torch.exp(-g**2 / 18)
    k = k / k.sum()
    x = F.conv2d(F.conv2d(x, k.view(1, 1, 1, -1), padding=(0, 9)), k.view(1, 1, -1, 1), padding=(9, 0))
    c = (size - 1) / 2
    i, j = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64), indexing="ij")
    return x.view(n, 3, size, size) * (torch.hypot(i - c, j - c) < 0.4 * size)


def rotate_complex(y: torch.Tensor, t: float) -> torch.Tensor:
    B, C, M, H, W = y.shape
    parts = [rotate(p.reshape(B, C * M, H, W), t, "zeros").view(B, C, M, H, W) for p in (y.real, y.imag)]
    return torch.complex(*parts)


@torch.no_grad()
def law_at_angles(angles) -> None:
    size, k = 49, 5
    x = smooth_disk_images(4, size)
    c = (size - 1) / 2
    i, j = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    inside = torch.hypot(i - c, j - c) < 0.4 * size - k
    order0 = HarmonicConv2d(3, 8, k, 0, 0, padding=k // 2).double()
    plain = nn.Conv2d(3, 8, k, padding=k // 2, bias=False).double()
    orders = {m: HarmonicConv2d(3, 8, k, 0, m, padding=k // 2).double() for m in (1, 2)}
    y0, yp = magnitude(order0(x)).squeeze(2), plain(x).abs()
    ym = {m: as_complex(conv(x)) for m, conv in orders.items()}
    print("\n3. law at arbitrary angles (49x49 band-limited images, 5x5 filters, inner disk)")
    print(f"   {'angle':>6} | {'order-0 |F| rel. RMS':>20} | {'plain conv rel. RMS':>19} | "
          f"{'order-1 phase err':>17} | {'order-2 phase err':>17}")
    for deg in angles:
        t = math.radians(deg)
        xt = rotate(x, t, "zeros")
        ref0 = rotate(y0, t, "zeros") * inside
        e0 = float(((magnitude(order0(xt)).squeeze(2) * inside) - ref0).norm() / ref0.norm())
        refp = rotate(yp, t, "zeros") * inside
        ep = float(((plain(xt).abs() * inside) - refp).norm() / refp.norm())
        phase = []
        for m, conv in orders.items():
            shift = torch.angle((as_complex(conv(xt)) * rotate_complex(ym[m], t).conj() * inside).sum((0, 2, 3, 4)))
            err = torch.remainder(shift - m * t + math.pi, 2 * math.pi) - math.pi
            phase.append(float(err.abs().max()))
        print(f"   {deg:5d}° | {e0:20.2e} | {ep:19.2e} | {math.degrees(phase[0]):16.3f}° | {math.degrees(phase[1]):16.3f}°")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} CPU thread(s), batch {args.batch}, 32x32 patches, width 8, latent 16")

    x = torch.rand(args.batch, 3, 32, 32)
    modules = {
        "plain encoder (baseline, only-STN)": PlainEncoder(16, 8, 32),
        "harmonic encoder, orders (0,) (inv-HNet)": HarmonicEncoder(16, 8, (0,), (0,)),
        "harmonic encoder, orders (0, 2) (equ-HNet)": HarmonicEncoder(16, 8, (0, 2), (0, 2)),
        "spatial transformer": SpatialTransformer(),
    }
    print("\n1. training throughput (forward + backward)")
    rates = {name: rate(m, x, args.steps) for name, m in modules.items()}
    rates["decoder"] = rate(Decoder(16, 8, 32), torch.randn(args.batch, 16), args.steps)
    base = rates["plain encoder (baseline, only-STN)"]
    for name, r in rates.items():
        params = sum(p.numel() for p in (modules[name] if name in modules else Decoder(16, 8, 32)).parameters())
        print(f"   {name:44s} {r:9.0f} images/s   {params:7d} parameters   cost x{base / r:5.2f} of the plain encoder")

    print("\n2. one 3x3 layer at 16x16: harmonic (8 complex channels, orders (0, 2) -> (0, 2)) vs nn.Conv2d 32 -> 32")
    h = torch.randn(args.batch, 8, 2, 2, 16, 16)
    harmonic = HarmonicConv2d(8, 8, 3, (0, 2), (0, 2), padding=1)
    conv = nn.Conv2d(32, 32, 3, padding=1, bias=False)
    r_h, r_c = rate(harmonic, h, args.steps), rate(conv, h.flatten(1, 3), args.steps)
    print(f"   harmonic {r_h:9.0f} images/s ({sum(p.numel() for p in harmonic.parameters())} parameters), "
          f"plain {r_c:9.0f} images/s ({conv.weight.numel()} parameters): harmonic costs x{r_c / r_h:.2f}")

    law_at_angles((0, 10, 20, 30, 45, 60, 75, 90, 120, 200))

    start = time.perf_counter()
    make_cell_patches(300, size=32, seed=0)
    print(f"\n4. procedural cells: {300 / (time.perf_counter() - start):.0f} patches/s (32x32, one process)")


if __name__ == "__main__":
    main()
