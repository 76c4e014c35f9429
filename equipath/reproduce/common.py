"""What every table's cells share: the repository configs, one training run per cell (resumed by the
trainer when the cell was killed), test-set logits, prepared-data markers, and scores pooled over seeds
with a bootstrap interval of their mean.

Example:
    >>> config, path = read_config("pcam_p4m_densenet")
    >>> config["model"], path.name
    ('p4m_densenet', 'pcam_p4m_densenet.yaml')
"""

import copy
import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from equipath.atomic import write_json
from equipath.checkpoint import load_model
from equipath.configs import resolve_config_path
from equipath.evaluation.base import bootstrap_ci
from equipath.evaluation.classification import classification_metrics
from equipath.outdir import is_done, mark_done
from equipath.training import TrainConfig, train
from equipath.training.config import apply_overrides, load_yaml

__all__ = ["read_config", "forward_batches", "train_cell", "predict_logits", "prepared", "write_scores",
           "pooled_scores", "score_classification", "set_key"]

log = logging.getLogger(__name__)


def read_config(name: str) -> tuple[dict, Path]:
    """The shipped config ``name`` (``equipath/configs``) as a plain dict, and its path."""
    path = resolve_config_path(name)
    return load_yaml(path.read_text(), str(path)), path


def set_key(config: dict, dotted: str, value) -> dict:
    """``config`` with ``dotted`` (``data.root``) set to ``value`` (parents created). Returns ``config``."""
    *parents, leaf = dotted.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return config


def train_cell(cell, folder: Path, context) -> Path:
    """Train (or resume) ``cell.config`` in ``folder/train`` with the run's device, progress and ``--set``
    overrides; returns the best checkpoint (lowest validation loss, seed 000)."""
    config = copy.deepcopy(cell.config)
    config.update(out_dir=str(folder / "train"), seed=cell.seed, device=context.device, progress=context.progress)
    apply_overrides(config, context.overrides, TrainConfig)
    result = train(TrainConfig.from_dict(config))
    return result.best


@torch.no_grad()
def forward_batches(checkpoint, dataset, device: str = "cpu", batch_size: int = 64):
    """Yield ``(model outputs, targets)`` of a checkpoint's model on ``dataset`` in order, batch by batch (the
    model from :func:`equipath.models.load_model` normalises its input with the checkpoint's statistics)."""
    model, _ = load_model(checkpoint, map_location=device)  # its checkpoint's normalisation in front
    for x, y in DataLoader(dataset, batch_size=batch_size):
        yield model(x.to(device)).float().cpu(), y


def predict_logits(checkpoint, dataset, device: str = "cpu", batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """``(logits (N,), labels (N,))`` of a classifier checkpoint on ``dataset``, in dataset order."""
    logits, labels = [], []
    for z, y in forward_batches(checkpoint, dataset, device, batch_size):
        logits.append(z.reshape(-1).numpy())
        labels.append(np.asarray(y, dtype=np.float64).reshape(-1))
    return np.concatenate(logits).astype(np.float64), np.concatenate(labels)


def prepared(folder: Path, make, **info) -> Path:
    """Run ``make(folder)`` unless ``folder`` holds its completion marker, then mark it; returns ``folder``.
    A killed preparation is redone from the start (its partial files are overwritten atomically)."""
    if not is_done(folder):
        folder.mkdir(parents=True, exist_ok=True)
        make(folder)
        mark_done(folder, **info)
    return folder


def write_scores(folder: Path, metrics: dict, **extra) -> None:
    """A cell's ``scores.json``: its metrics (one seed) and anything else worth keeping."""
    write_json(folder / "scores.json", {"metrics": metrics, **extra})


def pooled_scores(compute, records_per_seed: list[dict], n_bootstrap: int, seed: int = 0):
    """Metrics averaged over seeds and the bootstrap 95 % interval of that average.

    ``records_per_seed``: one ``{name: (items, ...) array}`` per seed, the same test items in the same order;
    a resample draws items once and applies the draw to every seed. Returns ``(values, intervals)``."""
    stacked = {k: np.stack([r[k] for r in records_per_seed], axis=1) for k in records_per_seed[0]}  # (items, seeds)

    def mean_over_seeds(records):
        scores = [compute({k: v[:, s] for k, v in records.items()}) for s in range(len(records_per_seed))]
        return {key: float(np.mean([s[key] for s in scores])) for key in scores[0]}

    values = mean_over_seeds(stacked)
    intervals = bootstrap_ci(mean_over_seeds, stacked, n=n_bootstrap, seed=seed) if n_bootstrap else {}
    return values, intervals


def _classification(records):
    return classification_metrics(records["logits"], records["labels"])


def score_classification(folders: list[Path], context):
    """NLL, accuracy and AUC of the cells' saved test logits, pooled over seeds (:func:`pooled_scores`)."""
    records = []
    for folder in folders:
        with np.load(folder / "test_logits.npz") as data:
            records.append({"logits": data["logits"], "labels": data["labels"]})
    return pooled_scores(_classification, records, context.n_bootstrap)


def read_scores(folder: Path) -> dict:
    return json.loads((folder / "scores.json").read_text())
