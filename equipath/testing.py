"""Check equivariance of any layer or model, over every element of a group.

A module ``f`` is equivariant when ``f(T_in(g) x) = T_out(g) f(x)`` for every ``g``. The input and output
kinds are read from the tensors by :func:`output_kind`, the one dispatcher of the package (the analyses use
it too): ``(B, C, H, W)`` and z2 maps ``(B, C, 1, H, W)`` are planar (acted on by ``T_g``),
``(B, C, |G|, H, W)`` a group feature map (acted on by ``L_g``), and any other output, e.g. classifier
logits ``(B, K)``, is treated as invariant. Pass ``output="invariant"`` to demand invariance of a planar or
group output.

Example:
    >>> import torch
    >>> from equipath.nn import LiftingConv2d
    >>> from equipath.testing import assert_equivariant
    >>> layer = LiftingConv2d(3, 4, 3, "p4m")
    >>> assert_equivariant(layer, torch.randn(2, 3, 9, 9), "p4m")
"""

import torch

from equipath.groups import get_group

__all__ = ["equivariance_error", "assert_equivariant", "output_kind", "act", "relative_error", "TOLERANCES"]

TOLERANCES = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}


def output_kind(group, t: torch.Tensor) -> str:
    """How ``group`` acts on ``t``, read from its shape: ``"group"`` for ``(B, C, |G|, H, W)``, ``"planar"``
    for ``(B, C, H, W)`` and for ``(B, C, 1, H, W)`` (a z2 feature map: its orientation axis is trivial, so
    ``L_g`` is ``T_g`` of each plane), ``"other"`` for a group feature map of another group (e.g. p4 maps
    under p4m: no action is defined), else ``"invariant"`` (logits)."""
    if t.dim() == 5:
        return "group" if t.shape[2] == group.order else ("planar" if t.shape[2] == 1 else "other")
    if t.dim() == 4:
        return "planar"
    return "invariant"


def act(group, t: torch.Tensor, g: int, kind: str) -> torch.Tensor:
    """The action of element ``g`` on a tensor of ``kind``: ``T_g`` (planar), ``L_g`` (group) or none
    (invariant); ``ValueError`` for ``"other"``."""
    if kind == "planar":
        return group.transform(t, g)
    if kind == "group":
        return group.transform_group(t, g)
    if kind == "other":
        raise ValueError(f"{group.name} does not act on a feature map of shape {tuple(t.shape)}")
    return t


def relative_error(actual: torch.Tensor, expected: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """``max |actual - expected| / max |scale|`` (``scale`` defaults to ``expected``; 0 for empty tensors);
    ``ValueError`` when the shapes differ."""
    if actual.shape != expected.shape:
        raise ValueError(f"relative_error: shapes differ, {tuple(actual.shape)} vs {tuple(expected.shape)}")
    if not actual.numel():
        return actual.new_zeros((), dtype=torch.float64)
    ref = expected if scale is None else scale
    denominator = ref.abs().max().clamp_min(torch.finfo(ref.dtype).tiny)
    return ((actual - expected).abs().max() / denominator).double()


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
    in_kind = output_kind(group, x)
    if in_kind not in ("planar", "group"):
        raise ValueError(f"equivariance_error: expected an input of shape (B, C, H, W) or (B, C, {group.order}, H, W), "
                         f"got {tuple(x.shape)}")
    y = module(x)
    out_kind = output or output_kind(group, y)
    if out_kind not in ("planar", "group", "invariant"):
        raise ValueError(f"equivariance_error: output must be 'planar', 'group' or 'invariant', got {output!r}"
                         if output else f"equivariance_error: {group.name} does not act on an output of shape "
                         f"{tuple(y.shape)}")
    errors = []
    for g in range(group.order):
        y_g = module(act(group, x, g, in_kind))
        expected = act(group, y, g, out_kind)
        if y_g.shape != expected.shape:
            raise ValueError(f"equivariance_error: element {g} gives an output of shape {tuple(y_g.shape)}, "
                             f"expected {tuple(expected.shape)} (is the input square?)")
        errors.append(relative_error(y_g, expected, y))
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
