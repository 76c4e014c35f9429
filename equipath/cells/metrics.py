"""Evaluation of cell representations (seed 003 section 2.4 and Figs. 3-5): KL divergence between the
posteriors of rotated test images, SSIM of reconstructions, and a shallow classifier on the frozen
representations scored by k-fold cross-validated macro F1.

Example:
    >>> import numpy as np
    >>> features = np.r_[np.zeros((20, 2)), np.ones((20, 2))] + 0.01 * np.random.default_rng(0).normal(size=(40, 2))
    >>> labels = np.r_[np.zeros(20), np.ones(20)].astype(int)
    >>> probe_f1(features, labels, folds=4)["f1_mean"]
    1.0
"""

import logging
import math
import warnings

import numpy as np
import torch
from skimage.metrics import structural_similarity
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedKFold, cross_validate
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from equipath.cells.losses import symmetric_kl
from equipath.data.rotation import rotate

log = logging.getLogger(__name__)

__all__ = ["rotation_kl", "reconstruction_ssim", "representations", "probe_f1", "evaluate_cell_vae"]


def _batches(images: torch.Tensor, batch_size: int):
    for start in range(0, len(images), batch_size):
        yield images[start:start + batch_size]


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def rotation_kl(model, images: torch.Tensor, n_angles: int = 12, batch_size: int = 256) -> dict:
    """Symmetric KL between the posterior of every image and of the image turned by ``t_k = 2 pi k /
    n_angles``, ``k = 1 .. n_angles - 1`` (seed 003 Fig. 3), averaged over images.

    Args:
        model: a :class:`~equipath.cells.vae.CellVAE` (any module with ``encode(x) -> (mu, logvar)``).
        images: ``(N, 3, S, S)`` in [0, 1].
        n_angles: number of equally spaced angles including 0. Defaults to 12 (every 30 degrees).

    Returns:
        ``{"kl_rotation": mean over angles, "kl_per_angle": {degrees: mean KL}}``.
    """
    if n_angles < 2:
        raise ValueError(f"rotation_kl: n_angles must be at least 2, got {n_angles}")
    model.eval()
    device = _device(model)
    sums = np.zeros(n_angles - 1)
    for x in _batches(images, batch_size):
        x = x.to(device)
        mu, logvar = model.encode(x)
        for k in range(1, n_angles):
            mu_t, logvar_t = model.encode(rotate(x, 2 * math.pi * k / n_angles))
            sums[k - 1] += symmetric_kl(mu, logvar, mu_t, logvar_t).sum().item()
    per_angle = sums / len(images)
    return {"kl_rotation": float(per_angle.mean()),
            "kl_per_angle": {round(360 * k / n_angles, 3): float(v) for k, v in enumerate(per_angle, 1)}}


@torch.no_grad()
def reconstruction_ssim(model, images: torch.Tensor, batch_size: int = 256) -> float:
    """Mean SSIM (scikit-image, data range 1, channels averaged) between every image ``(N, 3, S, S)`` and
    its reconstruction from the posterior mean."""
    model.eval()
    device = _device(model)
    scores = []
    for x in _batches(images, batch_size):
        recon = model(x.to(device)).recon.cpu().numpy()
        for a, b in zip(x.numpy(), recon):
            scores.append(structural_similarity(a, b, channel_axis=0, data_range=1.0))
    return float(np.mean(scores))


@torch.no_grad()
def representations(model, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """The frozen representation (posterior mean) ``(N, latent_dim)`` of ``(N, 3, S, S)`` images."""
    model.eval()
    device = _device(model)
    return torch.cat([model.encode(x.to(device))[0].cpu() for x in _batches(images, batch_size)]).numpy()


def probe_f1(features: np.ndarray, labels: np.ndarray, folds: int = 5, seed: int = 0) -> dict:
    """Macro F1 of a shallow classifier (standardisation + one hidden layer of 64 ReLU units, scikit-learn
    ``MLPClassifier``) in stratified ``folds``-fold cross-validation (seed 003: five folds).

    Training stops after 500 Adam iterations; folds that reach that limit are counted in one log line
    (instead of a warning per fold).

    Shapes: ``features`` ``(N, D)``, ``labels`` ``(N,)``. Returns ``{"f1_mean", "f1_std", "f1_folds"}``.
    """
    features, labels = np.asarray(features), np.asarray(labels)
    if features.ndim != 2 or labels.shape != (len(features),):
        raise ValueError(f"probe_f1: expected features (N, D) and labels (N,), got {features.shape} and {labels.shape}")
    classifier = make_pipeline(StandardScaler(), MLPClassifier((64,), alpha=1e-3, max_iter=500, random_state=seed))
    splits = StratifiedKFold(folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        result = cross_validate(classifier, features, labels, cv=splits, scoring="f1_macro", return_estimator=True)
    scores = result["test_score"]
    unconverged = sum(est[-1].n_iter_ >= est[-1].max_iter for est in result["estimator"])
    if unconverged:
        log.info("probe: %d of %d folds stopped at 500 iterations before converging", unconverged, folds)
    return {"f1_mean": float(scores.mean()), "f1_std": float(scores.std()), "f1_folds": scores.tolist()}


def evaluate_cell_vae(model, test_images: torch.Tensor, labelled_images: torch.Tensor, labels: np.ndarray,
                      n_angles: int = 12, folds: int = 5, seed: int = 0) -> dict:
    """All three measures: ``kl_rotation`` and ``kl_per_angle`` and ``ssim`` on ``test_images``, and
    ``f1_mean`` / ``f1_std`` / ``f1_folds`` of the probe on the representations of ``labelled_images``."""
    return {**rotation_kl(model, test_images, n_angles), "ssim": reconstruction_ssim(model, test_images),
            **probe_f1(representations(model, labelled_images), labels, folds, seed)}
