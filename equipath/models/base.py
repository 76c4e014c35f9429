"""What every registered model shares: its group, task, the input sizes at which it is exactly
equivariant, and the check that rejects any other size at the boundary.

Strided convolutions and pooling are exactly equivariant only on symmetric sampling grids, so each
architecture admits the side lengths ``n = first + step * k`` (``k = 0, 1, 2, ...``), a :class:`SizeRule`.

Example:
    >>> rule = SizeRule(first=96, step=32)
    >>> rule.admits(128), rule.admits(100), str(rule)
    (True, False, '96 + 32k (96, 128, 160, ...)')
"""

from dataclasses import dataclass

import torch
from torch import nn

from equipath.groups import get_group

__all__ = ["SizeRule", "ModelBase"]


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
