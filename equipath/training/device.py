"""Every device-only decision in one place: autocast dtype, channels-last, pinned memory, ``non_blocking``
copies, ``cudnn.benchmark``, and on the CPU whether freed memory is kept for reuse.

:func:`device_plan` decides them once for a device and returns a :class:`DevicePlan`; the trainer, the
slide runner and the benchmarks all apply that plan, so there is one GPU code path. ``as_cuda=True`` takes
the CUDA decisions on the CPU wherever the CPU can carry them out (bf16 autocast, channels-last,
``non_blocking``; not pinned memory or cuDNN), which is how the CPU tests run the GPU path.

On the CPU, large activations are each a fresh ``mmap`` of glibc's allocator, so every layer pays a page
fault per 4 KiB and the kernel zeroes the pages: on a 12 x 12-cell ``p4m_densenet`` slide tile that was
about 40 % of the CPU time (6.3 against 3.7 CPU-s for three forward passes; docs/benchmarks.md).
``keep_freed_memory=True`` makes glibc serve large blocks from its heap and keep freed memory for reuse
(``mallopt``), for the rest of the process. It is off by default: over many differently shaped inputs
(the tiles of a slide) the heap fragments, and a slide run grew to 10 GB before it was killed; with
inputs of one shape (training batches) the same blocks are reused.

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

import ctypes
import ctypes.util
import logging
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from equipath.nn.conv import set_channels_last
from equipath.training.distributed import resolve_device

__all__ = ["DevicePlan", "device_plan", "retain_freed_memory"]

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
        retain_freed_memory: the CPU allocator keeps freed memory for reuse (glibc; CPU only; opt-in).
    """

    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool
    pin_memory: bool
    non_blocking: bool
    cudnn_benchmark: bool
    retain_freed_memory: bool = False

    def apply(self, model: nn.Module) -> nn.Module:
        """Move ``model`` to the device and lay it out as decided, in place; returns ``model``."""
        model.to(self.device)
        if self.channels_last:
            set_channels_last(model)
        if self.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True
        if self.retain_freed_memory:
            retain_freed_memory()
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


def device_plan(device="auto", amp: bool | None = None, *, as_cuda: bool | None = None,
                keep_freed_memory: bool = False) -> DevicePlan:
    """Decide how to run on ``device``.

    Args:
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda[:N]"`` or a ``torch.device``.
        amp: bf16 autocast; None takes the device's default (on with the CUDA decisions). On a GPU without
            bf16 it is turned off (float16 would need loss scaling). Defaults to None.
        as_cuda: take the CUDA decisions (AMP, channels-last, ``non_blocking``); None: exactly when the
            device is CUDA. True on the CPU runs the GPU code path there, for tests. Defaults to None.
        keep_freed_memory: on the CPU, keep freed memory for reuse (see the module docstring). Defaults
            to False.

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
                      pin_memory=cuda, non_blocking=decide, cudnn_benchmark=cuda,
                      retain_freed_memory=keep_freed_memory and not cuda)


_RETAINED = []


def retain_freed_memory() -> bool:
    """Make glibc's allocator serve large blocks from its heap and keep freed memory (``mallopt``
    ``M_MMAP_MAX = 0``, ``M_TRIM_THRESHOLD = 1 GiB``), once per process; False where there is no glibc."""
    if _RETAINED:
        return _RETAINED[0]
    ok = False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = bool(libc.mallopt(-4, 0)) and bool(libc.mallopt(-1, 1 << 30))  # M_MMAP_MAX, M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass
    log.debug("CPU allocator keeps freed memory: %s", ok)
    _RETAINED.append(ok)
    return ok
