"""What every registered model shares: its group, task, the input sizes at which it is exactly
equivariant, and the check that rejects any other size at the boundary.

Strided convolutions and pooling are exactly equivariant only on symmetric sampling grids, so each
architecture admits the side lengths ``n = first + step * k`` (``k = 0, 1, 2, ...``), a :class:`SizeRule`.

Example:
    >>> rule = SizeRule(first=96, step=32)
    >>> rule.admits(128), rule.admits(100), str(rule)
    (True, False, '96 + 32k (96, 128, 160, ...)')
"""

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from equipath.groups import get_group

__all__ = ["SizeRule", "ModelBase", "SegmentationModel", "probe_receptive_field"]


@dataclass(frozen=True)
class SizeRule:
    """Admissible side lengths ``first + step * k`` for ``k >= 0``."""

    first: int
    step: int

    def admits(self, n: int) -> bool:
        return n >= self.first and (n - self.first) % self.step == 0

    def nearest(self, n: int) -> tuple[int, ...]:
        """The admissible sizes just below and above ``n`` (one of them when ``n`` is below ``first``)."""
        if n <= self.first:
            return (self.first,)
        below = self.first + (n - self.first) // self.step * self.step
        return (below, below + self.step)

    def __str__(self) -> str:
        f, s = self.first, self.step
        return f"{f} + {s}k ({f}, {f + s}, {f + 2 * s}, ...)"


class ModelBase(nn.Module):
    """Base of every registered model.

    Attributes:
        group: the :class:`~equipath.groups.Group` the model is exactly equivariant to.
        task: ``"classification"`` or ``"segmentation"``.
        num_classes: output channels (1 tumour logit for the classifiers).
        size_rule: the admissible input heights and widths.
        input_size: a small admissible ``(H, W)``, used by the tests.

    Example:
        >>> from equipath.models import create_model
        >>> model = create_model("densenet", growth=4)
        >>> model.check_input_size(128, 96)
        >>> model.check_input_size(100, 96)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: DenseNet (z2): input size 100x96 is not admissible: ... 96 + 32k ...; got height 100 (...)
    """

    task: str
    size_rule: SizeRule

    def __init__(self, group, num_classes: int, input_size: tuple[int, int]):
        super().__init__()
        self.group = get_group(group)
        self.num_classes = num_classes
        self.input_size = tuple(input_size)

    def check_input_size(self, h: int, w: int) -> None:
        """Raise ``ValueError`` unless height ``h`` and width ``w`` are both admissible."""
        bad = [(axis, n) for axis, n in (("height", h), ("width", w)) if not self.size_rule.admits(n)]
        if bad:
            detail = "; ".join(f"{axis} {n} (nearest admissible: "
                               f"{' or '.join(map(str, self.size_rule.nearest(n)))})" for axis, n in bad)
            raise ValueError(f"{type(self).__name__} ({self.group.name}): input size {h}x{w} is not admissible: "
                             f"height and width must each be {self.size_rule}; got {detail}")

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is ``(B, 3, H, W)`` with admissible ``H`` and ``W``."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"{type(self).__name__}: expected an RGB batch of shape (B, 3, H, W), "
                             f"got {tuple(x.shape)}")
        self.check_input_size(x.shape[-2], x.shape[-1])

    def extra_repr(self) -> str:
        return f"group={self.group.name}, task={self.task}, sizes={self.size_rule}"


_PROBED: dict[str, tuple[int, int]] = {}


class SegmentationModel(ModelBase):
    """Base of the segmentation models ``(B, 3, H, W) -> (B, num_classes, H, W)``, with what tiled
    inference needs, computed from the modules (:func:`probe_receptive_field`), never typed by hand:

    Attributes:
        receptive_radius: ``r``, the largest distance (per axis, in pixels) between an output pixel and an
            input pixel it depends on; a tile read with a margin of ``r`` gives exact outputs in its centre.
        receptive_field: ``2 r + 1``, the side of the square an output pixel sees.
        total_stride: ``s``, the period of the down-sampling grid: shifting the input by a multiple of ``s``
            shifts the output by the same amount (tile origins go on multiples of ``s``).

    The probe runs once per model, on :meth:`probe_copy` (the same architecture at the smallest width).
    """

    task = "segmentation"

    def probe_copy(self) -> "SegmentationModel":
        """The same architecture, as small as possible; its receptive field and stride are this model's.
        Defaults to a deep copy of the model."""
        return copy.deepcopy(self)

    def _probed(self) -> tuple[int, int]:
        if self.__dict__.get("_probe_result") is None:
            with torch.inference_mode(False):  # the probe builds and edits a model: no inference tensors
                small = self.probe_copy()
                key = repr(small)  # the architecture: every layer with its shapes
                if key not in _PROBED:
                    _PROBED[key] = probe_receptive_field(small)
            self.__dict__["_probe_result"] = _PROBED[key]
        return self.__dict__["_probe_result"]

    @property
    def receptive_radius(self) -> int:
        return self._probed()[0]

    @property
    def receptive_field(self) -> int:
        return 2 * self._probed()[0] + 1

    @property
    def total_stride(self) -> int:
        return self._probed()[1]


@torch.no_grad()
def probe_receptive_field(model: ModelBase, max_side: int = 4096) -> tuple[int, int]:
    """``(radius, stride)`` of a segmentation model, measured by impulse responses.

    Every weight is set positive (uniform in ``[0.5, 1.5] / fan``), every bias and running mean to 0 and
    running variance to 1, and the model runs in float64 in eval mode. Zero input then gives exactly zero
    output, and an impulse gives a positive response exactly where an output depends on that input pixel
    (convolutions, max / average pooling, interpolation, ReLU, batch-norm and sums all keep positive
    support). Impulses at ``P = size_rule.step + 1`` consecutive positions along a line (the admissible
    sizes repeat with period ``step``, so the stride divides it and the impulses meet every phase) give:

    - radius: the largest distance from an impulse to the edge of its response, along each axis (one
      axis when the model's group holds the quarter turn, which maps one axis onto the other);
    - stride: the smallest shift ``t`` with response(p + t) = response(p) shifted by ``t`` for every ``p``.

    The line is ``size_rule.first`` pixels thick and long enough (grown until no response reaches its
    ends), so the probe is cheap even for deep U-Nets.

    Raises:
        ValueError: the response reaches the end of a ``max_side`` line, or no shift up to ``step``
            is a symmetry of the model.
    """
    model = model.double().eval()
    generator = torch.Generator().manual_seed(0)
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            p.zero_()
        else:
            fan = p[0].numel() if p.dim() > 1 else 1
            p.copy_((torch.rand(p.shape, generator=generator, dtype=p.dtype) + 0.5) / fan)
    for name, b in model.named_buffers():
        if name.endswith("running_mean"):
            b.zero_()
        elif name.endswith("running_var"):
            b.fill_(1.0)
    rule = model.size_rule
    period = rule.step + 1
    radius, stride = 0, 1
    axes = (-1,) if model.group.name in ("p4", "p4m") else (-1, -2)
    for axis in axes:
        k = max(0, -(-(period + 128 - rule.first) // rule.step))
        while True:
            n = rule.first + rule.step * k
            if n > max_side:
                raise ValueError(f"{type(model).__name__}: receptive field probe reached {max_side} pixels")
            shape = (period, 3, rule.first, n) if axis == -1 else (period, 3, n, rule.first)
            x = torch.zeros(shape, dtype=torch.float64)
            centre = (n - period) // 2
            for o in range(period):
                index = (o, slice(None), rule.first // 2, centre + o) if axis == -1 else \
                    (o, slice(None), centre + o, rule.first // 2)
                x[index] = 1.0
            y = model(x)  # (period, C, ...)
            response = y.movedim(axis, -1).flatten(1, -2)  # (period, rest, n)
            support = (response != 0).any(dim=1)  # (period, n)
            if support[:, 0].any() or support[:, -1].any():
                k = 2 * k + 1
                continue
            cols = torch.arange(n)
            for o in range(period):
                hit = cols[support[o]]
                radius = max(radius, int(centre + o - hit.min()), int(hit.max() - centre - o))
            stride = math.lcm(stride, _shift_period(response, period, model))
            break
    return radius, stride


def _shift_period(response: torch.Tensor, period: int, model) -> int:
    """The smallest ``t`` with ``response[o + t]`` equal to ``response[o]`` shifted by ``t`` for every ``o``."""
    for t in range(1, period):
        same = all(torch.allclose(response[o + t, :, t:], response[o, :, :-t], rtol=1e-9, atol=0.0)
                   for o in range(period - t))
        if same:
            return t
    raise ValueError(f"{type(model).__name__}: no shift up to {period - 1} pixels commutes with the model")
