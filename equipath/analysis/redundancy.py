"""Filter redundancy (seed 000 introduction, seed 004 abstract): how many of a model's filters are close
to a rotated or mirrored copy of another of its filters.

For the filters ``w_1 .. w_N`` of one convolution (its first weight axis), filter ``i`` is redundant when

    best_i = max_{g != e, j != i} cos(w_i, A_g w_j) >= threshold,

with ``cos`` the signed cosine similarity of the flattened filters (a negated copy is a different feature
after a ReLU) and ``A_g`` the action of ``g`` on a filter: ``T_g`` on planar filters ``(C_in, k, k)``
(``nn.Conv2d``, the z2 baselines, lifting and projection layers) for every ``g`` of ``group`` (default
``p4m``), and the regular action ``L_g`` of the layer's own group on group filters ``(C_in, |G|, k, k)``.
Planar 1 x 1 filters are skipped (every ``T_g`` leaves them unchanged); so are isotropic kernels.

A CNN that has to learn the symmetry from data spends filters on rotated copies; a G-CNN gets them from
the group, so its free weights need none. The analysis is run on the learned weights of a checkpoint (the
parameters, not the expanded filter banks; :func:`equipath.nn.fold_model` of a G-CNN is 100 % redundant
by construction, which the tests use as a check). ``chance`` is the same fraction for Gaussian filters of
the same shapes, the level expected with no structure at all.

Example:
    >>> import torch
    >>> conv = torch.nn.Conv2d(3, 8, 5)
    >>> with torch.no_grad():
    ...     conv.weight[4:] = torch.rot90(conv.weight[:4], 1, (-2, -1))   # 4 filters + their rotations
    >>> model_redundancy(conv).fraction
    1.0
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from equipath.analysis.io import SYNTHETIC_LABEL
from equipath.groups import get_group
from equipath.nn import GroupConv2d, GroupConvTranspose2d, LiftingConv2d, ProjectionConv2d

__all__ = ["LayerRedundancy", "RedundancyReport", "best_similarity", "model_redundancy", "redundancy_figure"]


@dataclass(frozen=True)
class LayerRedundancy:
    """One convolution: its name, filter shape, the action used, and each filter's best match.

    Attributes:
        best: ``(N,)`` float, ``best_i`` of the module docstring. chance_best: the same for Gaussian filters.
    """

    name: str
    module: str
    filter_shape: tuple
    action: str
    best: np.ndarray
    chance_best: np.ndarray


@dataclass(frozen=True)
class RedundancyReport:
    """Per-layer redundancy of one model at one threshold."""

    threshold: float
    layers: tuple

    @property
    def filters(self) -> int:
        return sum(len(layer.best) for layer in self.layers)

    @property
    def fraction(self) -> float:
        """Redundant filters over all analysed filters (NaN when there are none)."""
        n = self.filters
        return sum(int((layer.best >= self.threshold).sum()) for layer in self.layers) / n if n else math.nan

    @property
    def chance(self) -> float:
        """The same fraction for Gaussian filters of the same shapes."""
        n = self.filters
        return sum(int((layer.chance_best >= self.threshold).sum()) for layer in self.layers) / n if n else math.nan

    def rows(self) -> list[dict]:
        return [{"layer": layer.name, "module": layer.module, "filters": len(layer.best),
                 "filter_shape": "x".join(map(str, layer.filter_shape)), "action": layer.action,
                 "redundant": int((layer.best >= self.threshold).sum()),
                 "fraction": float((layer.best >= self.threshold).mean()),
                 "chance_fraction": float((layer.chance_best >= self.threshold).mean()),
                 "median_best_similarity": float(np.median(layer.best))} for layer in self.layers]

    def summary(self) -> dict:
        return {"threshold": self.threshold, "filters": self.filters, "layers": len(self.layers),
                "fraction": self.fraction, "chance_fraction": self.chance}


def best_similarity(filters: torch.Tensor, transforms: list) -> torch.Tensor:
    """``best_i = max_{A in transforms, j != i} cos(w_i, A w_j)`` for ``filters`` ``(N, ...)``.

    Args:
        filters: ``(N, ...)``, one filter per row of the first axis.
        transforms: callables mapping ``(N, ...)`` to ``(N, ...)`` (the non-identity actions).

    Returns:
        ``(N,)`` float64; ``-1`` when ``N < 2`` or there are no transforms.
    """
    w = filters.detach().double().flatten(1)
    n = len(w)
    best = torch.full((n,), -1.0, dtype=torch.float64)
    if n < 2:
        return best
    unit = w / w.norm(dim=1, keepdim=True).clamp_min(1e-30)
    off_diagonal = ~torch.eye(n, dtype=torch.bool)
    for transform in transforms:
        moved = transform(filters.detach().double()).reshape(n, -1)
        moved = moved / moved.norm(dim=1, keepdim=True).clamp_min(1e-30)
        sim = unit @ moved.T  # (N, N): [i, j] = cos(w_i, A w_j)
        best = torch.maximum(best, sim.masked_fill(~off_diagonal, -1.0).amax(1))
    return best


def _bank(module: nn.Module, group) -> tuple | None:
    """``(filters (N, ...), transforms, action name)`` of a convolution, or None when not analysed."""
    w = getattr(module, "weight", None)
    if isinstance(module, (GroupConv2d, GroupConvTranspose2d)) and module.group.order > 1:
        own = module.group
        return w, [lambda f, g=g: own.transform_group(f, g) for g in range(1, own.order)], f"regular {own.name}"
    if isinstance(module, (GroupConv2d, GroupConvTranspose2d)):
        w = w[:, :, 0]  # z2: (N, C_in, k, k)
    elif not isinstance(module, (LiftingConv2d, ProjectionConv2d, nn.Conv2d, nn.ConvTranspose2d)):
        return None
    if w.shape[-1] < 2:
        return None
    return w, [lambda f, g=g: group.transform(f, g) for g in range(1, group.order)], f"planar {group.name}"


@torch.no_grad()
def model_redundancy(model: nn.Module, group="p4m", threshold: float = 0.9, seed: int = 0) -> RedundancyReport:
    """Redundancy of every convolution of ``model`` (see the module docstring).

    Args:
        model: any module; its convolutions are found by type.
        group: the transformations of planar filters. Defaults to ``"p4m"`` (rotations and mirrors).
        threshold: cosine similarity at which a filter counts as a copy. Defaults to 0.9.
        seed: seed of the Gaussian reference filters. Defaults to 0.
    """
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"model_redundancy: threshold must be a cosine similarity in [-1, 1], got {threshold}")
    group = get_group(group)
    generator = torch.Generator().manual_seed(seed)
    layers = []
    for name, module in model.named_modules():
        bank = _bank(module, group)
        if bank is None:
            continue
        w, transforms, action = bank
        noise = torch.randn(w.shape, generator=generator, dtype=torch.float64)
        layers.append(LayerRedundancy(name or type(module).__name__, type(module).__name__, tuple(w.shape[1:]), action,
                                      best_similarity(w, transforms).numpy(),
                                      best_similarity(noise, transforms).numpy()))
    return RedundancyReport(threshold, tuple(layers))


def redundancy_figure(reports: dict, synthetic: bool) -> Figure:
    """Left: the cumulative distribution of every filter's best similarity per model (the threshold
    dashed); right: the redundant fraction per model next to the Gaussian-filter reference."""
    fig = Figure(figsize=(10, 3.8))
    left, right = fig.subplots(1, 2)
    names = list(reports)
    for name in names:
        best = np.sort(np.concatenate([layer.best for layer in reports[name].layers] or [np.zeros(0)]))
        if len(best):
            left.plot(best, 1 - np.arange(len(best)) / len(best), label=name)
    threshold = reports[names[0]].threshold
    left.axvline(threshold, color="k", ls="--", lw=0.8)
    left.set_xlabel("best cosine similarity to a rotated / mirrored other filter")
    left.set_ylabel("fraction of filters at least this similar")
    left.legend(fontsize=8)
    x = np.arange(len(names))
    right.bar(x - 0.2, [reports[n].fraction for n in names], 0.4, label="model")
    right.bar(x + 0.2, [reports[n].chance for n in names], 0.4, label="Gaussian filters (chance)", alpha=0.6)
    right.set_xticks(x, names, rotation=20, fontsize=8)
    right.set_ylabel(f"redundant filters (similarity >= {threshold:g})")
    right.legend(fontsize=8)
    fig.suptitle(f"filter redundancy{' - ' + SYNTHETIC_LABEL if synthetic else ''}", fontsize=10)
    return fig
