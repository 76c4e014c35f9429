"""The training loop (seed 000 section 3.1, seed 001 section 3.2): Adam, the learning rate halved after
``lr_patience`` epochs without a lower validation loss, epochs of a fixed number of random batches,
validation on a fixed sample, and the checkpoint with the lowest validation loss kept.

Outputs in ``config.out_dir`` (rank 0 writes, every file atomically):

    config.yaml    the resolved configuration of the run (written with last.pt: a failed first epoch leaves none)
    last.pt        model + optimizer + scheduler + history after the latest epoch (the resume point)
    best.pt        the model of the epoch with the lowest validation loss
    metrics.csv    one row per epoch: lr, train_loss, val_loss, val_<metric>, seconds, patches_per_s
    tensorboard/   the same scalars, when the ``tensorboard`` package is installed

Resume: running the same config again on an ``out_dir`` holding ``last.pt`` continues after its epoch.
All randomness of an epoch is seeded by ``(seed, epoch)`` (see :mod:`equipath.training.sampling`), so on
the CPU a resumed run ends with exactly the weights of an uninterrupted one. On a GPU the loop uses bf16
autocast and channels-last (``config.amp``); under ``torchrun`` it runs DDP (gloo on the CPU, NCCL on GPUs).

Example:
    >>> from equipath.training import TrainConfig, train
    >>> config = TrainConfig.from_dict({"model": "p4m_densenet", "epochs": 2, "out_dir": "runs/example",
    ...                                 "model_kwargs": {"growth": 4}})
    >>> result = train(config)  # doctest: +SKIP
    >>> result.best  # doctest: +SKIP
    PosixPath('runs/example/best.pt')
"""

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from equipath.atomic import atomic_write, write_csv
from equipath.checkpoint import check_weights, check_writable, load_checkpoint, save_checkpoint
from equipath.evaluation import ClassificationMetric, SegmentationMetric
from equipath.evaluation.base import concat_records
from equipath.models import Normalized, create_model
from equipath.outdir import OutputLock, remove_stale_temporaries
from equipath.training.config import TrainConfig
from equipath.training.datasets import build_datasets, estimate_normalization, stain_normalizer
from equipath.training.device import device_plan
from equipath.training.distributed import World, all_gather_objects, all_reduce_sum, setup_distributed, \
    teardown_distributed
from equipath.training.losses import build_loss
from equipath.training.sampling import EpochBatches, epoch_seed, fixed_sample, seed_everything, seed_worker

__all__ = ["train", "TrainResult", "plateau_scheduler"]

log = logging.getLogger(__name__)

# Keys that may change when a run is resumed: they do not change what is computed.
_RESUMABLE_CHANGES = {"epochs", "progress", "device", "resume", "data.num_workers", "eval_batch_size"}


@dataclass(frozen=True)
class TrainResult:
    """Where a run wrote its outputs, and its per-epoch history (one dict per epoch)."""

    out_dir: Path
    best: Path
    last: Path
    history: list


def plateau_scheduler(optimizer, patience: int, factor: float):
    """The seed 000 rule: multiply the learning rate by ``factor`` at the end of the ``patience``-th
    consecutive epoch whose validation loss is not strictly lower than the best so far (Keras semantics,
    which the papers' code used); the count restarts after each reduction. Step it with the validation loss."""
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=factor, patience=patience - 1,
                                                      threshold=0.0, cooldown=0)


def _flatten(config: dict) -> dict:
    """``{"lr": .., "data": {"root": ..}}`` -> ``{"lr": .., "data.root": ..}``."""
    flat = {k: v for k, v in config.items() if k != "data"}
    flat.update({f"data.{k}": v for k, v in config.get("data", {}).items()})
    return flat


def _resume_state(config: TrainConfig, out_dir: Path) -> dict | None:
    last = out_dir / "last.pt"
    if not last.exists():
        return None
    if not config.resume:
        raise ValueError(f"output folder {out_dir} already holds a run ({last}); use another out_dir, or resume")
    state = load_checkpoint(last)
    before, now = _flatten(state["config"]), _flatten(config.to_dict())
    changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k) and k not in _RESUMABLE_CHANGES)
    if changed:
        raise ValueError(f"cannot resume {last}: the config differs in {', '.join(changed)}; "
                         "use another out_dir for a different run")
    return state


class _Run:
    def __init__(self, config: TrainConfig, world: World):
        self.config, self.world = config, world
        self.out_dir = Path(config.out_dir)
        check_writable(self.out_dir)
        self.resume = _resume_state(config, self.out_dir)
        seed_everything(config.seed)
        self.model = create_model(config.model, **config.model_kwargs)
        self.task = self.model.task
        self.stain = stain_normalizer(config.data)  # saved in the checkpoint: inference applies the same
        self.train_set, self.val_set = build_datasets(config, self.model, stain=self.stain)
        self.val_indices = fixed_sample(len(self.val_set), config.data.val_samples, config.seed)
        loss = config.loss or ("bce" if self.task == "classification" else
                               "heatmap_mse" if config.data.cell_target == "gaussian" else "ce")
        self.loss_fn = build_loss(loss, config.dice_weight, config.ce_weight)
        initial = load_checkpoint(config.init_from) if self.resume is None and config.init_from else None
        if self.resume is not None:
            self.normalization = self.resume["normalization"]
        elif initial is not None and initial.get("normalization") and config.normalization_mean is None \
                and config.normalization_std is None:  # fine-tuning: the inputs the weights learnt on
            self.normalization = initial["normalization"]
        elif config.normalization_mean is not None and config.normalization_std is not None:
            self.normalization = {"mean": list(config.normalization_mean), "std": list(config.normalization_std)}
        else:
            mean, std = estimate_normalization(self.train_set, config.seed)
            self.normalization = {"mean": config.normalization_mean or mean, "std": config.normalization_std or std}
        device = world.device
        self.plan = device_plan(device, amp=None if config.amp else False)
        self.history, self.start_epoch = [], 0
        self.best_loss, self.best_epoch = math.inf, 0
        if self.resume is not None:
            self.model.load_state_dict(self.resume["state_dict"])
            self.history, self.start_epoch = list(self.resume["history"]), self.resume["epoch"]
            self.best_loss, self.best_epoch = self.resume["best_val_loss"], self.resume["best_epoch"]
        elif initial is not None:
            check_weights(self.model, initial["state_dict"], config.init_from)
            self.model.load_state_dict(initial["state_dict"])
            log.info("fine-tuning: weights and normalisation from %s", config.init_from)
        self.plan.apply(self.model)
        # the model as load_model gives it back: the normalisation in front (self.model is what is saved)
        self.normalized = Normalized(self.model, self.normalization["mean"], self.normalization["std"]).to(device)
        self.net = DistributedDataParallel(self.normalized, device_ids=[device.index] if device.type == "cuda" else None) \
            if world.size > 1 else self.normalized
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = plateau_scheduler(self.optimizer, config.lr_patience, config.lr_factor)
        if self.resume is not None:
            self.optimizer.load_state_dict(self.resume["optimizer"])
            self.scheduler.load_state_dict(self.resume["scheduler"])
            log.info("resuming %s after epoch %d", self.out_dir / "last.pt", self.start_epoch)

    # ---------------------------------------------------------------------------------------------- steps
    def _inputs(self, x):
        return self.plan.inputs(x)

    def _autocast(self):
        return self.plan.autocast()

    def _loader(self, dataset, batches, epoch: int) -> DataLoader:
        generator = torch.Generator().manual_seed(epoch_seed(self.config.seed, epoch, 1 + self.world.rank))
        return DataLoader(dataset, batch_sampler=batches, num_workers=self.config.data.num_workers,
                          worker_init_fn=seed_worker, generator=generator,
                          pin_memory=self.plan.pin_memory)

    def _train_epoch(self, epoch: int) -> tuple[float, int]:
        config, world = self.config, self.world
        seed_everything(epoch_seed(config.seed, epoch, 1000 + world.rank))
        batches = EpochBatches(len(self.train_set), config.batch_size, config.batches_per_epoch, config.seed, epoch,
                               world.rank, world.size)
        self.net.train()
        total = torch.zeros(2, dtype=torch.float64, device=world.device)  # (sum of batch losses, batches)
        seen = 0
        bar = tqdm(self._loader(self.train_set, batches, epoch), total=len(batches), leave=False,
                   desc=f"epoch {epoch + 1}/{config.epochs}", disable=not (config.progress and world.is_main))
        for x, y in bar:
            with self._autocast():
                logits = self.net(self._inputs(x))
            loss = self.loss_fn(logits.float(), y.to(world.device, non_blocking=self.plan.non_blocking))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += torch.stack([loss.detach().double(), torch.ones((), dtype=torch.float64, device=world.device)])
            seen += len(x)
            bar.set_postfix(loss=f"{loss.item():.4f}")
        total = all_reduce_sum(total, world)
        return float(total[0] / total[1]), seen * world.size

    @torch.no_grad()
    def _validate(self, epoch: int) -> dict:
        config, world = self.config, self.world
        indices = self.val_indices[world.rank::world.size].tolist()
        batches = [indices[i:i + config.eval_batch_size] for i in range(0, len(indices), config.eval_batch_size)]
        metric = ClassificationMetric() if self.task == "classification" else \
            SegmentationMetric(self.model.num_classes, distances=False)
        self.net.eval()
        total = torch.zeros(2, dtype=torch.float64, device=world.device)  # (sum of item losses, items)
        bar = tqdm(self._loader(self.val_set, batches, epoch), total=len(batches), leave=False, desc="validation",
                   disable=not (config.progress and world.is_main))
        for x, y in bar:
            with self._autocast():
                logits = self.normalized(self._inputs(x)).float()
            y = y.to(world.device)
            total += torch.stack([self.loss_fn(logits, y).double() * len(x),
                                  torch.tensor(len(x), dtype=torch.float64, device=world.device)])
            if self.task == "classification":
                metric(logits, y)
            else:  # a heatmap target (gaussian cells) is compared as the class mask it stands for
                metric(logits.argmax(1), self.loss_fn.labels(y) if hasattr(self.loss_fn, "labels") else y)
        total = all_reduce_sum(total, world)
        parts = [p for p in all_gather_objects(metric.all_records() if len(metric) else None, world) if p]
        values = metric.compute(concat_records(parts))
        out = {"val_loss": float(total[0] / total[1])}
        out.update({f"val_{k}": v for k, v in values.items() if not math.isnan(v)})
        return out

    # ---------------------------------------------------------------------------------------------- outputs
    def _save(self, path: Path, epoch: int, full: bool) -> None:
        extra = {"config": self.config.to_dict(), "epoch": epoch, "history": self.history,
                 "best_val_loss": self.best_loss, "best_epoch": self.best_epoch}
        if self.stain is not None:
            extra["stain"] = self.stain.state_dict()
        if full:
            extra.update(optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict())
        save_checkpoint(path, self.model, name=self.config.model, kwargs=self.config.model_kwargs,
                        normalization=self.normalization, task=self.task, **extra)

    def _write_metrics(self) -> None:
        write_csv(self.out_dir / "metrics.csv", self.history)

    def run(self) -> TrainResult:
        config, world = self.config, self.world
        writer = _tensorboard(self.out_dir / "tensorboard") if world.is_main else None
        for epoch in range(self.start_epoch, config.epochs):
            lr = self.optimizer.param_groups[0]["lr"]
            start = time.perf_counter()
            train_loss, seen = self._train_epoch(epoch)
            seconds = time.perf_counter() - start
            if not math.isfinite(train_loss):
                raise ValueError(f"epoch {epoch + 1}: the training loss is {train_loss}; nothing of this epoch is "
                                 "saved (a lower lr, or checking the data, may help)")
            val = self._validate(epoch)
            self.scheduler.step(val["val_loss"])
            improved = val["val_loss"] < self.best_loss
            if improved:
                self.best_loss, self.best_epoch = val["val_loss"], epoch + 1
            row = {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss, **val, "seconds": round(seconds, 3),
                   "patches_per_s": round(seen / seconds, 2)}
            self.history.append(row)
            if world.is_main:
                if improved:
                    self._save(self.out_dir / "best.pt", epoch + 1, full=False)
                self._save(self.out_dir / "last.pt", epoch + 1, full=True)
                atomic_write(self.out_dir / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
                self._write_metrics()
                if writer is not None:
                    for key, value in row.items():
                        if key != "epoch":
                            writer.add_scalar(key, value, epoch + 1)
                    writer.flush()
            log.log(logging.INFO if world.is_main else logging.DEBUG,  # one line per epoch: rank 0's (others at -v)
                    "epoch %d/%d: train loss %.4f, val loss %.4f%s, lr %.3g, %.1f patches/s", epoch + 1,
                    config.epochs, train_loss, val["val_loss"], " (best)" if improved else "", lr, row["patches_per_s"])
        if writer is not None:
            writer.close()
        return TrainResult(self.out_dir, self.out_dir / "best.pt", self.out_dir / "last.pt", list(self.history))


def _tensorboard(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.debug("tensorboard is not installed: metrics go to metrics.csv only")
        return None
    return SummaryWriter(str(folder))


def train(config: TrainConfig) -> TrainResult:
    """Run, or resume, the training described by ``config`` (see the module docstring); under ``torchrun``
    every process calls this and rank 0 writes the outputs."""
    world = setup_distributed(config.device)
    try:  # rank 0 holds out_dir for the run: a second run into it stops at once, naming this one
        with OutputLock(config.out_dir) if world.is_main else contextlib.nullcontext():
            if world.is_main:
                remove_stale_temporaries(config.out_dir)
            return _Run(config, world).run()
    finally:
        teardown_distributed()
