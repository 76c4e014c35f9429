"""The one input-shape check of the layers: ``check_shape(layer, x, dims)`` raises a one-line ``ValueError``
naming the layer, the expected shape and the actual one.

Example:
    >>> import torch
    >>> check_shape("GroupPool", torch.zeros(2, 3, 8, 5, 5), ("C", 8, "H", "W"))
    >>> check_shape("GroupPool", torch.zeros(2, 3, 4, 5, 5), ("C", 8, "H", "W"))
    Traceback (most recent call last):
    ...
    ValueError: GroupPool: expected input of shape (B, C, 8, H, W), got (2, 3, 4, 5, 5)
"""

import torch

__all__ = ["check_shape"]


def check_shape(layer: str, x: torch.Tensor, dims: tuple, what: str = "input") -> None:
    """Raise ``ValueError`` unless ``x`` is ``(B, *dims)``: an int in ``dims`` is a required size, a string
    any size (it names the axis in the message)."""
    ok = x.dim() == len(dims) + 1 and all(isinstance(d, str) or x.shape[i + 1] == d for i, d in enumerate(dims))
    if not ok:
        raise ValueError(f"{layer}: expected {what} of shape (B, {', '.join(map(str, dims))}), got {tuple(x.shape)}")
