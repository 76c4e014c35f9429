"""A checkpoint back to its model: ``load_model(path)`` rebuilds the registered model of an equipath
checkpoint (:mod:`equipath.checkpoint` is the file format; it builds no model, so reading or writing a
checkpoint does not import the architectures).
"""

import torch

from equipath.checkpoint import load_checkpoint
from equipath.models.registry import create_model

__all__ = ["load_model"]


def load_model(path, map_location="cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild the model of a checkpoint in eval mode; returns ``(model, checkpoint)``."""
    state = load_checkpoint(path, map_location)
    model = create_model(state["model"]["name"], **state["model"]["kwargs"])
    model.load_state_dict(state["state_dict"])
    return model.to(map_location).eval(), state
