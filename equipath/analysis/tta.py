"""Test-time augmentation over a group (seed 000 related work: 8x D4 TTA), and its comparison with an
equivariant model: accuracy, stability and seconds per image, measured side by side in one run.

:class:`GroupTTA` averages a model over the group: for an input ``x``,

    p(x) = 1/|G| sum_g A_g^-1 sigma(f(T_g x)),

with ``sigma`` the sigmoid (one logit) or softmax, ``A_g^-1`` the inverse action ``T_g^-1`` on planar
logit maps and the identity on classifier logits. ``p`` is exactly ``G``-invariant (equivariant) whatever
``f`` is, at ``|G|`` times the cost. It returns logits of ``p`` (``log p - log(1 - p)`` for one logit,
``log p`` otherwise), so it drops in wherever the model's logits are used.

Example:
    >>> import torch
    >>> from equipath.models import create_model
    >>> from equipath.testing import equivariance_error
    >>> tta = GroupTTA(create_model("densenet", growth=4).eval(), "p4m")
    >>> bool(equivariance_error(tta, torch.rand(2, 3, 96, 96), "p4m").max() < 1e-5)
    True
"""

import logging
import math
import time

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from equipath.analysis.io import SYNTHETIC_LABEL
from equipath.analysis.maps import ProbabilityMap, model_device
from equipath.testing import act, output_kind
from equipath.analysis.stability import group_stability, rotation_stability
from equipath.evaluation import classification_metrics, segmentation_metrics
from equipath.groups import get_group

__all__ = ["GroupTTA", "compare_tta", "tta_figure"]

log = logging.getLogger(__name__)


class GroupTTA(nn.Module):
    """Test-time augmentation of ``model`` over every element of ``group``: logits of the mean probability.

    Args:
        model: maps ``(B, C, H, W)`` to classifier logits ``(B, K)`` or logit maps ``(B, K, H, W)``.
        group: Defaults to ``"p4m"`` (the 8 roto-reflections, "8x D4 TTA").

    Shapes: those of ``model``; inputs must be square when the group has rotations.

    Example:
        >>> import torch
        >>> net = torch.nn.Conv2d(3, 2, 3, padding=1)
        >>> GroupTTA(net, "p4")(torch.rand(1, 3, 8, 8)).shape
        torch.Size([1, 2, 8, 8])
    """

    def __init__(self, model: nn.Module, group="p4m"):
        super().__init__()
        self.model, self.group = model, get_group(group)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or (self.group.order > 1 and x.shape[-1] != x.shape[-2]):
            raise ValueError(f"GroupTTA: expected a square batch (B, C, H, H), got {tuple(x.shape)}")
        total = None
        for g in range(self.group.order):
            logits = self.model(self.group.transform(x, g).contiguous())
            if logits.dim() not in (2, 4):
                raise ValueError(f"GroupTTA: expected logits (B, K) or (B, K, H, W), got {tuple(logits.shape)}")
            p = torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, 1)
            p = act(self.group, p, self.group.inverse[g], output_kind(self.group, p))
            total = p if total is None else total + p
        p = (total / self.group.order).clamp(1e-12, 1 - 1e-12)
        return torch.log(p) - torch.log1p(-p) if p.shape[1] == 1 else torch.log(p)

    def extra_repr(self) -> str:
        return f"group={self.group.name}"


def _metrics(task: str, logits: torch.Tensor, targets: torch.Tensor, num_classes: int) -> dict:
    if task == "classification":
        return classification_metrics(logits, targets)
    pred = logits.argmax(1) if logits.shape[1] > 1 else (logits[:, 0] > 0).long()
    out = {"accuracy": float((pred == targets).double().mean())}
    seg = segmentation_metrics(pred, targets, max(num_classes, 2))
    out.update(dice=seg["dice"], miou=seg["miou"])
    return out


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def _evaluate(name: str, model: nn.Module, loader, task: str, num_classes: int,
              stability_images: list, rotations: int, group, batch_size: int, progress: bool) -> dict:
    logits, targets, seconds, count = [], [], 0.0, 0
    device = model_device(model)
    for images, target in tqdm(loader, desc=name, disable=not progress, leave=False):
        z = images.to(device)
        _synchronize(device)
        start = time.perf_counter()
        out = model(z)
        _synchronize(device)
        seconds += time.perf_counter() - start
        count += len(images)
        logits.append(out.float().cpu())
        targets.append(target)
    row = {"model": name, "images": count}
    row.update(_metrics(task, torch.cat(logits), torch.cat(targets), num_classes))
    predictor = ProbabilityMap(model)
    d4 = [group_stability(predictor, im, group, batch_size=batch_size).summary for im in stability_images]
    row[f"{group.name}_std"] = float(np.nanmean(d4)) if d4 else math.nan
    if rotations:
        rot = [rotation_stability(predictor, im, rotations, batch_size=batch_size).summary for im in stability_images]
        row["rotation_std"] = float(np.nanmean(rot)) if rot else math.nan
    row["seconds_per_image"] = seconds / max(count, 1)
    return row


def compare_tta(models: dict, dataset, group="p4m", *, rotations: int = 32, stability_images: int = 16,
                batch_size: int = 32, synthetic: bool = False, progress: bool = True) -> list[dict]:
    """Accuracy, stability and seconds per image of each model as it is and, for each model that is not
    already equivariant to ``group``, of its :class:`GroupTTA`, measured side by side in one run.

    Args:
        models: ``{name: model}``; every model in eval mode, taking RGB in [0, 1] (a checkpoint's model from
            :func:`equipath.models.load_model` normalises its input itself).
        dataset: items ``(image (3, H, H) float in [0, 1], target)``; target a label (classifiers) or an
            ``(H, H)`` int64 mask (segmentation models).
        group: the TTA group. Defaults to ``"p4m"`` (8x D4 TTA).
        rotations: sub-90-degree rotations for the rotation stability; 0 skips it. Defaults to 32.
        stability_images: the first this many images are used for the stability numbers. Defaults to 16.
        batch_size: Defaults to 32.
        synthetic: the data are synthetic (recorded in every row). Defaults to False.
        progress: show progress bars. Defaults to True.

    Returns:
        One row per model (and TTA model): ``model``, ``tta`` (bool), ``images``, the task's metrics
        (classification: ``nll``, ``accuracy``, ``auc``; segmentation: pixel ``accuracy``, ``dice``,
        ``miou``), ``<group>_std`` and ``rotation_std`` (mean over the stability images of the mean std of
        the predicted probability), ``seconds_per_image`` (model time only, batch ``batch_size``),
        ``time_ratio`` (to the first row) and ``synthetic``.
    """
    group = get_group(group)
    if not models:
        raise ValueError("compare_tta: expected at least one model")
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    images = [dataset[i][0] for i in range(min(stability_images, len(dataset)))]
    rows = []
    for name, model in models.items():
        task = getattr(model, "task", "classification")
        num_classes = getattr(model, "num_classes", 1)
        entries = [(name, model, False)]
        own = getattr(model, "group", None)
        if own is None or get_group(own).order < group.order:
            entries.append((f"{name}+tta", GroupTTA(model, group).eval(), True))
        for label, module, tta in entries:
            log.info("TTA comparison: %s", label)
            row = _evaluate(label, module, loader, task, num_classes, images, rotations, group,
                            batch_size, progress)
            row["tta"] = tta
            rows.append(row)
    first = rows[0]["seconds_per_image"]
    for row in rows:
        row["time_ratio"] = row["seconds_per_image"] / first if first > 0 else math.nan
        row["synthetic"] = synthetic
    return rows


def tta_figure(rows: list[dict], synthetic: bool) -> Figure:
    """Bars per model (and TTA model): accuracy, the stability numbers and seconds per image."""
    keys = ["accuracy"] + [k for k in rows[0] if k.endswith("_std")] + ["seconds_per_image"]
    fig = Figure(figsize=(3.2 * len(keys), 3.4))
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    names = [r["model"] for r in rows]
    colors = ["tab:orange" if r["tta"] else "tab:blue" for r in rows]
    for ax, key in zip(axes, keys):
        ax.bar(range(len(rows)), [r[key] for r in rows], color=colors)
        ax.set_xticks(range(len(rows)), names, rotation=25, fontsize=7, ha="right")
        ax.set_title(key.replace("_", " "), fontsize=9)
        if key.endswith("_std") or key == "seconds_per_image":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    fig.suptitle(f"test-time augmentation vs equivariance (TTA in orange)"
                 f"{' - ' + SYNTHETIC_LABEL if synthetic else ''}", fontsize=10)
    return fig
