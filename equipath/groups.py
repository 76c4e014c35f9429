"""The symmetry groups of equipath and how their elements act on tensors.

A group element ``g = (r, m)`` acts on a planar image by ``T_g(x) = rot90(flip^m(x), r)`` on the last
two axes (``flip`` mirrors the last axis, ``rot90`` turns counter-clockwise from the first spatial axis
to the second, as ``torch.rot90(x, r, (-2, -1))``). Elements are indexed ``i = r + 4 * m``, so the first
four elements of ``p4m`` are the rotations, which form ``p4``.

A feature map on the group has its orientation axis third from the end, ``(..., |G|, H, W)``, and the
group acts on it by the regular representation

    [L_g f](h, x) = f(g^-1 h, T_g^-1 x),   i.e.   out[..., h, :, :] = T_g(f[..., g^-1 h, :, :]).

This module is the single place that owns that math: augmentation, test-time augmentation, stability
analysis, the layers' filter construction and the tests all call it. It knows nothing of ``nn.Module``.

Example:
    >>> import torch
    >>> from equipath.groups import get_group
    >>> p4m = get_group("p4m")
    >>> x = torch.randn(2, 3, 8, 8)
    >>> y = p4m.transform(x, 5)                      # rotate by 90 degrees after a mirror
    >>> bool((p4m.transform(y, p4m.inverse[5]) == x).all())
    True
"""

from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["Group", "get_group", "GROUP_NAMES"]

GROUP_NAMES = ("z2", "p4", "p4m")


def _planar(x, r: int, m: int):
    """``rot90(flip^m(x), r)`` on the last two axes of a torch tensor or a numpy array."""
    if isinstance(x, torch.Tensor):
        if m:
            x = x.flip(-1)
        return torch.rot90(x, r, (-2, -1)) if r % 4 else x
    if m:
        x = np.flip(x, -1)
    return np.rot90(x, r, (-2, -1)) if r % 4 else x


@dataclass(frozen=True, eq=False)
class Group:
    """A finite group of grid symmetries: ``z2`` (identity only), ``p4`` (4 rotations) or ``p4m``.

    Attributes:
        name: ``"z2"``, ``"p4"`` or ``"p4m"``.
        elements: ``(r, m)`` per element, ``r`` quarter turns after ``m`` mirrors.
        cayley: ``(|G|, |G|)`` int array, ``cayley[a, b]`` is the index of ``a o b`` (apply b, then a).
        inverse: ``(|G|,)`` int array of inverse indices.
    """

    name: str
    elements: tuple
    cayley: np.ndarray = field(repr=False)
    inverse: np.ndarray = field(repr=False)

    @property
    def order(self) -> int:
        """``|G|``, the number of elements."""
        return len(self.elements)

    def __len__(self) -> int:
        return self.order

    def __repr__(self) -> str:
        return f"Group({self.name!r}, order={self.order})"

    def compose(self, a: int, b: int) -> int:
        """Index of ``a o b``: the element that applies ``b`` first, then ``a``."""
        return int(self.cayley[a, b])

    def transform(self, x, g: int):
        """Planar action ``T_g`` on the last two axes of ``x`` (``(B, C, H, W)`` or any ``(..., H, W)``)."""
        r, m = self.elements[g]
        return _planar(x, r, m)

    def permutation(self, g: int) -> np.ndarray:
        """``perm`` with ``(L_g f)[..., h, :, :] = T_g(f[..., perm[h], :, :])``, i.e. ``perm[h] = g^-1 h``."""
        return self.cayley[self.inverse[g]]

    def transform_group(self, x, g: int):
        """Regular action ``L_g`` on a group feature map ``(..., |G|, H, W)``: permute the orientation
        axis (third from the end) by ``h -> g^-1 h`` and transform each plane by ``T_g``."""
        if x.shape[-3] != self.order:
            raise ValueError(
                f"{self.name}: expected an orientation axis of size {self.order} third from the end, "
                f"got shape {tuple(x.shape)}"
            )
        perm = self.permutation(g)
        if isinstance(x, torch.Tensor):
            return self.transform(x.index_select(-3, torch.tensor(perm, device=x.device)), g)
        return self.transform(x[..., perm, :, :], g)


def _build(name: str, elements: tuple) -> Group:
    # Compose elements by their effect on an asymmetric probe: exact, and free of sign conventions.
    probe = np.arange(16).reshape(4, 4)
    images = [_planar(probe, r, m) for r, m in elements]
    keys = {im.tobytes(): i for i, im in enumerate(images)}
    n = len(elements)
    cayley = np.empty((n, n), dtype=np.int64)
    for a, (ra, ma) in enumerate(elements):
        for b in range(n):
            composed = np.ascontiguousarray(_planar(images[b], ra, ma))
            if composed.tobytes() not in keys:
                raise RuntimeError(f"{name} is not closed under composition")
            cayley[a, b] = keys[composed.tobytes()]
    inverse = np.array([int(np.flatnonzero(cayley[a] == 0)[0]) for a in range(n)], dtype=np.int64)
    for arr in (cayley, inverse):
        arr.setflags(write=False)
    return Group(name, elements, cayley, inverse)


_GROUPS = {
    "z2": _build("z2", ((0, 0),)),
    "p4": _build("p4", tuple((r, 0) for r in range(4))),
    "p4m": _build("p4m", tuple((r, m) for m in range(2) for r in range(4))),
}


def get_group(group) -> Group:
    """Return the group named ``"z2"``, ``"p4"`` or ``"p4m"`` (a :class:`Group` is returned as is)."""
    if isinstance(group, Group):
        return group
    try:
        return _GROUPS[group]
    except (KeyError, TypeError):
        raise ValueError(f"unknown group {group!r}: expected one of {', '.join(GROUP_NAMES)}") from None
