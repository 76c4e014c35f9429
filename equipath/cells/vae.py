"""Variational auto-encoders for cell patches with a rotation-normalising spatial transformer (seed 003).

Pipeline (seed 003 Fig. 1) for a patch ``x`` ``(B, 3, S, S)`` in [0, 1]:

    alpha = STN(x)                        # predicted orientation, radians
    x_c   = rotate(x, -alpha)             # the patch turned to its canonical orientation
    q(z | x) = N(mu, diag exp(logvar)),   (mu, logvar) = encoder(x_c)     # the representation
    x_hat = rotate(decoder(z), +alpha)    # reconstruction in the original orientation

The orientation lives in ``alpha`` and not in ``z``, so a rotation-invariant ``z`` can still
reconstruct. Variants (:data:`VARIANTS`):

    baseline   plain VAE: no STN, plain CNN encoder (trained without the rotation loss)
    only-STN   STN + plain CNN encoder
    inv-HNet   STN + harmonic encoder whose layers all have rotation order 0: invariant representation
    equ-HNet   STN + harmonic encoder with streams of orders 0 and 2 in every layer; the representation
               holds order-2 features, whose phase turns by twice the angle (rotation equivariant)

The harmonic encoder pools globally over space, so without the STN its pooled features obey the
harmonic law exactly for quarter turns, and inv-HNet's ``(mu, logvar)`` are invariant; the plain encoder
flattens its last feature map and has no such property. These models are not exactly group-equivariant and are kept out of
the ``equipath.models`` registry.

Example:
    >>> import torch
    >>> model = CellVAE("inv-HNet", size=32, latent_dim=8, width=4).eval()
    >>> out = model(torch.rand(2, 3, 32, 32))
    >>> out.recon.shape, out.mu.shape, out.angle.shape
    (torch.Size([2, 3, 32, 32]), torch.Size([2, 8]), torch.Size([2]))
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from equipath.data.rotation import rotate
from equipath.nn.harmonic import HarmonicBatchNorm, HarmonicConv2d, HarmonicResBlock, MagnitudeReLU, magnitude

__all__ = ["VARIANTS", "VAEOutput", "SpatialTransformer", "PlainEncoder", "HarmonicEncoder", "Decoder", "CellVAE"]

VARIANTS = ("baseline", "only-STN", "inv-HNet", "equ-HNet")
_ORDERS = {"inv-HNet": ((0,), (0,)), "equ-HNet": ((0, 2), (0, 2))}  # (stream orders, representation orders)


class VAEOutput(NamedTuple):
    """``recon`` ``(B, 3, S, S)``, ``mu`` and ``logvar`` ``(B, latent_dim)``, ``angle`` ``(B,)`` (zeros
    without an STN)."""

    recon: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor
    angle: torch.Tensor


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class SpatialTransformer(nn.Module):
    """Rotation-only spatial transformer (Jaderberg et al.; seed 003): a small CNN predicts a unit vector
    ``(cos alpha, sin alpha)`` from the patch; it starts at the identity (``alpha = 0``).

    Shapes: ``(B, 3, S, S) -> (B,)`` radians.

    Example:
        >>> import torch
        >>> SpatialTransformer()(torch.rand(2, 3, 32, 32)).tolist()   # the identity at initialisation
        [0.0, 0.0]
    """

    def __init__(self, width: int = 8):
        super().__init__()
        self.features = nn.Sequential(
            _conv_block(3, width), nn.AvgPool2d(2), _conv_block(width, 2 * width), nn.AvgPool2d(2),
            _conv_block(2 * width, 2 * width), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(2 * width * 16, 32), nn.ReLU(inplace=True),
        )
        self.head = nn.Linear(32, 2)
        nn.init.zeros_(self.head.weight)
        with torch.no_grad():
            self.head.bias.copy_(torch.tensor([1.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, s = self.head(self.features(x)).unbind(1)
        return torch.atan2(s, c)


class PlainEncoder(nn.Module):
    """Plain CNN encoder: three conv-BN-ReLU blocks with 2x2 average pooling, flatten, linear.

    Shapes: ``(B, 3, S, S) -> (mu, logvar)``, each ``(B, latent_dim)``; S divisible by 8.

    Example:
        >>> import torch
        >>> [t.shape for t in PlainEncoder(8, 4, 32)(torch.rand(2, 3, 32, 32))]
        [torch.Size([2, 8]), torch.Size([2, 8])]
    """

    def __init__(self, latent_dim: int, width: int, size: int):
        super().__init__()
        self.features = nn.Sequential(
            _conv_block(3, width), nn.AvgPool2d(2), _conv_block(width, 2 * width), nn.AvgPool2d(2),
            _conv_block(2 * width, 4 * width), nn.AvgPool2d(2), nn.Flatten(),
        )
        self.head = nn.Linear(4 * width * (size // 8) ** 2, 2 * latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.features(x)).chunk(2, 1)


class HarmonicEncoder(nn.Module):
    """Residual harmonic encoder (seed 003 section 2.3): a 5x5 harmonic convolution from the order-0
    image into streams of ``orders``, then three stages of harmonic batch-norm and magnitude ReLU
    (channels ``width, 2 width, 4 width``), the first two followed by a residual block and a 3x3 harmonic
    convolution to the next width; the last convolution maps onto the streams of ``output_orders``, the
    rotation order(s) of the representation. Every convolution outside the blocks is followed by 2x2
    average pooling (fused into it, ``pool=2``), so the stages run at S/2, S/4, S/8. The real and
    imaginary parts of every output stream, averaged over space, go through a linear map to
    ``(mu, logvar)``: with ``output_orders = (0,)`` they are invariant under rotations of the input, an
    order-``m`` output turns its phase by ``m`` times the angle (exactly for quarter turns).

    Shapes: ``(B, 3, S, S) -> (mu, logvar)``, each ``(B, latent_dim)``; S divisible by 8.

    Example:
        >>> import torch
        >>> [t.shape for t in HarmonicEncoder(8, 4, (0, 2), (0, 2))(torch.rand(2, 3, 32, 32))]
        [torch.Size([2, 8]), torch.Size([2, 8])]
    """

    def __init__(self, latent_dim: int, width: int, orders, output_orders):
        super().__init__()
        orders, output_orders = tuple(orders), tuple(output_orders)
        channels = [width, 2 * width, 4 * width]
        stage_orders = [orders, orders, output_orders]
        layers = [HarmonicConv2d(3, width, 5, 0, orders, padding=2, pool=2)]
        for i, c in enumerate(channels):
            layers += [HarmonicBatchNorm(c, stage_orders[i]), MagnitudeReLU(c, stage_orders[i])]
            if i + 1 < len(channels):
                layers += [HarmonicResBlock(c, orders),
                           HarmonicConv2d(c, channels[i + 1], 3, orders, stage_orders[i + 1], padding=1, pool=2)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels[-1] * len(output_orders) * 3, 2 * latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)  # (B, C, M_out, 2, S/8, S/8)
        pooled = torch.cat([magnitude(f, 1e-12).mean((-2, -1)).flatten(1), f.mean((-2, -1)).flatten(1)], 1)
        return self.head(pooled).chunk(2, 1)  # pooled: (B, C * M_out * 3) = mean |F| and mean (re, im)


class Decoder(nn.Module):
    """Linear map to ``(4 width, S/8, S/8)``, three nearest-neighbour up-sampling + conv-BN-ReLU stages,
    a 3x3 convolution to RGB and a sigmoid.

    Shapes: ``(B, latent_dim) -> (B, 3, S, S)`` in [0, 1].

    Example:
        >>> import torch
        >>> Decoder(8, 4, 32)(torch.randn(2, 8)).shape
        torch.Size([2, 3, 32, 32])
    """

    def __init__(self, latent_dim: int, width: int, size: int):
        super().__init__()
        self.shape = (4 * width, size // 8, size // 8)
        self.head = nn.Linear(latent_dim, 4 * width * (size // 8) ** 2)
        self.body = nn.Sequential(
            nn.Upsample(scale_factor=2), _conv_block(4 * width, 2 * width),
            nn.Upsample(scale_factor=2), _conv_block(2 * width, width),
            nn.Upsample(scale_factor=2), _conv_block(width, width),
            nn.Conv2d(width, 3, 3, padding=1), nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(F.relu(self.head(z)).view(-1, *self.shape))  # (B, 4 width, S/8, S/8) -> (B, 3, S, S)


class CellVAE(nn.Module):
    """Cell-patch VAE of seed 003 in one of :data:`VARIANTS` (see the module docstring for the pipeline).

    Args:
        variant: ``"baseline"``, ``"only-STN"``, ``"inv-HNet"`` or ``"equ-HNet"``.
        size: patch side S, a multiple of 8. Defaults to 32.
        latent_dim: size of the representation. Defaults to 16.
        width: channels of the first stage (complex channels in the harmonic encoder). Defaults to 8.

    Shapes: ``forward``: ``(B, 3, S, S) -> VAEOutput``; ``encode``: ``(B, 3, S, S) -> (mu, logvar)``.
    In training ``z`` is sampled by the reparameterisation trick, in eval mode ``z = mu``.

    Example:
        >>> import torch
        >>> model = CellVAE("only-STN", size=32, latent_dim=8, width=4)
        >>> mu, logvar = model.encode(torch.rand(2, 3, 32, 32))
        >>> mu.shape
        torch.Size([2, 8])
    """

    def __init__(self, variant: str, size: int = 32, latent_dim: int = 16, width: int = 8):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"CellVAE: variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        if not isinstance(size, int) or size < 16 or size % 8:
            raise ValueError(f"CellVAE: size must be a multiple of 8 and at least 16, got {size!r}")
        self.variant, self.size, self.latent_dim, self.width = variant, size, latent_dim, width
        self.stn = SpatialTransformer() if variant != "baseline" else None
        if variant in _ORDERS:
            self.encoder = HarmonicEncoder(latent_dim, width, *_ORDERS[variant])
        else:
            self.encoder = PlainEncoder(latent_dim, width, size)
        self.decoder = Decoder(latent_dim, width, size)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is ``(B, 3, size, size)``."""
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, self.size, self.size):
            raise ValueError(f"CellVAE: expected input of shape (B, 3, {self.size}, {self.size}), got {tuple(x.shape)}")

    def _canonical(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.stn is None:
            return x, x.new_zeros(x.shape[0])
        angle = self.stn(x)
        return rotate(x, -angle), angle

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The posterior ``(mu, logvar)`` of ``x``, each ``(B, latent_dim)``."""
        self.check_input(x)
        return self.encoder(self._canonical(x)[0])

    def forward(self, x: torch.Tensor) -> VAEOutput:
        self.check_input(x)
        x_c, angle = self._canonical(x)
        mu, logvar = self.encoder(x_c)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        recon = self.decoder(z)
        if self.stn is not None:
            recon = rotate(recon, angle)
        return VAEOutput(recon, mu, logvar, angle)

    def config(self) -> dict:
        """The keyword arguments that rebuild this model."""
        return {"variant": self.variant, "size": self.size, "latent_dim": self.latent_dim, "width": self.width}
