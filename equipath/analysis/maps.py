"""From a model's logits to probabilities on the input's pixel grid, the common ground of the analyses.

Every analysis compares predictions of one model for transformed copies of an input, so it needs them on
one grid and on one scale. :class:`ProbabilityMap` takes RGB images in [0, 1], runs the model (one from
:func:`equipath.models.load_model` applies its checkpoint's normalisation itself) and returns the
probability of ``class_index`` at every input pixel:

- segmentation logits ``(B, K, H, W)``: ``softmax`` over ``K`` (``sigmoid`` when ``K = 1``);
- a fully-convolutional classifier (``forward_dense``, ``output_stride`` s, ``receptive_field`` rf):
  entry ``[i, j]`` of the dense logit map is the patch ``x[..., i*s : i*s+rf, j*s : j*s+rf]``; its
  probability is painted on the ``s x s`` pixels at that patch's centre, and the ``(rf - s) / 2``-pixel
  border that no patch centre covers is NaN;
- any other classifier ``(B, K)``: one probability per image, painted on every pixel.

The maps of the first two kinds are exactly as equivariant as the model: painting commutes with
``rot90`` and flips whenever ``rf - s`` is even (the borders on both sides are equal).

Example:
    >>> import torch
    >>> from equipath.models import create_model
    >>> net = create_model("p4m_densenet", growth=8).eval()
    >>> maps = ProbabilityMap(net)(torch.rand(1, 3, 128, 128))
    >>> maps.shape, bool(maps[0, 40, 40].isfinite()), bool(maps[0, 0, 0].isnan())
    (torch.Size([1, 128, 128]), True, True)
"""

import torch
from torch import nn

__all__ = ["ProbabilityMap", "model_device"]


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter or buffer (the CPU for a module without any)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


class ProbabilityMap(nn.Module):
    """Probability of ``class_index`` at every pixel of the input, NaN where the model predicts nothing.

    Args:
        model: a registered model (or any module with the same output conventions), in eval mode, taking
            RGB in [0, 1] (a checkpoint's model from :func:`equipath.models.load_model` does).
        class_index: the class whose probability is mapped (ignored for one-logit models). Defaults to 1.

    Shapes: ``(B, 3, H, W)`` in [0, 1] -> ``(B, H, W)``, computed on the model's device and returned on the
    input's.

    Example:
        >>> import torch
        >>> from equipath.models import create_model
        >>> ProbabilityMap(create_model("densenet", growth=4).eval())(torch.rand(2, 3, 96, 96)).shape
        torch.Size([2, 96, 96])
    """

    def __init__(self, model: nn.Module, class_index: int = 1):
        super().__init__()
        self.model, self.class_index = model, class_index

    def _probability(self, logits: torch.Tensor) -> torch.Tensor:
        if logits.shape[1] == 1:
            return torch.sigmoid(logits[:, 0])
        if not 0 <= self.class_index < logits.shape[1]:
            raise ValueError(f"ProbabilityMap: class_index {self.class_index} is not one of the model's "
                             f"{logits.shape[1]} classes")
        return torch.softmax(logits, 1)[:, self.class_index]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"ProbabilityMap: expected RGB images (B, 3, H, W) in [0, 1], got {tuple(x.shape)}")
        return self._map(x.to(model_device(self.model))).to(x.device)

    def _map(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        if hasattr(self.model, "forward_dense"):
            p = self._probability(self.model.forward_dense(x))  # (B, h, w)
            s, rf = self.model.output_stride, self.model.receptive_field
            h, w = p.shape[-2:]
            top = (rf - s) // 2
            out = p.new_full((B, H, W), float("nan"))
            out[:, top:top + h * s, top:top + w * s] = p.repeat_interleave(s, 1).repeat_interleave(s, 2)
            return out
        logits = self.model(x)
        if logits.dim() == 4:
            if logits.shape[-2:] != (H, W):
                raise ValueError(f"ProbabilityMap: the model maps {H}x{W} inputs to {tuple(logits.shape)}, "
                                 f"expected logits of spatial size {H}x{W}")
            return self._probability(logits)
        if logits.dim() != 2:
            raise ValueError(f"ProbabilityMap: expected logits (B, K) or (B, K, H, W), got {tuple(logits.shape)}")
        return self._probability(logits)[:, None, None].expand(B, H, W).clone()
