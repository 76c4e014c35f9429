"""Forward + backward FLOPs per training sample of every table's models (docs/reproduce.md, "Expected wall
time on one GPU"), counted with ``torch.utils.flop_counter.FlopCounterMode`` on the ``meta`` device (shapes
only: nothing is computed, so full sizes count in seconds on a CPU).

One sample (a batch of 2 divided by 2: batch norm refuses a batch of 1 in training mode) at the configured patch size and width: the forward pass, then ``backward`` of the sum of
the outputs (weight and input-activation gradients; the loss itself is not counted, and the cell VAEs'
rotation loss is counted as one forward + backward of the VAE). Prints GFLOP per sample.

    .venv/bin/python benchmarks/flops.py
"""

import copy

import torch
from torch.utils.flop_counter import FlopCounterMode

from equipath.cells.vae import CellVAE
from equipath.models import create_model

# (table, config's model, model_kwargs, input side): equipath/configs/*.yaml and equipath/reproduce/*.py
MODELS = [
    ("pcam-table1 / breakhis", "p4m_densenet", {}, 96),
    ("pcam-table1 / breakhis", "densenet", {}, 96),
    ("gunet-dice", "p4m_unet", {}, 321),
    ("gunet-dice", "p4_unet", {}, 321),
    ("gunet-dice", "unet", {}, 321),
    ("gerunet-table1", "resunet", {}, 505),
    ("gerunet-table1", "p4m_gerunet", {}, 505),
    ("gerunet-table1", "p4m_gerunet_concat", {}, 505),
    ("ocelot-mf1", "iso_unet", {"num_classes": 3}, 1024),
    ("ocelot-mf1", "iso_unet_baseline", {"num_classes": 3}, 1024),
]
CELLS = [("cells", v, 256) for v in ("baseline", "only-STN", "inv-HNet", "equ-HNet")]  # cells_experiment: width 8, latent 16


def _tensors(out):
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _tensors(o)]
    if hasattr(out, "_fields"):
        return [t for o in out for t in _tensors(o)]
    if hasattr(out, "__dict__"):
        return [t for o in vars(out).values() for t in _tensors(o)]
    return []


def count(model, side: int) -> tuple[float, float]:
    """(forward, forward + backward) FLOPs for one ``side x side`` RGB sample."""
    model = copy.deepcopy(model).to("meta").train()
    x = torch.empty(2, 3, side, side, device="meta")  # 2: batch norm refuses one sample in training
    with FlopCounterMode(display=False) as fwd:
        out = model(x)
    total = sum(t.float().sum() for t in _tensors(out) if t.is_floating_point())
    with FlopCounterMode(display=False) as bwd:
        total.backward()
    return fwd.get_total_flops() / 2, (fwd.get_total_flops() + bwd.get_total_flops()) / 2


def main() -> None:
    rows = [(t, n, side, create_model(n, **kw)) for t, n, kw, side in MODELS]
    rows += [(t, f"CellVAE {v}", side, CellVAE(v, size=side, latent_dim=16, width=8)) for t, v, side in CELLS]
    print("| table | model | input | weights | forward GFLOP | forward + backward GFLOP |")
    print("|---|---|---|---|---|---|")
    for table, name, side, model in rows:
        f, fb = count(model, side)
        weights = sum(p.numel() for p in model.parameters())
        print(f"| {table} | {name} | {side} x {side} | {weights:,} | {f / 1e9:.2f} | {fb / 1e9:.2f} |", flush=True)


if __name__ == "__main__":
    main()
