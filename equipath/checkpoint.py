"""Checkpoints: written atomically, loaded without executing code (``torch.load(weights_only=True)``).

A checkpoint is a dict of tensors and plain Python values:

    {"format": 1, "equipath_version": "0.1.0",
     "model": {"name": "p4m_densenet", "kwargs": {...}},   # create_model(name, **kwargs) rebuilds it
     "group": "p4m",                                       # the model's symmetry group
     "state_dict": {...},                                  # the model's weights
     "normalization": {"mean": [r, g, b], "std": [r, g, b]},  # applied to float RGB in [0, 1]
     "task": "classification" | "segmentation",
     ...}                                                  # anything else the trainer keeps (optimizer, epoch)

``load_model`` needs nothing but the file: evaluation and slide inference call it. It lives in
:mod:`equipath.models.pretrained` (it builds a registered model); this module is the file format only, so
reading or writing a checkpoint (the cell VAE does) does not import the architectures.
"""

import math
import warnings
from pathlib import Path

import torch

from equipath import __version__
from equipath.atomic import atomic_write
from equipath.outdir import check_writable

__all__ = ["save_checkpoint", "load_checkpoint", "load_model", "check_writable", "check_weights"]

FORMAT = 1


def save_checkpoint(path, model: torch.nn.Module, *, name: str, kwargs: dict, normalization: dict,
                    task: str, **extra) -> Path:
    """Write ``model`` and its metadata to ``path`` atomically (a temporary file, then a rename).

    The model's group (``model.group.name``, when it has one) is recorded as ``"group"``."""
    group = getattr(model, "group", None)
    state = {
        "format": FORMAT,
        "equipath_version": __version__,
        "model": {"name": name, "kwargs": dict(kwargs)},
        "group": getattr(group, "name", None),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "normalization": {k: [float(v) for v in vals] for k, vals in normalization.items()},
        "task": task,
        **extra,
    }
    return atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint without executing code. Raises ``FileNotFoundError`` / ``ValueError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before failing on a foreign file
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise ValueError(f"checkpoint {path} could not be read as an equipath checkpoint ({exc.__class__.__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "model" not in state:
        raise ValueError(f"checkpoint {path} is not an equipath checkpoint (format {FORMAT})")
    problem = _metadata_problem(state)
    if problem:
        raise ValueError(f"checkpoint {path} has malformed metadata: {problem}")
    return state


def _plain_problem(name: str, value, depth: int = 0) -> str | None:
    if depth > 4:
        return f"{name} is nested too deeply"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{name} is {value}"
    if isinstance(value, (list, tuple)):
        return next((p for k, v in enumerate(value) if (p := _plain_problem(f"{name}[{k}]", v, depth + 1))), None)
    if not (value is None or isinstance(value, (bool, int, float, str))):
        return f"{name} is a {type(value).__name__}, not a number, string, boolean, null or list"
    return None


def _metadata_problem(state: dict) -> str | None:
    """What is wrong with a checkpoint's metadata (see the module docstring), or None."""
    model = state["model"]
    if not isinstance(model, dict) or not isinstance(model.get("name"), str) or not isinstance(model.get("kwargs"), dict):
        return "'model' must be {'name': str, 'kwargs': dict}"
    for key, value in model["kwargs"].items():
        if not isinstance(key, str):
            return f"model kwargs key {key!r} is not a string"
        if problem := _plain_problem(f"model kwargs {key}", value):
            return problem
    weights = state.get("state_dict")
    if not isinstance(weights, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                for k, v in weights.items()):
        return "'state_dict' must map names to tensors"
    norm = state.get("normalization")
    if norm is not None:
        if not isinstance(norm, dict) or set(norm) != {"mean", "std"}:
            return "'normalization' must be {'mean': [r, g, b], 'std': [r, g, b]}"
        for key in ("mean", "std"):
            values = norm[key]
            if not isinstance(values, (list, tuple)) or len(values) != 3 or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
                return f"normalization {key} must be 3 finite numbers, got {values!r}"
        if min(norm["std"]) <= 0:
            return f"normalization std must be positive, got {norm['std']!r}"
    if state.get("task") not in (None, "classification", "segmentation", "cell-representation"):
        return f"task must be 'classification', 'segmentation' or 'cell-representation', got {state.get('task')!r}"
    return None


def check_weights(model: torch.nn.Module, state_dict: dict, source) -> None:
    """``ValueError`` in one line naming the first tensor of ``state_dict`` that does not fit ``model``
    (missing, unexpected, or another shape: both shapes), so ``model.load_state_dict`` cannot fail."""
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state_dict:
            raise ValueError(f"{source}: the weights do not fit the model: {key} {tuple(tensor.shape)} is missing")
        if tuple(state_dict[key].shape) != tuple(tensor.shape):
            raise ValueError(f"{source}: the weights do not fit the model: {key} has shape "
                             f"{tuple(state_dict[key].shape)} in the checkpoint, {tuple(tensor.shape)} in the model")
    extra = [k for k in state_dict if k not in expected]
    if extra:
        raise ValueError(f"{source}: the weights do not fit the model: {extra[0]} "
                         f"{tuple(state_dict[extra[0]].shape)} is not in the model ({len(extra)} such tensor(s))")


def load_model(path, map_location="cpu", normalized: bool = True):
    """:func:`equipath.models.load_model`: the model of a checkpoint in eval mode, its normalisation in front
    (feed it RGB in [0, 1]; ``normalized=False`` for the bare architecture), and the checkpoint."""
    from equipath.models.pretrained import load_model as load  # models sit above the file format

    return load(path, map_location, normalized)
