"""Data-parallel training on PyTorch's own engine: DDP launched with ``torchrun`` (gloo on the CPU, NCCL on
GPUs). One process per device; a single process without ``torchrun`` is the world of size 1.

Launch, e.g. two CPU processes on one machine:

    torchrun --nproc_per_node 2 -m equipath train --config tiny_p4m_densenet

and across machines the usual ``--nnodes N --node_rank i --rdzv_endpoint host:port``.

Example:
    >>> world = setup_distributed("cpu")
    >>> world.rank, world.size, world.is_main
    (0, 1, True)
"""

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["World", "setup_distributed", "teardown_distributed", "all_gather_objects", "all_reduce_sum",
           "resolve_device"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    """This process's place in the job: ``rank`` of ``size`` processes, running on ``device``."""

    rank: int
    size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, logs and reports."""
        return self.rank == 0


def resolve_device(device: str) -> torch.device:
    """``"auto"`` is CUDA when available, else the CPU; ``ValueError`` for a device that is not there."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}: expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


def setup_distributed(device: str = "auto") -> World:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1), else a world of one.

    Each rank uses ``cuda:LOCAL_RANK`` when the device resolves to CUDA (backend NCCL), the CPU otherwise
    (backend gloo).
    """
    dev = resolve_device(device)
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World(0, 1, dev)
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    world = World(dist.get_rank(), dist.get_world_size(), dev)
    log.info("rank %d of %d on %s (%s)", world.rank, world.size, dev, dist.get_backend())
    return world


def teardown_distributed() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: torch.Tensor, world: World) -> torch.Tensor:
    """Sum a tensor over all ranks (identity in a world of one)."""
    if world.size > 1:
        values = values.clone()
        dist.all_reduce(values)
    return values


def all_gather_objects(obj, world: World) -> list:
    """Every rank's ``obj``, in rank order (``[obj]`` in a world of one)."""
    if world.size == 1:
        return [obj]
    out = [None] * world.size
    dist.all_gather_object(out, obj)
    return out
