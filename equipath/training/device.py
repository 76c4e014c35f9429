"""Every device-only decision in one place: autocast dtype, channels-last, pinned memory, ``non_blocking``
copies and ``cudnn.benchmark``.

:func:`device_plan` decides them once for a device and returns a :class:`DevicePlan`; the trainer, the
slide runner and the benchmarks all apply that plan, so there is one GPU code path. ``as_cuda=True`` takes
the CUDA decisions on the CPU wherever the CPU can carry them out (bf16 autocast, channels-last,
``non_blocking``; not pinned memory or cuDNN), which is how the CPU tests run the GPU path.

On the CPU, page faults of fresh activations are handled once for the process, by ``import equipath``
(huge pages for large blocks; see ``equipath/__init__.py`` and docs/benchmarks.md), not per plan.

Example:
    >>> import torch
    >>> from equipath.models import create_model
    >>> plan = device_plan("cpu", as_cuda=True)
    >>> plan.amp_dtype, plan.channels_last, plan.pin_memory
    (torch.bfloat16, True, False)
    >>> model = plan.apply(create_model("p4m_densenet", growth=8))
    >>> with plan.autocast():
    ...     logits = model(plan.inputs(torch.rand(2, 3, 96, 96)))
    >>> logits.dtype, logits.shape
    (torch.bfloat16, torch.Size([2, 1]))
"""

import logging
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from equipath.nn.conv import set_channels_last
from equipath.training.distributed import resolve_device

__all__ = ["DevicePlan", "device_plan"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DevicePlan:
    """The device-only decisions for one run.

    Attributes:
        device: where the model and the batches live.
        amp_dtype: the autocast dtype, or None for float32 throughout.
        channels_last: convolutions in channels-last memory (:func:`~equipath.nn.conv.set_channels_last`).
        pin_memory: data loaders pin their batches (CUDA only).
        non_blocking: host-to-device copies do not wait.
        cudnn_benchmark: let cuDNN pick the fastest algorithm per input shape (CUDA only).
    """

    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool
    pin_memory: bool
    non_blocking: bool
    cudnn_benchmark: bool

    def apply(self, model: nn.Module) -> nn.Module:
        """Move ``model`` to the device and lay it out as decided, in place; returns ``model``."""
        model.to(self.device)
        if self.channels_last:
            set_channels_last(model)
        if self.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True
        return model

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """A batch on the device; planar images ``(B, C, H, W)`` channels-last when decided."""
        x = x.to(self.device, non_blocking=self.non_blocking)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def autocast(self):
        """The autocast context of the plan (a no-op without AMP). Batch-norm statistics and the
        parameters stay float32 under it."""
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)


def device_plan(device="auto", amp: bool | None = None, *, as_cuda: bool | None = None) -> DevicePlan:
    """Decide how to run on ``device``.

    Args:
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda[:N]"`` or a ``torch.device``.
        amp: bf16 autocast; None takes the device's default (on with the CUDA decisions). On a GPU without
            bf16 it is turned off (float16 would need loss scaling). Defaults to None.
        as_cuda: take the CUDA decisions (AMP, channels-last, ``non_blocking``); None: exactly when the
            device is CUDA. True on the CPU runs the GPU code path there, for tests. Defaults to None.

    Raises:
        ValueError: for an unknown or unavailable device.
    """
    device = resolve_device(device) if isinstance(device, str) else torch.device(device)
    cuda = device.type == "cuda"
    decide = cuda if as_cuda is None else as_cuda
    use_amp = decide if amp is None else amp
    if use_amp and cuda and not torch.cuda.is_bf16_supported():
        log.warning("%s has no bf16: running in float32", torch.cuda.get_device_name(device))
        use_amp = False
    return DevicePlan(device=device, amp_dtype=torch.bfloat16 if use_amp else None, channels_last=decide,
                      pin_memory=cuda, non_blocking=decide, cudnn_benchmark=cuda)

