"""Training of the cell VAEs (seed 003 section 2.4): Adam, early stopping on a validation set, the
centre-weighted reconstruction loss, the prior KL and the weighted rotation loss.

Per batch ``x`` with rotation weight ``w > 0`` the model sees two copies turned by independent uniform
angles, ``x_1 = rotate(x, t_1)``, ``x_2 = rotate(x, t_2)``, and minimises

    L = 1/2 sum_j [ rec(x_hat_j, x_j) + beta KL(q_j || N(0, I)) ] + w L_rot(q_1, q_2)

averaged over the batch (``equipath.cells.losses``). With ``w = 0`` (the baseline) it sees ``x`` once.

Before every validation the running statistics of all batch-norm layers are recomputed from up to
``calibration_images`` training images under the current weights (precise batch-norm): the exponential
averages lag behind weights that change quickly, and the magnitude nonlinearities of the harmonic
encoders turn that lag into large errors in eval mode.

Why not :func:`equipath.training.train`: that loop trains registered, supervised models (labels, a
classification or segmentation loss and metrics, the seed 000 plateau schedule, DDP, resumable
checkpoints with optimizer state). This one has no labels, two rotated copies of every batch, a
precise-BN recalibration before each validation and early stopping that restores the best weights;
folding those into the shared trainer would add three switches used by one model. What is shared: the
config rules (:func:`equipath.training.config.check_types`, the CLI's ``build_config``), the checkpoint
format (:mod:`equipath.checkpoint`), device resolution and the atomic writers.

Example:
    >>> import torch
    >>> config = CellTrainConfig(variant="inv-HNet", latent_dim=4, width=2, epochs=1, batch_size=8)
    >>> result = train_cell_vae(torch.rand(16, 3, 32, 32), torch.rand(8, 3, 32, 32), config, progress=False)
    >>> len(result.history), result.model.training
    (1, False)
"""

import copy
import logging
import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from tqdm import tqdm

from equipath.cells.losses import centre_weights, prior_kl, symmetric_kl, weighted_reconstruction
from equipath.data.rotation import rotate
from equipath.cells.vae import VARIANTS, CellVAE
from equipath.checkpoint import load_checkpoint, save_checkpoint
from equipath.nn.harmonic import HarmonicBatchNorm
from equipath.training.config import check_types
from equipath.training.distributed import resolve_device

__all__ = ["CellTrainConfig", "CellTrainResult", "train_cell_vae", "recalibrate_batch_norm", "save_cell_vae",
           "load_cell_vae", "TASK"]

log = logging.getLogger(__name__)

TASK = "cell-representation"


@dataclass
class CellTrainConfig:
    """Model and optimisation settings of one cell-VAE run.

    Attributes:
        variant: one of ``equipath.cells.vae.VARIANTS``. Defaults to ``"inv-HNet"``.
        rotation_weight: ``w`` of the rotation loss (seed 003: 0.2, 0.5, 0.9; 0 for the baseline, which
            must have 0). Defaults to 0.5.
        size, latent_dim, width: :class:`~equipath.cells.vae.CellVAE` arguments. Defaults to 32, 16, 8.
        epochs: maximum number of passes over the training set. Defaults to 10.
        batch_size: images per batch (each seen twice when ``w > 0``). Defaults to 64.
        lr: Adam learning rate. Defaults to 3e-3 (the harmonic encoders learn slowly at 1e-3 within a
            CPU budget of a dozen epochs).
        patience: stop after this many epochs without a lower validation loss; the best epoch's weights
            are kept. Defaults to 5.
        beta: weight of the prior KL. Defaults to 1.
        centre_sigma: width of the reconstruction weights as a fraction of the patch. Defaults to 0.25.
        calibration_images: training images that set the batch-norm statistics before each
            validation. Defaults to 512.
        seed: seeds initialisation, shuffling and rotation angles. Defaults to 0.
        device: ``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``. Defaults to ``auto``.
    """

    variant: str = "inv-HNet"
    rotation_weight: float = 0.5
    size: int = 32
    latent_dim: int = 16
    width: int = 8
    epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-3
    patience: int = 5
    beta: float = 1.0
    centre_sigma: float = 0.25
    calibration_images: int = 512
    seed: int = 0
    device: str = "auto"

    def __post_init__(self):
        check_types(self, "cell training config")  # the package's one set of config rules
        if self.variant not in VARIANTS:
            raise ValueError(f"cell training config: variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        if self.rotation_weight < 0 or (self.variant == "baseline" and self.rotation_weight != 0):
            raise ValueError("cell training config: rotation_weight must be >= 0, and 0 for the baseline "
                             f"(got {self.rotation_weight} for {self.variant})")
        for name in ("epochs", "batch_size", "latent_dim", "width", "patience", "calibration_images"):
            if getattr(self, name) < 1:
                raise ValueError(f"cell training config: {name} must be positive, got {getattr(self, name)}")


@dataclass
class CellTrainResult:
    """The trained model (best validation epoch, eval mode), per-epoch ``history`` rows and ``best_epoch``."""

    model: CellVAE
    history: list
    best_epoch: int


def _loss(model, x, weights, config, generator) -> tuple[torch.Tensor, dict]:
    w = config.rotation_weight
    if w == 0:
        out = model(x)
        rec = weighted_reconstruction(out.recon, x, weights).mean()
        prior = prior_kl(out.mu, out.logvar).mean()
        return rec + config.beta * prior, {"reconstruction": rec.item(), "prior_kl": prior.item(), "rotation_kl": 0.0}
    angles = torch.rand(2, x.shape[0], generator=generator).to(x.device) * (2 * math.pi)
    pair = torch.cat([rotate(x, angles[0]), rotate(x, angles[1])])  # (2B, 3, S, S)
    out = model(pair)
    rec = weighted_reconstruction(out.recon, pair, weights).mean()
    prior = prior_kl(out.mu, out.logvar).mean()
    mu1, mu2 = out.mu.chunk(2)
    lv1, lv2 = out.logvar.chunk(2)
    rot = symmetric_kl(mu1, lv1, mu2, lv2).mean()
    return rec + config.beta * prior + w * rot, {"reconstruction": rec.item(), "prior_kl": prior.item(),
                                                 "rotation_kl": rot.item()}


def _check_images(name: str, images: torch.Tensor, size: int) -> None:
    if images.dim() != 4 or tuple(images.shape[1:]) != (3, size, size) or len(images) == 0:
        raise ValueError(f"train_cell_vae: expected {name} images of shape (N, 3, {size}, {size}), got {tuple(images.shape)}")


def train_cell_vae(train_images: torch.Tensor, val_images: torch.Tensor, config: CellTrainConfig,
                   progress: bool = True) -> CellTrainResult:
    """Train a :class:`~equipath.cells.vae.CellVAE` on ``(N, 3, S, S)`` float images in [0, 1].

    Validation uses fixed angles (seeded), so its loss is comparable between epochs; training stops
    after ``config.patience`` epochs without improvement and returns the best epoch's weights.
    """
    _check_images("training", train_images, config.size)
    _check_images("validation", val_images, config.size)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model = CellVAE(config.variant, config.size, config.latent_dim, config.width).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    weights = centre_weights(config.size, config.centre_sigma).to(device)
    generator = torch.Generator().manual_seed(config.seed)
    history, best, best_state, best_epoch = [], math.inf, None, 0
    bar = tqdm(range(config.epochs), desc=f"{config.variant} w={config.rotation_weight:g}", disable=not progress)
    for epoch in bar:
        model.train()
        order = torch.randperm(len(train_images), generator=generator)
        totals, batches = {}, 0
        for start in range(0, len(order), config.batch_size):
            x = train_images[order[start:start + config.batch_size]].to(device)
            loss, parts = _loss(model, x, weights, config, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            batches += 1
            for k, v in {"loss": loss.item(), **parts}.items():
                totals[k] = totals.get(k, 0.0) + v
        calibration = train_images[order[:config.calibration_images]]
        if config.rotation_weight > 0:  # the training inputs are rotated copies
            calibration = rotate(calibration, torch.rand(len(calibration), generator=generator) * (2 * math.pi))
        recalibrate_batch_norm(model, calibration.to(device), config.batch_size * (2 if config.rotation_weight > 0 else 1))
        val = _validate(model, val_images, weights, config, device)
        row = {"epoch": epoch + 1, **{f"train_{k}": v / batches for k, v in totals.items()}, **val}
        history.append(row)
        log.debug("epoch %d: %s", epoch + 1, row)
        bar.set_postfix(train=f"{row['train_loss']:.1f}", val=f"{val['val_loss']:.1f}")
        if val["val_loss"] < best:
            best, best_epoch, best_state = val["val_loss"], epoch + 1, copy.deepcopy(model.state_dict())
        elif epoch + 1 - best_epoch >= config.patience:
            log.info("%s w=%g: early stop after epoch %d (best %d)", config.variant, config.rotation_weight,
                     epoch + 1, best_epoch)
            break
    model.load_state_dict(best_state)
    return CellTrainResult(model.eval(), history, best_epoch)


@torch.no_grad()
def recalibrate_batch_norm(model: nn.Module, images: torch.Tensor, batch_size: int = 64) -> None:
    """Set the running statistics of every batch-norm layer of ``model`` (``nn.BatchNorm*`` and
    :class:`~equipath.nn.harmonic.HarmonicBatchNorm`) to their plain average over ``images``
    ``(N, 3, S, S)``, seen in batches of ``batch_size`` in training mode; weights are not touched."""
    norms = [m for m in model.modules() if isinstance(m, (nn.modules.batchnorm._BatchNorm, HarmonicBatchNorm))]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    was_training = model.training
    model.train()
    for start in range(0, len(images), batch_size):
        model(images[start:start + batch_size])
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)


@torch.no_grad()
def _validate(model, images, weights, config, device) -> dict:
    model.eval()
    generator = torch.Generator().manual_seed(config.seed + 1)
    totals, n = {}, 0
    for start in range(0, len(images), config.batch_size):
        x = images[start:start + config.batch_size].to(device)
        loss, parts = _loss(model, x, weights, config, generator)
        for k, v in {"loss": loss.item(), **parts}.items():
            totals[k] = totals.get(k, 0.0) + v * len(x)
        n += len(x)
    return {f"val_{k}": v / n for k, v in totals.items()}


def save_cell_vae(path, model: CellVAE, config: CellTrainConfig, history: list):
    """Write ``model`` with its training config and history as an equipath checkpoint (atomically).
    The VAE reads RGB in [0, 1] as is (normalisation mean 0, std 1)."""
    return save_checkpoint(path, model, name="cell_vae", kwargs=model.config(),
                           normalization={"mean": [0.0] * 3, "std": [1.0] * 3}, task=TASK,
                           train_config=asdict(config), history=history)


def load_cell_vae(path, map_location="cpu") -> tuple[CellVAE, dict]:
    """Rebuild a cell VAE from a checkpoint of :func:`save_cell_vae`; returns ``(model in eval mode, checkpoint)``."""
    state = load_checkpoint(path, map_location)
    if state.get("task") != TASK:
        raise ValueError(f"checkpoint {path} holds a {state.get('task')!r} model, expected a cell VAE ({TASK!r})")
    model = CellVAE(**state["model"]["kwargs"])
    model.load_state_dict(state["state_dict"])
    return model.to(map_location).eval(), state
