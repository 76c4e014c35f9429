"""Rotation stability of predictions (seed 000 Fig. 3, seed 001 Fig. 2, seed 004 Figure 1).

A region ``x`` is predicted under a set of transformations ``R``, each prediction is transformed back to
the original orientation, and the per-pixel mean and standard deviation over ``R`` are mapped:

    mean(p) = 1/|R| sum_R R^-1 f(R x),    std(p) = sqrt(1/|R| sum_R (R^-1 f(R x) - mean(p))^2)

with ``f`` the model's :class:`~equipath.analysis.maps.ProbabilityMap`. Two sets are used:

- ``rotations(32)``: 32 evenly spaced angles in [0, 90) degrees, ``k * 90 / 32``, applied to the input by
  bilinear resampling (``affine_grid`` / ``grid_sample``) about the image centre with reflected borders;
  these lie outside the groups, so no model is exactly stable under them. The prediction is not rotated
  back as a picture: a classifier evaluated fully convolutionally predicts on a grid of *cells* (stride
  ``s``, one per patch), and rotating its ``s x s`` blocks would smear them and leave the centre block
  artificially stable. Instead each cell centre ``q`` of the unrotated grid is followed to ``R_a q`` in the
  rotated image and the rotated prediction is read there by bilinear interpolation between its cell
  centres (for a per-pixel model the cells are the pixels). Cells that some rotation carries outside the
  predicted grid are not valid; the valid ones form a disc;
- the 8 roto-reflections of ``p4m``, applied exactly by :mod:`equipath.groups`. A ``p4m``-equivariant
  model has std 0 up to float rounding; a model that is not (a baseline) does not.

The summary number of a model is the mean of ``std`` over tissue inside the valid region;
:func:`image_tissue` finds the tissue (HSV filter of :func:`equipath.data.tissue.tissue_mask`, holes
filled, specks removed) and the figure outlines exactly that mask. :func:`region_size` gives the side of a
region on which every model predicts at least 12 x 12 valid cells under the rotations.

Example:
    >>> import torch
    >>> from equipath.models import create_model
    >>> from equipath.analysis.maps import ProbabilityMap
    >>> net = ProbabilityMap(create_model("p4m_densenet", growth=8, stem=1).eval())
    >>> result = group_stability(net, torch.rand(3, 128, 128))
    >>> result.mean.shape, result.summary < 1e-5
    (torch.Size([128, 128]), True)
"""

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from scipy import ndimage
from tqdm.auto import tqdm

from equipath.analysis.io import SYNTHETIC_LABEL
from equipath.groups import get_group
from equipath.data.rotation import rotate
from equipath.data.tissue import TissueOptions, tissue_mask

__all__ = ["StabilityResult", "rotation_angles", "rotation_stability", "group_stability", "image_tissue",
           "clean_mask", "region_size", "stability_figure"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StabilityResult:
    """Mean and standard deviation maps of one model's predictions over a set of transformations.

    Attributes:
        transforms: ``"rotations"`` (sub-90-degree) or the group name (``"p4m"``).
        count: number of transformations.
        mean, std: ``(H, W)`` maps, NaN outside ``valid``.
        valid: ``(H, W)`` bool, pixels predicted under every transformation (inside the inscribed disc
            for rotations).
        tissue: ``(H, W)`` bool, the tissue mask the summary averages over (all True when none is given).
        summary: mean of ``std`` over ``valid & tissue`` (NaN when that is empty).
    """

    transforms: str
    count: int
    mean: torch.Tensor
    std: torch.Tensor
    valid: torch.Tensor
    tissue: torch.Tensor
    summary: float


def rotation_angles(n: int = 32) -> list[float]:
    """``n`` evenly spaced angles in degrees in [0, 90): ``k * 90 / n``."""
    if n < 1:
        raise ValueError(f"rotation_angles: expected a positive number of rotations, got {n}")
    return [k * 90.0 / n for k in range(n)]


def clean_mask(mask: np.ndarray, min_fraction: float = 0.01) -> np.ndarray:
    """``mask`` ``(H, W)`` bool with its holes filled and the connected parts smaller than ``min_fraction``
    of the image (specks) removed."""
    mask = ndimage.binary_fill_holes(np.asarray(mask, dtype=bool))
    labels, n = ndimage.label(mask)
    if n:
        sizes = np.bincount(labels.ravel())
        keep = sizes >= min_fraction * mask.size
        keep[0] = False
        mask = keep[labels]
    return mask


def image_tissue(image: torch.Tensor, options: TissueOptions = TissueOptions(), min_fraction: float = 0.01) -> torch.Tensor:
    """Tissue mask ``(H, W)`` bool of an RGB image ``(3, H, W)`` in [0, 1]: seed 000's HSV filter, cleaned by
    :func:`clean_mask` (holes filled, parts below ``min_fraction`` of the image removed)."""
    rgb = (image.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return torch.from_numpy(clean_mask(tissue_mask(np.ascontiguousarray(rgb), options), min_fraction))


def _cell_grid(model, size: int) -> tuple[int, int, int]:
    """``(top, stride, n)``: ``model``'s ``n x n`` cells on a ``size`` region, cell ``i`` covering pixels
    ``top + stride * i ..`` (a fully-convolutional classifier's patches; else every pixel is a cell)."""
    if model is not None and hasattr(model, "forward_dense"):
        s, rf = int(model.output_stride), int(model.receptive_field)
        return (rf - s) // 2, s, (size - rf) // s + 1
    return 0, 1, size


def _admits(model, size: int) -> bool:
    try:
        model.check_input_size(size, size)
    except ValueError:
        return False
    return True


def region_size(models, cells: int = 12, start: int = 16) -> int:
    """The smallest side from ``start`` on that every model takes and on which each predicts a disc of
    valid cells under :func:`rotation_stability` holding a ``cells x cells`` square (its cell grid spans
    at least ``cells * sqrt(2) + 1`` cells)."""
    need = int(math.ceil(cells * math.sqrt(2))) + 1
    size = start
    while not all(_admits(m, size) and _cell_grid(m, size)[2] >= need for m in models):
        size += 1
    return size


def _check_image(image: torch.Tensor, tissue) -> torch.Tensor:
    if image.dim() != 3 or image.shape[0] != 3 or image.shape[1] != image.shape[2]:
        raise ValueError(f"stability: expected one square RGB image (3, H, H) in [0, 1], got {tuple(image.shape)}")
    if tissue is not None and tuple(tissue.shape) != tuple(image.shape[1:]):
        raise ValueError(f"stability: tissue mask of shape {tuple(tissue.shape)} does not match the image "
                         f"{tuple(image.shape[1:])}")
    return image


def _predict(predictor, batch: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([predictor(batch[i:i + batch_size]) for i in range(0, len(batch), batch_size)])


def _result(transforms: str, back: torch.Tensor, valid: torch.Tensor, tissue) -> StabilityResult:
    """``back``: ``(|R|, H, W)`` predictions in the original orientation, NaN where undefined."""
    valid = valid & back.isfinite().all(0)
    filled = torch.where(valid, back, torch.zeros_like(back)).double()
    mean = filled.mean(0)
    std = (filled - mean).pow(2).mean(0).sqrt()
    nan = torch.tensor(float("nan"), dtype=mean.dtype)
    tissue = torch.ones_like(valid) if tissue is None else tissue.to(valid.device).bool()
    region = valid & tissue
    summary = float(std[region].mean()) if region.any() else math.nan
    return StabilityResult(transforms, len(back), torch.where(valid, mean, nan).cpu(),
                           torch.where(valid, std, nan).cpu(), valid.cpu(), tissue.cpu(), summary)


@torch.no_grad()
def group_stability(predictor, image: torch.Tensor, group="p4m", tissue: torch.Tensor | None = None,
                    batch_size: int = 8) -> StabilityResult:
    """Mean and std of ``T_g^-1 predictor(T_g image)`` over every element ``g`` of ``group``.

    Args:
        predictor: maps ``(B, 3, H, W)`` in [0, 1] to ``(B, H, W)`` probabilities (a ``ProbabilityMap``).
        image: ``(3, H, H)`` RGB in [0, 1].
        group: Defaults to ``"p4m"`` (the 8 roto-reflections).
        tissue: ``(H, H)`` bool mask the summary averages over. Defaults to None (every valid pixel).
        batch_size: images per forward pass. Defaults to 8.
    """
    group = get_group(group)
    image = _check_image(image, tissue)
    batch = torch.stack([group.transform(image, g) for g in range(group.order)])  # (|G|, 3, H, H)
    preds = _predict(predictor, batch, batch_size)  # (|G|, H, H)
    back = torch.stack([group.transform(preds[g], group.inverse[g]) for g in range(group.order)])
    return _result(group.name, back, torch.ones(image.shape[1:], dtype=torch.bool, device=back.device), tissue)


@torch.no_grad()
def rotation_stability(predictor, image: torch.Tensor, n: int = 32, tissue: torch.Tensor | None = None,
                       batch_size: int = 8, padding_mode: str = "reflection", progress: bool = False,
                       angles: list | None = None) -> StabilityResult:
    """Mean and std of ``R_-a predictor(R_a image)`` over the angles ``a`` of :func:`rotation_angles`.

    Args:
        predictor: maps ``(B, 3, H, W)`` in [0, 1] to ``(B, H, W)`` probabilities (a ``ProbabilityMap``).
        image: ``(3, H, H)`` RGB in [0, 1].
        n: number of rotations in [0, 90) degrees. Defaults to 32 (seed 000 Fig. 3).
        tissue: ``(H, H)`` bool mask the summary averages over. Defaults to None (every valid pixel).
        batch_size: images per forward pass. Defaults to 8.
        padding_mode: how the rotated input is filled beyond the image. Defaults to ``"reflection"``.
        progress: show a progress bar. Defaults to False.
        angles: other angles in degrees instead of :func:`rotation_angles` ``(n)``. Defaults to None.
    """
    image = _check_image(image, tissue)
    angles = rotation_angles(n) if angles is None else [float(a) for a in angles]
    n = len(angles)
    size = image.shape[-1]
    top, s, cells = _cell_grid(getattr(predictor, "model", None), size)
    centres = top + s * torch.arange(cells, dtype=torch.float64) + (s - 1) / 2 - (size - 1) / 2  # from the centre
    y, x = torch.meshgrid(centres, centres, indexing="ij")  # (cells, cells) rows, columns
    backs, valid = [], torch.ones(cells, cells, dtype=torch.bool)
    for start in tqdm(range(0, n, batch_size), desc="rotations", disable=not progress, leave=False):
        chunk = angles[start:start + batch_size]
        batch = torch.cat([rotate(image[None], math.radians(a), padding_mode) for a in chunk])  # (b, 3, H, H)
        preds = predictor(batch)[:, top::s, top::s][:, :cells, :cells].double()  # (b, cells, cells)
        for a, p in zip(chunk, preds):
            c, si = math.cos(math.radians(a)), math.sin(math.radians(a))
            # the point at (x, y) of the region lies at (c x + s y, -s x + c y) of the rotated copy
            u = ((c * x + si * y) - centres[0]) / s  # continuous cell index, columns
            v = ((-si * x + c * y) - centres[0]) / s
            inside = (u >= -1e-6) & (u <= cells - 1 + 1e-6) & (v >= -1e-6) & (v <= cells - 1 + 1e-6)
            valid &= inside
            grid = torch.stack([u, v], -1) / max(cells - 1, 1) * 2 - 1  # (cells, cells, 2) in [-1, 1]
            sampled = F.grid_sample(p[None, None], grid[None], mode="bilinear", align_corners=True)[0, 0]
            backs.append(sampled)
    back = torch.stack(backs)  # (n, cells, cells)
    log.debug("rotation stability over %d angles, %d of %d cells valid", n, int(valid.sum()), cells * cells)
    painted = torch.full((n, size, size), float("nan"), dtype=torch.float64)
    painted[:, top:top + cells * s, top:top + cells * s] = back.repeat_interleave(s, 1).repeat_interleave(s, 2)
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[top:top + cells * s, top:top + cells * s] = valid.repeat_interleave(s, 0).repeat_interleave(s, 1)
    return _result("rotations", painted, mask, tissue)


def _percentile(results, q: float) -> float:
    values = torch.cat([r.std[r.valid].flatten() for r in results]) if results else torch.zeros(1)
    return max(float(torch.quantile(values.float(), q)) if values.numel() else 0.0, 1e-6)


def _colorbar(fig, im, ax) -> None:
    bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    bar.ax.tick_params(labelsize=6)
    bar.formatter.set_powerlimits((-2, 2))
    bar.ax.yaxis.get_offset_text().set_fontsize(6)


def stability_figure(image: torch.Tensor, results: dict, synthetic: bool, title: str = "") -> Figure:
    """Side-by-side stability maps, one row per model: the region (tissue outlined), then mean and std
    for each set of transformations. The std colour scale is shared by all models of a column, so a
    model that is stable looks flat next to one that is not.

    Args:
        image: ``(3, H, H)`` RGB in [0, 1].
        results: ``{model name: [StabilityResult, ...]}``, the same transformation sets in the same order.
        synthetic: label the figure "SYNTHETIC DATA".
        title: prefix of the figure title. Defaults to none.
    """
    names = list(results)
    sets = [r.transforms for r in results[names[0]]]
    vmax = [_percentile([results[n][j] for n in names], 0.99) for j in range(len(sets))]
    cols = 1 + 2 * len(sets)
    fig = Figure(figsize=(2.6 * cols, 2.6 * len(names) + 0.6))
    axes = fig.subplots(len(names), cols, squeeze=False)
    rgb = image.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    for i, name in enumerate(names):
        ax = axes[i, 0]
        ax.imshow(rgb)
        tissue = results[name][0].tissue.numpy()
        framed = np.pad(tissue.astype(float), 1)  # so tissue that reaches the border is outlined there too
        ax.contour(np.arange(-1, tissue.shape[1] + 1), np.arange(-1, tissue.shape[0] + 1), framed, levels=[0.5],
                   colors="lime", linewidths=1.2)
        ax.set_xlim(-1.5, tissue.shape[1] + 0.5)
        ax.set_ylim(tissue.shape[0] + 0.5, -1.5)
        ax.set_title(f"{name}\nregion, tissue {100 * tissue.mean():.0f}% (outlined)", fontsize=8)
        for j, r in enumerate(results[name]):
            what = (f"{r.count} rotations in [0, 90)" if r.transforms == "rotations"
                    else f"{r.count} {r.transforms} elements")
            im = axes[i, 1 + 2 * j].imshow(r.mean.numpy(), vmin=0, vmax=1, cmap="viridis")
            axes[i, 1 + 2 * j].set_title(f"mean, {what}", fontsize=8)
            _colorbar(fig, im, axes[i, 1 + 2 * j])
            im = axes[i, 2 + 2 * j].imshow(r.std.numpy(), vmin=0, vmax=vmax[j], cmap="magma")
            axes[i, 2 + 2 * j].set_title(f"std, {what}\nmean std over tissue {r.summary:.2e}", fontsize=8)
            _colorbar(fig, im, axes[i, 2 + 2 * j])
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    label = f"{title} " if title else ""
    fig.suptitle(f"{label}prediction stability{' - ' + SYNTHETIC_LABEL if synthetic else ''}", fontsize=10)
    return fig
