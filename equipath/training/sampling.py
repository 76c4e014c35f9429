"""Seeded, resumable batch sampling and per-epoch random state.

Everything random in epoch ``e`` (which patches form the batches, augmentation, dropout, worker seeds) is
drawn from generators seeded by ``(seed, e)`` and nothing else, so an epoch is the same whether the run
went straight through or was resumed from the checkpoint written after epoch ``e - 1``.

Example:
    >>> batches = EpochBatches(n=10, batch_size=4, batches_per_epoch=3, seed=0, epoch=0)
    >>> [len(b) for b in batches], len(batches)
    ([4, 4, 4], 3)
    >>> len(EpochBatches(n=10, batch_size=4, batches_per_epoch=None, seed=0, epoch=0))  # one pass, full batches
    2
    >>> list(batches) == list(EpochBatches(10, 4, 3, seed=0, epoch=0))
    True
"""

import random

import numpy as np
import torch

__all__ = ["EpochBatches", "epoch_seed", "seed_everything", "seed_worker", "fixed_sample"]


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A 63-bit seed derived from the run seed, the epoch and a stream number (e.g. the rank)."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` of the data loaders: seed NumPy and ``random`` in a worker from its torch seed (which
    the loader derives from its seeded generator), so augmentation in workers is reproducible."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class EpochBatches:
    """The batches of one epoch for one rank: ``batches_per_epoch`` batches of ``batch_size`` indices
    drawn without replacement from a seeded random order of ``range(n)`` (a new order each time the data
    run out), or one pass over the data when ``batches_per_epoch`` is None (``n // batch_size`` full
    batches: a short last batch is dropped, as it would change the batch-norm statistics and would leave
    ranks with unequal steps). Under data parallelism every rank draws the same global batches and keeps
    its contiguous share.

    Args:
        n: data set size. batch_size: global batch size (divisible by ``world_size``).
        batches_per_epoch: batches per epoch, or None for one pass.
        seed, epoch: the draw is a function of these only.
        rank, world_size: this process's share. Default to 0 and 1.
    """

    def __init__(self, n: int, batch_size: int, batches_per_epoch: int | None, seed: int, epoch: int,
                 rank: int = 0, world_size: int = 1):
        if n < 1:
            raise ValueError("EpochBatches: the data set is empty")
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} must be divisible by the number of processes {world_size}")
        if batches_per_epoch is None and n < batch_size:
            raise ValueError(f"{n} training items make no full batch of {batch_size}")
        self.n, self.batch_size, self.batches_per_epoch = n, batch_size, batches_per_epoch
        self.seed, self.epoch, self.rank, self.world_size = seed, epoch, rank, world_size

    def __len__(self) -> int:
        return self.batches_per_epoch if self.batches_per_epoch is not None else self.n // self.batch_size

    def __iter__(self):
        rng = np.random.default_rng(epoch_seed(self.seed, self.epoch))
        total = len(self) * self.batch_size
        order = np.concatenate([rng.permutation(self.n) for _ in range(-(-total // self.n))])[:total]
        share = self.batch_size // self.world_size
        for start in range(0, total, self.batch_size):
            batch = order[start:start + self.batch_size]
            yield batch[self.rank * share:(self.rank + 1) * share].tolist()


def fixed_sample(n: int, size: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a fixed random sample of ``size`` items out of ``n`` (all of them when ``size`` is
    None or at least ``n``), e.g. seed 000's validation sample of 40,000 patches."""
    if size is None or size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, 1]).choice(n, size, replace=False))
