"""The model registry (the timm pattern): builders register by name, ``create_model`` builds by name.

Example:
    >>> from equipath.models import create_model, list_models
    >>> "p4m_densenet" in list_models()
    True
    >>> model = create_model("p4m_densenet", growth=8, stem=None)   # None keeps the model's default
    >>> model.group.name, model.input_size
    ('p4m', (96, 96))
"""

import inspect
import types
import typing
from collections.abc import Callable

from torch import nn

__all__ = ["register_model", "create_model", "list_models"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a builder under its function name; raises ``ValueError`` if the name is taken."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"register_model: a model named {name!r} is already registered")
    _MODELS[name] = fn
    return fn


def list_models() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_MODELS)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build the registered model ``name``. Keyword arguments that are ``None`` are dropped, so unset
    command-line or config values never override a model's defaults.

    Raises:
        ValueError: for an unknown name, or arguments the builder does not take (the message lists the
            ones it does take).
    """
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}: expected one of {', '.join(list_models())}")
    fn = _MODELS[name]
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    signature = inspect.signature(fn)
    try:
        signature.bind(**kwargs)
    except TypeError as exc:
        accepted = ", ".join(signature.parameters) or "none"
        raise ValueError(f"model {name!r}: {exc}; accepted arguments: {accepted}") from None
    hints = typing.get_type_hints(fn)
    for key, value in kwargs.items():
        if key in hints and not _fits(hints[key], value):
            raise ValueError(f"model {name!r}: {key} must be {getattr(hints[key], '__name__', hints[key])}, "
                             f"got {value!r}")
    try:
        return fn(**kwargs)
    except (TypeError, OverflowError, RuntimeError, MemoryError) as exc:  # e.g. a width no layer can take
        raise ValueError(f"model {name!r} cannot be built with {kwargs}: {exc.__class__.__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc


def _fits(tp, value) -> bool:
    """Whether ``value`` fits the annotation ``tp`` (ints fit floats, bools fit only bools)."""
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        return any(_fits(arg, value) for arg in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp in (bool, str):
        return isinstance(value, tp)
    return True
