"""Check equivariance of any layer or model, over every element of a group.

A module ``f`` is equivariant when ``f(T_in(g) x) = T_out(g) f(x)`` for every ``g``. The input and output
kinds are read from the tensors: ``(B, C, H, W)`` is planar (acted on by ``T_g``), ``(B, C, |G|, H, W)``
a group feature map (acted on by ``L_g``), and any other output, e.g. classifier logits ``(B, K)``, is
treated as invariant. Pass ``output="invariant"`` to demand invariance of a planar or group output.

Example:
    >>> import torch
    >>> from equipath.nn import LiftingConv2d
    >>> from equipath.testing import assert_equivariant
    >>> layer = LiftingConv2d(3, 4, 3, "p4m")
    >>> assert_equivariant(layer, torch.randn(2, 3, 9, 9), "p4m")
"""

import torch

from equipath.groups import get_group

__all__ = ["equivariance_error", "assert_equivariant", "TOLERANCES"]

TOLERANCES = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}


def _act(group, t: torch.Tensor, g: int, kind: str) -> torch.Tensor:
    if kind == "invariant":
        return t
    if kind == "planar":
        return group.transform(t, g)
    return group.transform_group(t, g)


def _kind(group, t: torch.Tensor) -> str:
    if t.dim() == 5 and t.shape[2] == group.order:
        return "group"
    if t.dim() == 4:
        return "planar"
    return "invariant"


@torch.no_grad()
def equivariance_error(module, x: torch.Tensor, group, output: str | None = None) -> torch.Tensor:
    """Relative equivariance error for every group element.

    Args:
        module: any callable, typically an ``nn.Module`` in eval mode.
        x: an input, planar ``(B, C, H, W)`` or group ``(B, C, |G|, H, W)``.
        group: ``"z2"``, ``"p4"``, ``"p4m"`` or a :class:`~equipath.groups.Group`.
        output: ``"planar"``, ``"group"`` or ``"invariant"``; defaults to reading it from the output shape.

    Returns:
        ``(|G|,)`` tensor: ``max |f(T_g x) - T_g f(x)| / max |f(x)|`` per element (0 for the identity
        of a deterministic module).
    """
    group = get_group(group)
    in_kind = _kind(group, x)
    if in_kind == "invariant":
        raise ValueError(f"equivariance_error: expected an input of shape (B, C, H, W) or (B, C, {group.order}, H, W), "
                         f"got {tuple(x.shape)}")
    y = module(x)
    out_kind = output or _kind(group, y)
    if out_kind not in ("planar", "group", "invariant"):
        raise ValueError(f"equivariance_error: output must be 'planar', 'group' or 'invariant', got {output!r}")
    scale = y.abs().max().clamp_min(torch.finfo(y.dtype).tiny)
    errors = []
    for g in range(group.order):
        y_g = module(_act(group, x, g, in_kind))
        expected = _act(group, y, g, out_kind)
        if y_g.shape != expected.shape:
            raise ValueError(f"equivariance_error: element {g} gives an output of shape {tuple(y_g.shape)}, "
                             f"expected {tuple(expected.shape)} (is the input square?)")
        errors.append(((y_g - expected).abs().max() / scale).double())
    return torch.stack(errors)


def assert_equivariant(module, x: torch.Tensor, group, output: str | None = None, rtol: float | None = None) -> None:
    """Raise ``AssertionError`` unless ``equivariance_error`` is within ``rtol`` for every element.

    ``rtol`` defaults to :data:`TOLERANCES` for ``x.dtype`` (float32 1e-5, float64 1e-12).
    """
    group = get_group(group)
    errors = equivariance_error(module, x, group, output)
    tol = TOLERANCES[x.dtype] if rtol is None else rtol
    worst = int(errors.argmax())
    if errors[worst] > tol:
        r, m = group.elements[worst]
        raise AssertionError(
            f"not {group.name}-equivariant: relative error {float(errors[worst]):.3g} > {tol:g} at element {worst} "
            f"({r} quarter turns{' after a mirror' if m else ''}); errors per element: "
            + ", ".join(f"{float(e):.2g}" for e in errors)
        )
