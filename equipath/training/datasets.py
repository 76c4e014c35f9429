"""The training and validation sets of a :class:`~equipath.training.config.TrainConfig`.

``data.dataset`` picks the reader of :mod:`equipath.data`:

    pcam                    PCam h5 files (``.h5`` or ``.h5.gz``) in ``data.root``: splits train / valid
    synthetic_pcam          the procedural PCam-format set, written to ``data.root`` when missing (synthetic)
    segmentation            ``data.root/{train,valid}/{images,masks}/`` (masks ``NAME{data.mask_suffix}``;
                            without ``valid/``, ``data.valid_fraction`` of train validates): random
                            ``patch_size`` patches for training, a grid of patches for validation
    synthetic_segmentation  procedural tiles of ``patch_size`` drawn on the fly (synthetic)
    ocelot                  OCELOT 2023 in ``data.root`` (splits train / val): whole 1024 x 1024 cell images
                            with disc masks of radius ``cell_radius`` (seed 002), classes 0 / 1 / 2, or
                            (``cell_target: gaussian``) heatmaps of width ``cell_sigma``, one per cell class

The training set is the ``data.fraction`` regime of the train split (nested and seeded, by slide when the
PCam meta file names slides) with ``data.augment`` applied; the validation set is never augmented.

Example:
    >>> from equipath.training import TrainConfig
    >>> config = TrainConfig.from_dict({"model": "p4m_densenet", "data": {"dataset": "pcam", "root": "data/pcam"}})
    >>> train_set, val_set = build_datasets(config, model)  # doctest: +SKIP
"""

import logging
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Subset

from equipath.data import (OcelotDataset, PCamDataset, SegmentationDataset, SyntheticSegmentation, folder_pairs,
                           make_augmentation, regime_indices, write_synthetic_pcam)
from equipath.data.augment import Compose
from equipath.data.pcam import pcam_path
from equipath.data.stain import StainTransform, fit_stain_normalizer
from equipath.training.sampling import fixed_sample

__all__ = ["build_datasets", "estimate_normalization", "data_root", "segmentation_pairs", "stain_normalizer"]

log = logging.getLogger(__name__)


def data_root(config) -> Path:
    """``data.root``, or for a synthetic set ``<out_dir>/data`` when unset."""
    if config.data.root is not None:
        return Path(config.data.root)
    if config.data.dataset.startswith("synthetic"):
        return Path(config.out_dir) / "data"
    raise ValueError(f"config: data.root is required for dataset {config.data.dataset!r} (the folder of its files)")


def _is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def _ensure_synthetic_pcam(root: Path, sizes: dict, seed: int, progress: bool) -> None:
    """Write the synthetic PCam set into ``root`` unless every split is already there (rank 0 writes)."""
    splits = ("train", "valid", "test")
    missing = [s for s in splits if not pcam_path(root, s, "y").is_file()]
    if missing and _is_main():
        log.info("writing the synthetic PCam set %s to %s", sizes, root)
        write_synthetic_pcam(root, sizes, seed=seed, progress=progress)
    if dist.is_initialized():
        dist.barrier()


def _size(data, split: str) -> int:
    n = data.synthetic_size.get(split)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"config: data.synthetic_size must give a positive {split} size, got {data.synthetic_size}")
    return n


def segmentation_pairs(root: Path, data) -> dict:
    """``{"train": pairs, "valid": pairs}`` of ``root/{train,valid}/{images,masks}/`` (masks named
    ``NAME{data.mask_suffix}``); without ``root/valid``, ``data.valid_fraction`` of the train images (a
    seeded choice, ``data.regime_seed``) validate and the rest train."""
    pairs = {"train": folder_pairs(root / "train" / "images", root / "train" / "masks", data.mask_suffix)}
    if (root / "valid").is_dir():
        pairs["valid"] = folder_pairs(root / "valid" / "images", root / "valid" / "masks", data.mask_suffix)
        return pairs
    if data.valid_fraction is None:
        raise FileNotFoundError(f"{root / 'valid'} does not exist: add valid/images and valid/masks, or hold out "
                                f"part of train/ with --set data.valid_fraction=0.2")
    n = len(pairs["train"])
    n_valid = max(1, round(n * data.valid_fraction))
    if n_valid >= n:
        raise ValueError(f"data.valid_fraction {data.valid_fraction} of {n} train images leaves none to train on")
    order = np.random.default_rng(data.regime_seed).permutation(n)
    held = set(order[:n_valid].tolist())
    train = pairs["train"]
    log.info("validating on %d of the %d images of %s (data.valid_fraction %g)", n_valid, n, root / "train",
             data.valid_fraction)
    return {"train": [p for k, p in enumerate(train) if k not in held],
            "valid": [p for k, p in enumerate(train) if k in held]}


def _regime(dataset, fraction: float, seed: int, slides=None):
    if fraction >= 1.0:
        return dataset
    return Subset(dataset, regime_indices(len(dataset), fraction, seed, slides).tolist())


def stain_normalizer(data):
    """The stain normaliser of ``data.stain`` fitted on its reference image, or None without one."""
    if data.stain is None:
        return None
    log.info("stain normalisation: %s fitted on %s", data.stain["method"], data.stain["reference"])
    return fit_stain_normalizer(data.stain["method"], data.stain["reference"])


def build_datasets(config, model, stain="config") -> tuple:
    """``(train_set, val_set)`` for ``config`` (see the module docstring); items are ``(image, target)``
    with ``image`` float32 ``(3, H, W)`` in [0, 1]. Checks that the patch size suits ``model``
    (``model.check_input_size``) and that the data set's task is the model's. ``stain``: the fitted stain
    normaliser applied to every image before augmentation (default: :func:`stain_normalizer` of the config)."""
    data = config.data
    root = data_root(config)
    stain = stain_normalizer(data) if isinstance(stain, str) and stain == "config" else stain
    before = [StainTransform(stain)] if stain is not None else []
    augment = make_augmentation(data.augment) if data.augment else None
    if before:
        augment = Compose(before + ([augment] if augment is not None else []))
    plain = Compose(before) if before else None  # validation: normalised, never augmented
    if data.dataset in ("pcam", "synthetic_pcam"):
        if data.dataset == "synthetic_pcam":
            _ensure_synthetic_pcam(root, data.synthetic_size, config.seed, config.progress)
        task = "classification"
        train_full = PCamDataset(root, "train", transform=augment)
        if data.dataset == "synthetic_pcam" and len(train_full) != data.synthetic_size.get("train"):
            raise ValueError(f"data.root {root} holds a synthetic set of {len(train_full)} training patches but "
                             f"data.synthetic_size asks for {data.synthetic_size.get('train')}: use another data.root")
        train_set = _regime(train_full, data.fraction, data.regime_seed, train_full.slides)
        val_set = PCamDataset(root, "valid", transform=plain)
    else:
        task = "segmentation"
        if data.dataset == "segmentation":
            pairs = segmentation_pairs(root, data)
            train_full = SegmentationDataset(pairs["train"], data.patch_size, "random", transform=augment,
                                             grey_to_rgb=data.grey_to_rgb)
            val_set = SegmentationDataset(pairs["valid"], data.patch_size, "grid", grey_to_rgb=data.grey_to_rgb,
                                          transform=plain)
        elif data.dataset == "synthetic_segmentation":
            size = (data.patch_size, data.patch_size)
            train_full = SyntheticSegmentation(_size(data, "train"), size, config.seed, "train", transform=augment)
            val_set = SyntheticSegmentation(_size(data, "valid"), size, config.seed, "valid", transform=plain)
        else:
            cells = {"target": data.cell_target, "radius": data.cell_radius, "sigma": data.cell_sigma}
            train_full = OcelotDataset(root, "train", transform=augment, **cells)
            val_set = OcelotDataset(root, "val", transform=plain, **cells)
        train_set = _regime(train_full, data.fraction, data.regime_seed)
    if task != model.task:
        raise ValueError(f"config: model {config.model!r} is a {model.task} model but data.dataset "
                         f"{data.dataset!r} is a {task} set")
    for dataset in (train_full, val_set):  # mask values outside the model's classes: now, not mid-epoch
        if isinstance(dataset, SegmentationDataset):
            dataset.check_classes(model.num_classes)
    h, w = val_set[0][0].shape[-2:]
    model.check_input_size(h, w)
    log.info("training on %d items (fraction %g of %d), validating on %s of %d", len(train_set), data.fraction,
             len(train_full), data.val_samples or "all", len(val_set))
    return train_set, val_set


@torch.no_grad()
def estimate_normalization(dataset, seed: int, size: int = 2048) -> tuple[list, list]:
    """Per-channel mean and standard deviation of the images of a fixed sample of ``size`` items."""
    indices = fixed_sample(len(dataset), size, seed).tolist()
    total = torch.zeros(3, dtype=torch.float64)
    total_sq = torch.zeros(3, dtype=torch.float64)
    count = 0
    for x, _ in DataLoader(Subset(dataset, indices), batch_size=256):
        x = x.double()
        total += x.sum((0, 2, 3))
        total_sq += (x * x).sum((0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(1e-12).sqrt()
    return [float(v) for v in mean], [float(max(v, 1e-3)) for v in std.numpy().astype(np.float64)]
