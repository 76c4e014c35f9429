"""Rotation-invariant cell representations (seed 003): procedural cell patches, VAEs with a rotation-
normalising spatial transformer and plain or harmonic encoders, the symmetric-KL rotation loss, and the
evaluation of KL under rotation, SSIM and a cross-validated probe F1.

Example:
    >>> import torch
    >>> from equipath.cells import CellVAE, make_cell_patches
    >>> images, labels = make_cell_patches(4, size=32)
    >>> CellVAE("equ-HNet", latent_dim=8, width=4).eval().encode(torch.from_numpy(images))[0].shape
    torch.Size([4, 8])
"""

from equipath.cells.data import SYNTHETIC, load_cells, read_cell_folder, write_cell_folder
from equipath.cells.metrics import evaluate_cell_vae, probe_f1, reconstruction_ssim, representations, rotation_kl
from equipath.cells.experiment import CellExperimentConfig, format_table, run_experiment
from equipath.cells.losses import centre_weights, gaussian_kl, prior_kl, symmetric_kl, weighted_reconstruction
from equipath.data.rotation import rotate
from equipath.cells.procedural import CELL_TYPES, make_cell_patches, render_cell_patch
from equipath.cells.train import CellTrainConfig, CellTrainResult, load_cell_vae, save_cell_vae, train_cell_vae
from equipath.cells.vae import VARIANTS, CellVAE, VAEOutput

__all__ = [
    "CELL_TYPES", "make_cell_patches", "render_cell_patch", "SYNTHETIC", "load_cells", "read_cell_folder",
    "write_cell_folder", "rotate", "VARIANTS", "CellVAE", "VAEOutput", "gaussian_kl", "prior_kl", "symmetric_kl",
    "centre_weights", "weighted_reconstruction", "CellTrainConfig", "CellTrainResult", "train_cell_vae",
    "save_cell_vae", "load_cell_vae", "rotation_kl", "reconstruction_ssim", "representations", "probe_f1",
    "evaluate_cell_vae", "CellExperimentConfig", "run_experiment", "format_table",
]
