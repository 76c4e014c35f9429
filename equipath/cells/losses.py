"""Losses of the cell VAE (seed 003): Gaussian KL terms, the symmetric-KL rotation loss and the
centre-weighted reconstruction loss.

For diagonal Gaussians ``q_j = N(mu_j, diag sigma_j^2)``

    KL(q_1 || q_2) = 1/2 sum_d [ log(sigma_2^2 / sigma_1^2) + (sigma_1^2 + (mu_1 - mu_2)^2) / sigma_2^2 - 1 ]

and the rotation loss of seed 003 section 2.2 is the symmetric divergence between the posteriors of two
randomly rotated copies of the same image,

    L_rot = KL(q_1 || q_2) + KL(q_2 || q_1)
          = 1/2 sum_d [ (sigma_1^2 + dmu^2) / sigma_2^2 + (sigma_2^2 + dmu^2) / sigma_1^2 - 2 ].

The reconstruction loss weights every pixel by ``w(p) = exp(-|p - c|^2 / (2 (sigma S)^2))``, normalised
to mean 1, so neighbouring cells near the border count little (seed 003 section 2.1).

Example:
    >>> import torch
    >>> mu, logvar = torch.zeros(2, 4), torch.zeros(2, 4)
    >>> symmetric_kl(mu, logvar, mu, logvar).tolist()
    [0.0, 0.0]
"""

import torch

__all__ = ["gaussian_kl", "prior_kl", "symmetric_kl", "centre_weights", "weighted_reconstruction"]


def _check_pair(mu1, logvar1, mu2, logvar2):
    shapes = {tuple(t.shape) for t in (mu1, logvar1, mu2, logvar2)}
    if len(shapes) != 1 or mu1.dim() != 2:
        raise ValueError("expected four (B, D) tensors mu1, logvar1, mu2, logvar2 of one shape, got "
                         + ", ".join(str(tuple(t.shape)) for t in (mu1, logvar1, mu2, logvar2)))


def gaussian_kl(mu1, logvar1, mu2, logvar2) -> torch.Tensor:
    """``KL(N(mu1, e^logvar1) || N(mu2, e^logvar2))`` per sample: ``(B, D)`` x 4 -> ``(B,)``."""
    _check_pair(mu1, logvar1, mu2, logvar2)
    terms = logvar2 - logvar1 + (logvar1.exp() + (mu1 - mu2) ** 2) / logvar2.exp() - 1
    return 0.5 * terms.sum(1)


def prior_kl(mu, logvar) -> torch.Tensor:
    """``KL(N(mu, e^logvar) || N(0, I))`` per sample, the VAE's prior term: ``(B, D)`` x 2 -> ``(B,)``."""
    return 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(1)


def symmetric_kl(mu1, logvar1, mu2, logvar2) -> torch.Tensor:
    """``KL(q1 || q2) + KL(q2 || q1)`` per sample (the rotation loss): ``(B, D)`` x 4 -> ``(B,)``."""
    return gaussian_kl(mu1, logvar1, mu2, logvar2) + gaussian_kl(mu2, logvar2, mu1, logvar1)


def centre_weights(size: int, sigma: float = 0.25) -> torch.Tensor:
    """``(size, size)`` Gaussian pixel weights around the patch centre, width ``sigma * size``, mean 1."""
    if sigma <= 0:
        raise ValueError(f"centre_weights: sigma must be positive, got {sigma}")
    c = (size - 1) / 2
    d = torch.arange(size, dtype=torch.float64) - c
    w = torch.exp(-(d[:, None] ** 2 + d[None, :] ** 2) / (2 * (sigma * size) ** 2))
    return (w / w.mean()).float()


def weighted_reconstruction(recon: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Centre-weighted squared error per sample, ``sum_{c,p} w(p) (recon - target)^2``:
    ``(B, C, H, W)`` x 2 and ``(H, W)`` -> ``(B,)``."""
    if recon.shape != target.shape or recon.dim() != 4 or tuple(weights.shape) != tuple(recon.shape[-2:]):
        raise ValueError(f"weighted_reconstruction: expected recon and target (B, C, H, W) and weights (H, W), got "
                         f"{tuple(recon.shape)}, {tuple(target.shape)}, {tuple(weights.shape)}")
    return ((recon - target) ** 2 * weights).sum((1, 2, 3))
