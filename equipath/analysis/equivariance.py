"""Layer-by-layer equivariance report: where a model loses exactness.

For an input ``x`` and every element ``g`` of the group, the model is run on ``x`` and on ``T_g x`` with a
forward hook on every submodule. For each submodule call with a tensor output ``y(x)``:

- the *cumulative* error compares what the module computes inside the model for the transformed input
  with the transformed output, ``e_g = max |y(T_g x) - A_g y(x)| / max |y(x)|``, where ``A_g`` is ``T_g``
  on planar ``(B, C, H, W)`` outputs, ``L_g`` on group ``(B, C, |G|, H, W)`` outputs and the identity on
  anything else (logits, which must be invariant); z2 maps ``(B, C, 1, H, W)`` are acted on as planar maps;
- the *local* error runs a leaf module (one without children) alone on ``A_g`` of its own input,
  ``max |m(A_g u) - A_g m(u)| / max |m(u)|``, so a layer that breaks equivariance is flagged by its own
  number even when an earlier layer has broken it already (leaves called with one tensor argument;
  containers and other calls have no local error).

A row's ``max_error`` and ``mean_error`` are the maximum and the mean of ``e_g`` over every element. The
first row, in the order the calls return (children before their parent), whose maximum exceeds the
tolerance is where exactness is lost; the leaf rows whose *local* error exceeds it are the layers that are
not equivariant themselves (a strided convolution on an asymmetric grid, a plain ``nn.Conv2d`` among group
layers, an odd-size crop, ...).

The report runs on a float64 copy of the model by default, so float rounding (~1e-15) and a real break
(~1e-2) are far apart; the tolerance is :data:`equipath.testing.TOLERANCES` of that dtype.

Example:
    >>> import torch
    >>> from equipath.nn import LiftingConv2d, GroupPool
    >>> net = torch.nn.Sequential(LiftingConv2d(3, 4, 3, "p4m"), GroupPool("p4m"), torch.nn.Conv2d(4, 4, 3))
    >>> report = layer_report(net, torch.rand(1, 3, 11, 11), "p4m")
    >>> report.first_broken().name, [row.name for row in report.culprits()]
    ('2', ['2'])
"""

import copy
import math
from dataclasses import dataclass

import torch
from matplotlib.figure import Figure
from torch import nn

from equipath.analysis.io import SYNTHETIC_LABEL
from equipath.analysis.maps import model_device
from equipath.groups import get_group
from equipath.testing import TOLERANCES, act, output_kind, relative_error

__all__ = ["LayerError", "EquivarianceReport", "layer_report", "format_error", "equivariance_figure"]


@dataclass(frozen=True)
class LayerError:
    """Equivariance errors of one submodule call.

    Attributes:
        name: dotted module name (``"(model)"`` for the whole model), with ``#k`` for its k-th repeated call.
        module: class name. leaf: True when the module has no children.
        kind: ``"planar"``, ``"group"``, ``"invariant"`` or ``"other"`` (see
            :func:`equipath.testing.output_kind`), read from the output shape.
        shape: output shape for the untransformed input.
        errors: ``(|G|,)`` cumulative relative error per element (``inf`` when the shapes differ or the call
            is missing from a transformed pass, NaN when the group does not act on the output: ``"other"``).
        local: ``(|G|,)`` local relative error per element, or None when not measurable.
    """

    name: str
    module: str
    leaf: bool
    kind: str
    shape: tuple
    errors: tuple
    local: tuple | None

    @property
    def max_error(self) -> float:
        return max(self.errors)

    @property
    def mean_error(self) -> float:
        return sum(self.errors) / len(self.errors)

    @property
    def max_local(self) -> float | None:
        return None if self.local is None else max(self.local)

    @property
    def mean_local(self) -> float | None:
        return None if self.local is None else sum(self.local) / len(self.local)


@dataclass(frozen=True)
class EquivarianceReport:
    """The rows of :func:`layer_report` in the order the calls return (the whole model last), their tolerance."""

    group: str
    input_shape: tuple
    dtype: str
    tolerance: float
    layers: tuple

    @property
    def model(self) -> LayerError:
        """The row of the whole model."""
        return self.layers[-1]

    @property
    def exact(self) -> bool:
        """True when the model's output is equivariant within the tolerance."""
        return self.model.max_error <= self.tolerance

    def first_broken(self) -> LayerError | None:
        """The first row whose cumulative error exceeds the tolerance, or None."""
        return next((row for row in self.layers if row.max_error > self.tolerance), None)

    def culprits(self) -> list[LayerError]:
        """Leaf modules whose own (local) error exceeds the tolerance: the blocks that break equivariance."""
        return [row for row in self.layers
                if row.leaf and row.local is not None and row.max_local > self.tolerance]

    def rows(self) -> list[dict]:
        """One plain dict per row (JSON/CSV ready; ``inf`` becomes None)."""
        def num(v):
            return v if v is None or math.isfinite(v) else None
        return [{"layer": r.name, "module": r.module, "leaf": r.leaf, "kind": r.kind,
                 "shape": "x".join(map(str, r.shape)),
                 "max_error": num(r.max_error), "mean_error": num(r.mean_error),
                 "max_local_error": num(r.max_local), "mean_local_error": num(r.mean_local),
                 "exact": None if math.isnan(r.max_error) else r.max_error <= self.tolerance,
                 "errors": [num(e) for e in r.errors]} for r in self.layers]

    def summary(self) -> dict:
        """Model-level numbers: its maximum and mean error, exactness, where it is lost, the culprits."""
        broken = self.first_broken()
        return {"group": self.group, "input_shape": list(self.input_shape), "dtype": self.dtype,
                "tolerance": self.tolerance, "max_error": self.model.max_error,
                "mean_error": self.model.mean_error, "exact": self.exact,
                "first_broken": None if broken is None else broken.name,
                "culprits": [r.name for r in self.culprits()]}

    def _exact(self, row: LayerError) -> str:
        return "n/a" if math.isnan(row.max_error) else ("yes" if row.max_error <= self.tolerance else "**no**")

    def to_markdown(self, leaves_only: bool = False) -> str:
        """A markdown table of the rows (every row, or only the leaf modules and the whole model)."""
        lines = ["| layer | module | output | max error | mean error | max local error | exact |",
                 "|---|---|---|---|---|---|---|"]
        for r in self.layers:
            if leaves_only and not r.leaf and r is not self.model:
                continue
            lines.append(f"| `{r.name}` | {r.module} | {r.kind} {'x'.join(map(str, r.shape))} "
                         f"| {format_error(r.max_error)} | {format_error(r.mean_error)} "
                         f"| {format_error(r.max_local)} | {self._exact(r)} |")
        return "\n".join(lines)


def format_error(v: float | None) -> str:
    """An error for a table: ``1.23e-05``, ``shape mismatch`` for ``inf``, ``n/a`` for NaN, ``-`` for None."""
    if v is None:
        return "-"
    if math.isnan(v):
        return "n/a"
    return "shape mismatch" if math.isinf(v) else f"{v:.2e}"


def _relative(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> float:
    """:func:`equipath.testing.relative_error`, ``inf`` when the shapes differ."""
    return math.inf if a.shape != b.shape else float(relative_error(a, b, scale))


class _Recorder:
    """Forward hooks on every submodule; stores (pass 0) or compares (pass g) outputs per call."""

    def __init__(self, model: nn.Module, group):
        self.group = group
        self.names = {m: (n or "(model)") for n, m in model.named_modules()}
        self.handles = [m.register_forward_hook(self._hook, with_kwargs=True) for m in self.names]
        self.reference: dict = {}    # (module, call) -> (its input or None, its output, output kind)
        self.order: list = []
        self.errors: dict = {}       # (module, call) -> [e_g for the elements run so far]
        self.element: int | None = None
        self.calls: dict = {}

    def _hook(self, module, args, kwargs, output):
        if not isinstance(output, torch.Tensor) or not output.is_floating_point():
            return
        count = self.calls.get(module, 0)
        self.calls[module] = count + 1
        key = (module, count)
        if self.element is None:
            single = len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor)
            self.reference[key] = (args[0].detach().clone() if single else None, output.detach().clone(),
                                   output_kind(self.group, output))
            self.order.append(key)
            self.errors[key] = []
        elif key in self.reference and self.reference[key][2] != "other":
            _, ref, kind = self.reference[key]
            self.errors[key].append(_relative(output, act(self.group, ref, self.element, kind), ref))

    def start(self, element: int | None) -> None:
        self.element, self.calls = element, {}

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _local(module, inp, ref, kind, group) -> tuple | None:
    """Per-element error of ``module`` alone on the transformed copies of its own input ``inp``."""
    if inp is None or not inp.is_floating_point() or kind == "other":
        return None
    in_kind = output_kind(group, inp)
    if in_kind == "other":
        return None
    errors = []
    for g in range(group.order):
        try:
            y = module(act(group, inp, g, in_kind).clone())
        except (ValueError, RuntimeError):
            return None  # the module rejects the transformed input (a shape it does not take)
        errors.append(_relative(y, act(group, ref, g, kind), ref) if isinstance(y, torch.Tensor) else math.inf)
    return tuple(errors)


@torch.no_grad()
def layer_report(model: nn.Module, x: torch.Tensor, group=None, *, dtype: torch.dtype | None = torch.float64,
                 local: bool = True) -> EquivarianceReport:
    """Equivariance errors of every submodule of ``model`` for input ``x``, over every element of ``group``.

    Args:
        model: any ``nn.Module``; a copy is evaluated in eval mode (the original is left untouched).
        x: the input, ``(B, C, H, W)`` with ``H == W`` (rotations map the grid onto itself only then).
        group: ``"z2"``, ``"p4"``, ``"p4m"`` or a :class:`~equipath.groups.Group`. Defaults to ``model.group``.
        dtype: dtype of the copy and the input; None keeps the model's. Defaults to float64.
        local: also measure each leaf module alone on its transformed input. Defaults to True.

    Returns:
        An :class:`EquivarianceReport` whose rows are the submodule calls in the order they return
        (children before their parent, the whole model last). Inputs and outputs of every call are kept
        in memory while the report runs.
    """
    if group is None:
        if not hasattr(model, "group"):
            raise ValueError(f"layer_report: {type(model).__name__} has no `group` attribute; pass group=")
        group = model.group
    group = get_group(group)
    if x.dim() != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"layer_report: expected a square input batch (B, C, H, H), got {tuple(x.shape)}")
    model = copy.deepcopy(model).eval()
    if dtype is not None:
        model, x = model.to(dtype), x.to(dtype)
    x = x.to(model_device(model))
    tolerance = TOLERANCES.get(x.dtype, 1e-5)
    recorder = _Recorder(model, group)
    try:
        recorder.start(None)
        model(x)
        for g in range(group.order):
            recorder.start(g)
            model(group.transform(x, g).contiguous())
    finally:
        recorder.remove()
    rows = []
    for key in recorder.order:
        module, count = key
        inp, ref, kind = recorder.reference[key]
        name = recorder.names[module]
        missing = math.nan if kind == "other" else math.inf  # not measurable / call absent from a pass
        errors = recorder.errors[key] + [missing] * (group.order - len(recorder.errors[key]))
        leaf = not any(True for _ in module.children())
        rows.append(LayerError(
            name=name if count == 0 else f"{name}#{count}", module=type(module).__name__, leaf=leaf, kind=kind,
            shape=tuple(ref.shape), errors=tuple(errors),
            local=_local(module, inp, ref, kind, group) if local and leaf else None))
    # hooks fire when a module returns: children before their parent, the whole model last
    return EquivarianceReport(group=group.name, input_shape=tuple(x.shape), dtype=str(x.dtype).replace("torch.", ""),
                              tolerance=tolerance, layers=tuple(rows))


def equivariance_figure(report: EquivarianceReport, title: str = "", synthetic: bool = False) -> Figure:
    """Maximum cumulative error (bars) and local error (dots) of every leaf module and the whole model,
    in the order they return, on a log scale with the tolerance dashed: exactness is lost where the bars jump."""
    rows = [r for r in report.layers if r.leaf or r is report.model]
    floor = 1e-18  # an exact zero (or an unmeasurable error) is drawn at the bottom of the axis

    def clip(v):
        return floor if math.isnan(v) else (max(v, floor) if math.isfinite(v) else 1.0)
    fig = Figure(figsize=(7, 0.9 + 0.2 * len(rows)))
    ax = fig.subplots()
    y = list(range(len(rows)))[::-1]
    ax.barh(y, [clip(r.max_error) for r in rows], color=["tab:red" if r.max_error > report.tolerance else "tab:blue"
                                                          for r in rows], left=floor, label="max error in the model")
    local = [(yy, clip(r.max_local)) for yy, r in zip(y, rows) if r.max_local is not None]
    if local:
        ax.plot([v for _, v in local], [yy for yy, _ in local], "k.", label="max local error (layer alone)")
    ax.axvline(report.tolerance, color="k", ls="--", lw=0.8, label=f"tolerance {report.tolerance:g}")
    ax.set_xscale("log")
    ax.set_yticks(y, [f"{r.name} ({r.module})" for r in rows], fontsize=7)
    ax.set_xlabel(f"relative error over the {report.group} elements ({report.dtype})")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"{title + ': ' if title else ''}layer-by-layer equivariance"
                 f"{' - ' + SYNTHETIC_LABEL if synthetic else ''}", fontsize=9)
    return fig
