"""A checkpoint back to its model, normalisation included: ``load_model(path)`` rebuilds the registered
model of an equipath checkpoint and puts its input normalisation in front of it (:class:`Normalized`, the
way timm's ``pretrained_cfg`` carries mean and std with the weights), so every consumer feeds RGB in [0, 1]
and none normalises by hand. :mod:`equipath.checkpoint` is the file format; it builds no model, so reading
or writing a checkpoint does not import the architectures.

Example:
    >>> import torch
    >>> from equipath.models import create_model
    >>> net = create_model("densenet", growth=4).eval()
    >>> model = Normalized(net, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    >>> x = torch.rand(1, 3, 96, 96)
    >>> bool(torch.equal(model(x), net((x - 0.5) / 0.25))), model.input_size == net.input_size
    (True, True)
"""

import torch
from torch import nn

from equipath.checkpoint import check_weights, load_checkpoint
from equipath.models.registry import create_model

__all__ = ["load_model", "Normalized"]

# methods of the wrapped model that take the input image: they see it normalised too
_INPUT_METHODS = ("forward_dense",)


class Normalized(nn.Module):
    """``model`` with the per-channel input normalisation ``(x - mean) / std`` in front.

    Everything else is the wrapped model's: attributes (``group``, ``task``, ``input_size``,
    ``receptive_field``, ``output_stride``, ``check_input_size``, ``dense_output_size``, ...) are read
    through, and ``forward_dense`` (when the model has one) normalises its input as ``forward`` does.
    ``input_mean`` and ``input_std`` are buffers (they follow ``.to()``), not saved in the state dict: the
    checkpoint keeps them as its ``normalization`` entry.

    Args:
        model: the module to wrap. mean, std: one number per input channel, for input in [0, 1].

    Shapes: as ``model``'s, on unnormalised input.
    """

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        mean, std = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
        if mean.shape != std.shape or mean.dim() != 1 or not bool((std > 0).all()):
            raise ValueError(f"Normalized: expected one mean and one positive std per channel, got {mean.tolist()}, "
                             f"{std.tolist()}")
        # named so that they shadow nothing of the wrapped model (whose attributes are read through)
        self.register_buffer("input_mean", mean.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("input_std", std.view(1, -1, 1, 1), persistent=False)
        self.model = model

    @property
    def normalization(self) -> dict:
        """``{"mean": [...], "std": [...]}`` as in the checkpoint."""
        return {"mean": self.input_mean.flatten().tolist(), "std": self.input_std.flatten().tolist()}

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        channels = self.input_mean.shape[1]
        if x.dim() != 4 or x.shape[1] != channels:
            raise ValueError(f"Normalized: expected images (B, {channels}, H, W), got {tuple(x.shape)}")
        return (x - self.input_mean.to(x.dtype)) / self.input_std.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(x))

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)  # parameters, buffers, submodules of the wrapper itself
        except AttributeError:
            pass
        inner = super().__getattr__("model")
        value = getattr(inner, name)
        if name in _INPUT_METHODS:
            return lambda x, *args, **kwargs: value(self.normalize(x), *args, **kwargs)
        return value

    def extra_repr(self) -> str:
        return f"mean={self.normalization['mean']}, std={self.normalization['std']}"


def load_model(path, map_location="cpu", normalized: bool = True) -> tuple[nn.Module, dict]:
    """Rebuild the model of a checkpoint in eval mode; returns ``(model, checkpoint)``.

    With ``normalized`` (the default) the model is a :class:`Normalized` with the checkpoint's mean and std
    in front: feed it float RGB in [0, 1]. ``normalized=False`` gives the bare architecture (for code that
    trains or saves it)."""
    state = load_checkpoint(path, map_location)
    name, kwargs = state["model"]["name"], state["model"]["kwargs"]
    try:
        model = create_model(name, **kwargs)
    except ValueError as exc:
        raise ValueError(f"checkpoint {path}: {exc}") from exc
    check_weights(model, state["state_dict"], f"checkpoint {path} ({name} {kwargs})")
    model.load_state_dict(state["state_dict"])
    if normalized and state.get("normalization"):
        model = Normalized(model, state["normalization"]["mean"], state["normalization"]["std"])
    return model.to(map_location).eval(), state
