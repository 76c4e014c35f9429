"""A checkpoint back to its model: ``load_model(path)`` rebuilds the registered model of an equipath
checkpoint (:mod:`equipath.checkpoint` is the file format; it builds no model, so reading or writing a
checkpoint does not import the architectures).
"""

import torch

from equipath.checkpoint import check_weights, load_checkpoint
from equipath.models.registry import create_model

__all__ = ["load_model"]


def load_model(path, map_location="cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild the model of a checkpoint in eval mode; returns ``(model, checkpoint)``."""
    state = load_checkpoint(path, map_location)
    name, kwargs = state["model"]["name"], state["model"]["kwargs"]
    try:
        model = create_model(name, **kwargs)
    except ValueError as exc:
        raise ValueError(f"checkpoint {path}: {exc}") from exc
    check_weights(model, state["state_dict"], f"checkpoint {path} ({name} {kwargs})")
    model.load_state_dict(state["state_dict"])
    return model.to(map_location).eval(), state
