"""Procedural, labelled cell patches (SYNTHETIC): a stand-in for seed 003's private bone-marrow set.

Every patch is centred on one cell of one of :data:`CELL_TYPES` on a pale Pappenheim-like background
with red blood cells and parts of neighbouring cells near the border (which the centre-weighted
reconstruction loss suppresses, as in seed 003). The types differ by size, shape and texture, and every
cell is drawn at a uniformly random orientation:

    lymphocyte     small, round, dark nucleus filling the cell, thin blue rim
    erythroblast   round, very dark small nucleus, wide grey-pink cytoplasm
    myelocyte      large, oval nucleus off centre, fine pink granules
    band           horseshoe-shaped nucleus, fine granules
    segmented      three to four round lobes on an arc joined by thin strands, fine granules
    eosinophil     two lobes, coarse orange granules

Shapes are drawn analytically in the cell's own coordinates (soft edges, no resampling), so the same cell
can be drawn at any angle. Patch ``i`` depends only on ``(seed, i)``; labels cycle through the types, so
every set is balanced.

Example:
    >>> images, labels = make_cell_patches(12, size=32, seed=0)
    >>> images.shape, images.dtype, labels[:7].tolist()
    ((12, 3, 32, 32), dtype('float32'), [0, 1, 2, 3, 4, 5, 0])
"""

import math

import numpy as np
from tqdm import tqdm

__all__ = ["CELL_TYPES", "make_cell_patches", "render_cell_patch"]

CELL_TYPES = ("lymphocyte", "erythroblast", "myelocyte", "band", "segmented", "eosinophil")

_BACKGROUND = np.array([0.93, 0.89, 0.90])
_RBC = np.array([0.86, 0.62, 0.62])
_NUCLEUS = np.array([0.36, 0.20, 0.50])
_DARK_NUCLEUS = np.array([0.24, 0.12, 0.36])
_BLUE_CYTOPLASM = np.array([0.66, 0.70, 0.88])
_PINK_CYTOPLASM = np.array([0.88, 0.76, 0.82])
_GREY_CYTOPLASM = np.array([0.80, 0.72, 0.78])
_FINE_GRANULE = np.array([0.76, 0.52, 0.68])
_EOSIN_GRANULE = np.array([0.92, 0.50, 0.30])


def _soft(signed_distance: np.ndarray) -> np.ndarray:
    """Coverage in [0, 1] from a signed distance (negative inside), anti-aliased over about one pixel."""
    return 1.0 / (1.0 + np.exp(np.clip(signed_distance / 0.4, -30, 30)))


def _ellipse(u, v, a, b):
    """Approximate signed distance (pixels) to the ellipse with semi-axes ``a`` (along u) and ``b``."""
    return (np.sqrt((u / a) ** 2 + (v / b) ** 2) - 1.0) * min(a, b)


def _disks(u, v, centres, radius):
    """Signed distance to the union of disks of one radius at ``centres`` ``(n, 2)``."""
    d = np.hypot(u[None] - centres[:, 0, None, None], v[None] - centres[:, 1, None, None])
    return d.min(0) - radius


def _segment(u, v, p, q, half_width):
    """Signed distance to a segment from ``p`` to ``q`` with half-width ``half_width``."""
    pq = q - p
    t = np.clip(((u - p[0]) * pq[0] + (v - p[1]) * pq[1]) / max(float(pq @ pq), 1e-9), 0, 1)
    return np.hypot(u - p[0] - t * pq[0], v - p[1] - t * pq[1]) - half_width


def _blobs(u, v, points, sigma):
    """Sum of Gaussian spots of width ``sigma`` at ``points`` ``(n, 2)``, clipped to [0, 1]."""
    if len(points) == 0:
        return np.zeros_like(u)
    d2 = (u[None] - points[:, 0, None, None]) ** 2 + (v[None] - points[:, 1, None, None]) ** 2
    return np.clip(np.exp(-d2 / (2 * sigma**2)).sum(0), 0, 1)


def _paint(image, coverage, colour):
    image *= 1 - coverage[None]
    image += coverage[None] * colour[:, None, None]


def _granules(rng, n, radius):
    """``n`` points spread uniformly over a disk of ``radius`` in cell coordinates."""
    r = radius * np.sqrt(rng.uniform(0, 1, n))
    t = rng.uniform(0, 2 * math.pi, n)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _cell(image, u, v, cell_type: int, s: float, rng, jitter: float):
    """Draw one cell of ``cell_type`` centred at the origin of ``(u, v)`` (cell coordinates, pixels)."""
    scale = s * rng.uniform(0.9, 1.1)
    shade = 1 + jitter * rng.uniform(-1, 1, 3)
    name = CELL_TYPES[cell_type]
    radius = scale * {"lymphocyte": 6.0, "erythroblast": 7.5, "myelocyte": 10.5,
                      "band": 9.5, "segmented": 9.5, "eosinophil": 10.0}[name]
    elongation = rng.uniform(1.0, 1.15)
    cytoplasm = {"lymphocyte": _BLUE_CYTOPLASM, "erythroblast": _GREY_CYTOPLASM}.get(name, _PINK_CYTOPLASM)
    _paint(image, _soft(_ellipse(u, v, radius * elongation, radius)), np.clip(cytoplasm * shade, 0, 1))
    if name in ("myelocyte", "band", "segmented"):
        spots = _granules(rng, int(40 * scale**2 / s**2), radius * 0.9)
        _paint(image, 0.5 * _blobs(u, v, spots, 0.6 * s), _FINE_GRANULE)
    if name == "eosinophil":
        spots = _granules(rng, 45, radius * 0.9)
        _paint(image, 0.8 * _blobs(u, v, spots, 1.0 * s), _EOSIN_GRANULE)
    if name == "lymphocyte":
        nucleus, colour = _ellipse(u - 0.6 * scale, v, 4.8 * scale, 4.6 * scale), _NUCLEUS
    elif name == "erythroblast":
        nucleus, colour = _ellipse(u, v, 3.6 * scale, 3.6 * scale), _DARK_NUCLEUS
    elif name == "myelocyte":
        nucleus, colour = _ellipse(u - 3.5 * scale, v, 4.5 * scale, 6.0 * scale), _NUCLEUS
    elif name == "band":
        ring = np.abs(np.hypot(u, v) - 5.2 * scale) - 1.6 * scale
        gap = -(np.arctan2(v, u) - rng.uniform(-0.3, 0.3))  # open side towards +u, about 100 degrees wide
        nucleus, colour = np.maximum(ring, np.where(np.abs(gap) < 0.85, 2.0, -2.0)), _NUCLEUS
    else:
        lobes = 2 if name == "eosinophil" else int(rng.integers(3, 5))
        spread = 2.2 if name == "eosinophil" else 2.6
        t = np.linspace(-spread / 2, spread / 2, lobes)
        arc = 5.0 * scale
        centres = np.stack([arc * np.cos(t) - 2.0 * scale, arc * np.sin(t)], 1)
        nucleus = _disks(u, v, centres, (3.0 if lobes == 2 else 2.4) * scale)
        for p, q in zip(centres[:-1], centres[1:]):
            nucleus = np.minimum(nucleus, _segment(u, v, p, q, 0.6 * scale))
        colour = _NUCLEUS
    chromatin = 1 + 0.12 * rng.standard_normal(u.shape)
    coverage = _soft(nucleus)
    _paint(image, coverage, np.clip(colour * shade, 0, 1))
    image *= (1 + coverage * (chromatin - 1))[None]


def render_cell_patch(cell_type: int, size: int = 32, seed=0, angle: float | None = None) -> np.ndarray:
    """One patch ``(3, size, size)`` float32 in [0, 1] centred on a cell of ``cell_type``.

    ``seed`` (an int or a sequence of ints) fixes everything; ``angle`` (radians, counter-clockwise)
    overrides the cell's random orientation, so the same cell can be drawn turned by any angle (the
    neighbours and the background keep their places).
    """
    if not 0 <= cell_type < len(CELL_TYPES):
        raise ValueError(f"render_cell_patch: cell_type must be in 0..{len(CELL_TYPES) - 1}, got {cell_type}")
    if size < 16:
        raise ValueError(f"render_cell_patch: size must be at least 16 pixels, got {size}")
    rng = np.random.default_rng(seed)
    s = size / 32
    c = (size - 1) / 2
    i, j = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64), indexing="ij")
    x, y = j - c, c - i  # x to the right, y up
    image = np.broadcast_to(_BACKGROUND[:, None, None] * (1 + 0.04 * rng.uniform(-1, 1, (3, 1, 1))),
                            (3, size, size)).copy()
    for _ in range(int(rng.integers(1, 4))):  # red blood cells and neighbours, towards the border
        t, r = rng.uniform(0, 2 * math.pi), rng.uniform(0.75, 1.05) * size / 2
        ox, oy = r * math.cos(t), r * math.sin(t)
        if rng.uniform() < 0.5:
            d = np.hypot(x - ox, y - oy)
            _paint(image, _soft(d - 5.5 * s) * (1 - 0.35 * _soft(d - 2.5 * s)), _RBC)
        else:
            _cell(image, *_local(x - ox, y - oy, rng.uniform(0, 2 * math.pi)), int(rng.integers(len(CELL_TYPES))),
                  s, rng, 0.06)
    theta = rng.uniform(0, 2 * math.pi)  # drawn even when overridden, so the rest of the cell stays the same
    if angle is not None:
        theta = angle
    _cell(image, *_local(x, y, theta), cell_type, s, rng, 0.06)
    image += 0.015 * rng.standard_normal(image.shape)
    return np.clip(image, 0, 1).astype(np.float32)


def _local(x, y, theta):
    """Coordinates of the plane in a frame turned counter-clockwise by ``theta``."""
    cos, sin = math.cos(theta), math.sin(theta)
    return cos * x + sin * y, -sin * x + cos * y


def make_cell_patches(n: int, size: int = 32, seed: int = 0, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``n`` SYNTHETIC labelled cell patches: images ``(n, 3, size, size)`` float32 in [0, 1] and labels
    ``(n,)`` int64 with ``labels[i] = i % len(CELL_TYPES)``; patch ``i`` is drawn from seed ``(seed, i)``."""
    if n < 1:
        raise ValueError(f"make_cell_patches: n must be positive, got {n}")
    labels = np.arange(n, dtype=np.int64) % len(CELL_TYPES)
    images = np.empty((n, 3, size, size), dtype=np.float32)
    for i in tqdm(range(n), desc="synthetic cells", disable=not progress):
        images[i] = render_cell_patch(int(labels[i]), size, (seed, i))
    return images, labels
