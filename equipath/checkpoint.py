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

import warnings
from pathlib import Path

import torch

from equipath import __version__
from equipath.atomic import atomic_write
from equipath.outdir import check_writable

__all__ = ["save_checkpoint", "load_checkpoint", "load_model", "check_writable"]

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
    return state


def load_model(path, map_location="cpu"):
    """:func:`equipath.models.load_model` (the model of a checkpoint, in eval mode, and the checkpoint)."""
    from equipath.models.pretrained import load_model as load  # models sit above the file format

    return load(path, map_location)
