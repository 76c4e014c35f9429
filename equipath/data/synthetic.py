"""A deterministic procedural generator of H&E-like tissue: the embedded default data set (synthetic).

Images are composed in optical density (Beer-Lambert): each pixel carries a haematoxylin and an eosin
concentration, and ``RGB = 255 * exp(-(c_H * h + c_E * e))`` with stain vectors ``h`` (purple) and ``e``
(pink). The tissue is

- stroma: eosin with wavy collagen fibres along a random direction and a few pale gaps,
- normal-like nuclei: small, round, dark lymphocyte-like nuclei (dense where the lymphoid field is high),
  thin fibroblast nuclei along the fibres, and benign glands (an elliptical ring of epithelial nuclei,
  each elongated across the ring, around a pale lumen) at a random orientation,
- tumour-like nuclei: larger, pleomorphic (ellipses with a perturbed boundary), hyperchromatic with
  coarse chromatin and nucleoli, crowded on a tight lattice inside a tumour region whose cytoplasm is
  stained darker.

**Difficulty.** ``difficulty`` in [0, 1] (default :data:`DEFAULT_DIFFICULTY`, chosen from a measured
sweep, see ``docs/data.md``) sets how far the classes overlap. Each image draws a tumour *atypia*
``s ~ U(1 - d, 1)``; every tumour-like nucleus is a blend ``benign + s * (malignant - benign)`` of a
benign epithelial nucleus and a malignant one (size, elongation, boundary perturbation, stain, rim and
nucleolus), and the darker tumour cytoplasm and the crowding scale with ``s`` too. Benign glands appear
(about ``4 d`` per 96 x 96) with nuclei enlarged toward the malignant ones by up to ``0.6 d``, and
fibroblasts are ``1 + 2 d`` times as dense. So at ``d = 0`` tumour nuclei are unmistakable and there are
no glands; at ``d = 1`` a weakly atypical tumour nest and a reactive gland look alike. Every structure
(fibres, glands, elongated nuclei) has a random orientation, so orientation is a nuisance, never a cue.
``label_noise`` flips the stored label of a patch with that probability (its own random stream;
``clean_label`` keeps the truth).

Item ``i`` of a set is drawn from its own random stream ``(seed, split, i)``: it is the same whichever
worker draws it and in whatever order. Stain strength varies per pseudo-slide of ``SLIDE_SIZE``
consecutive patches.

Classification patches (96 x 96, like PCam) are labelled 1 exactly when a pixel of a tumour-like nucleus
lies in the centre 32 x 32 (rows and columns 32..63). Within every pair of indices ``(2k, 2k + 1)`` one
patch is positive and one negative, so each split is balanced. Negatives are normal tissue, or (one in
three) hard negatives with a tumour region kept away from the centre.

Example:
    >>> from equipath.data.synthetic import synthetic_patch, synthetic_tile
    >>> patch = synthetic_patch(0, seed=0)
    >>> patch.image.shape, patch.image.dtype, patch.label in (0, 1)
    ((96, 96, 3), dtype('uint8'), True)
    >>> tile = synthetic_tile(0, seed=0, size=(64, 80))
    >>> tile.image.shape, tile.mask.shape
    ((64, 80, 3), (64, 80))
"""

from dataclasses import dataclass, fields

import numpy as np
from scipy import ndimage

__all__ = ["Nuclei", "SyntheticPatch", "SyntheticTile", "synthetic_patch", "synthetic_tile", "tile_shape",
           "check_difficulty", "PATCH_SIZE", "CENTRE", "SLIDE_SIZE", "LYMPHOCYTE", "FIBROBLAST", "TUMOUR",
           "EPITHELIUM", "SPLIT_CODES", "DEFAULT_DIFFICULTY"]

PATCH_SIZE = 96
CENTRE = slice(32, 64)  # the centre 32 x 32 of a PCam patch decides its label
SLIDE_SIZE = 32  # consecutive patches that share one pseudo-slide's staining
LYMPHOCYTE, FIBROBLAST, TUMOUR, EPITHELIUM = 0, 1, 2, 3
SPLIT_CODES = {"train": 0, "valid": 1, "test": 2}
DEFAULT_DIFFICULTY = 1.0  # chosen from the sweep in docs/data.md
_PATCH, _SLIDE, _PAIR, _TILE, _NOISE = 1, 2, 3, 4, 5  # purposes of the random streams
_BOX = 11  # every nucleus is drawn in a (2 * _BOX + 1)^2 box around its centre
_REACH = 10  # no nucleus pixel with coverage above one half lies farther than this from its centre
_PAD = 2 * _BOX  # nuclei are drawn on a canvas this much larger than the image on every side
_H_VECTOR = np.array([0.5626, 0.7201, 0.4062])  # optical density of haematoxylin (purple)
_E_VECTOR = np.array([0.2159, 0.8012, 0.5581])  # optical density of eosin (pink)


@dataclass(frozen=True)
class Nuclei:
    """The nuclei of one image, in image pixel coordinates (row, column); ``N`` nuclei.

    Attributes:
        centres: ``(N, 2)`` float centres.
        axes: ``(N, 2)`` semi-axes (along ``angles``, across), before the boundary perturbation.
        angles: ``(N,)`` orientation of the first axis in radians.
        kinds: ``(N,)`` :data:`LYMPHOCYTE`, :data:`FIBROBLAST`, :data:`TUMOUR` or :data:`EPITHELIUM`.
        reach: ``(N,)`` radius of a disc around the centre that holds every pixel the nucleus covers by
            more than one half (at most 10 pixels).
        amps, phases: ``(N, 3)`` amplitudes and phases of the boundary harmonics 2, 3, 4.
        strength: ``(N,)`` haematoxylin density.
        atypia: ``(N,)`` in [0, 1], how malignant the chromatin looks (darker rim, nucleolus); 0 for
            lymphocytes and fibroblasts.
    """

    centres: np.ndarray
    axes: np.ndarray
    angles: np.ndarray
    kinds: np.ndarray
    reach: np.ndarray
    amps: np.ndarray
    phases: np.ndarray
    strength: np.ndarray
    atypia: np.ndarray

    def select(self, keep: np.ndarray) -> "Nuclei":
        """The nuclei where the bool ``(N,)`` ``keep`` is True."""
        return Nuclei(*(getattr(self, f.name)[keep] for f in fields(self)))

    @staticmethod
    def concat(parts: list) -> "Nuclei":
        return Nuclei(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Nuclei)))

    def __len__(self) -> int:
        return len(self.kinds)


@dataclass(frozen=True)
class SyntheticPatch:
    """A 96 x 96 classification patch: ``image`` uint8 ``(96, 96, 3)``, ``label`` 0/1 (after label noise),
    ``clean_label`` (before it), its ``nuclei``, ``tumour_nuclei`` bool ``(96, 96)`` (pixels of tumour-like
    nuclei, which decide ``clean_label``) and ``tumour_region`` bool ``(96, 96)``."""

    image: np.ndarray
    label: int
    clean_label: int
    nuclei: Nuclei
    tumour_nuclei: np.ndarray
    tumour_region: np.ndarray


@dataclass(frozen=True)
class SyntheticTile:
    """A segmentation tile: ``image`` uint8 ``(H, W, 3)``, ``mask`` int64 ``(H, W)`` (1 = tumour region,
    0 = elsewhere) and its ``nuclei``."""

    image: np.ndarray
    mask: np.ndarray
    nuclei: Nuclei


@dataclass(frozen=True)
class _Tissue:
    """What one image is made of besides its nuclei: the tumour region and its atypia, the glands' lumen
    and epithelium masks, the fibre direction."""

    region: np.ndarray
    atypia: float
    lumen: np.ndarray
    epithelium: np.ndarray
    fibre_angle: float


def check_difficulty(difficulty: float, label_noise: float = 0.0) -> tuple[float, float]:
    """``(difficulty, label_noise)`` as floats; ``ValueError`` unless both lie in [0, 1] (noise below 0.5)."""
    if not 0.0 <= float(difficulty) <= 1.0:
        raise ValueError(f"difficulty must be in [0, 1], got {difficulty}")
    if not 0.0 <= float(label_noise) < 0.5:
        raise ValueError(f"label_noise must be in [0, 0.5), got {label_noise}")
    return float(difficulty), float(label_noise)


def _rng(seed: int, split: str, purpose: int, index: int) -> np.random.Generator:
    if split not in SPLIT_CODES:
        raise ValueError(f"unknown split {split!r}: expected one of {', '.join(SPLIT_CODES)}")
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    return np.random.default_rng([int(seed), SPLIT_CODES[split], purpose, int(index)])


def _smooth_noise(rng, shape, *sigmas: float) -> np.ndarray:
    """Gaussian random fields with zero mean, unit standard deviation and correlation lengths ``sigmas``
    pixels (periodic), ``(len(sigmas), H, W)``, or ``(H, W)`` for one sigma; one batched FFT."""
    fy = np.fft.fftfreq(shape[0])[None, :, None]
    fx = np.fft.rfftfreq(shape[1])[None, None, :]
    sig = np.asarray(sigmas, dtype=float)[:, None, None]
    transfer = np.exp(-2 * (np.pi * sig) ** 2 * (fy ** 2 + fx ** 2))  # Gaussian blur
    field = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((len(sigmas), *shape))) * transfer, s=shape)
    field -= field.mean(axis=(1, 2), keepdims=True)
    field /= field.std(axis=(1, 2), keepdims=True) + 1e-12
    return field[0] if len(sigmas) == 1 else field


def _lattice(rng, shape, spacing: float, jitter: float, origin=None) -> np.ndarray:
    """Points of a randomly rotated square lattice covering ``shape`` (padded by ``_BOX``), each moved by
    up to ``jitter * spacing``; with ``origin`` the lattice passes through that point, which stays put."""
    h, w = shape
    theta = rng.uniform(0, np.pi / 2)
    if origin is None:
        origin = rng.uniform(0, [h, w])
    origin = np.asarray(origin, dtype=float)
    n = int(np.ceil(np.hypot(h, w) / spacing)) + 2
    k = np.arange(-n, n + 1)
    grid = np.stack(np.meshgrid(k, k, indexing="ij"), -1).reshape(-1, 2) * spacing
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    pts = grid @ rot.T + origin
    moved = rng.uniform(-jitter, jitter, pts.shape) * spacing
    moved[np.all(grid == 0, axis=1)] = 0.0
    pts = pts + moved
    keep = np.all((pts > -_BOX) & (pts < np.array([h, w]) + _BOX), axis=1)
    return pts[keep]


def _sample_at(field: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Nearest-pixel values of ``field`` at ``pts`` (clamped to the image)."""
    idx = np.clip(np.rint(pts).astype(int), 0, np.array(field.shape) - 1)
    return field[idx[:, 0], idx[:, 1]]


def _epithelial_shape(rng, n: int) -> tuple:
    """Major semi-axis, minor / major, boundary amplitudes and stain of ``n`` benign epithelial nuclei."""
    return rng.uniform(3.4, 4.6, n), rng.uniform(0.6, 0.85, n), rng.uniform(0, 0.02, (n, 3)), rng.uniform(1.2, 1.6, n)


def _malignant_shape(rng, n: int) -> tuple:
    """The same for malignant nuclei: larger, less regular, darker."""
    return rng.uniform(5.0, 8.3, n), rng.uniform(0.55, 0.92, n), rng.uniform(0, 0.06, (n, 3)), rng.uniform(1.4, 2.1, n)


def _make_nuclei(rng, pts: np.ndarray, kind: int, angles=None, atypia: float = 1.0) -> Nuclei:
    """Nuclei of ``kind`` at ``pts``; epithelial and tumour nuclei blend the benign and malignant shapes
    by ``atypia``; ``angles`` default to uniform ones."""
    n = len(pts)
    if angles is None:
        angles = rng.uniform(0, 2 * np.pi, n)
    if kind == LYMPHOCYTE:
        major = rng.uniform(2.6, 3.6, n)
        minor = major * rng.uniform(0.82, 1.0, n)
        amps = rng.uniform(0, 0.04, (n, 3))
        strength = rng.uniform(1.7, 2.3, n)
        look = np.zeros(n)
    elif kind == FIBROBLAST:
        major = rng.uniform(4.0, 6.5, n)
        minor = rng.uniform(1.1, 1.8, n)
        amps = rng.uniform(0, 0.05, (n, 3))
        strength = rng.uniform(1.2, 1.6, n)
        look = np.zeros(n)
    else:
        benign, malignant = _epithelial_shape(rng, n), _malignant_shape(rng, n)
        major, ratio, amps, strength = (b + atypia * (m - b) for b, m in zip(benign, malignant))
        minor = major * ratio
        look = np.full(n, float(atypia))
    return Nuclei(pts, np.stack([major, minor], 1), np.asarray(angles, dtype=float), np.full(n, kind),
                  major * (1 + amps.sum(1)), amps, rng.uniform(0, 2 * np.pi, (n, 3)), strength, look)


def _coverage(nuc: Nuclei, half: int) -> tuple:
    """Coverage ``(N, S, S)`` of each nucleus in its box of side ``S = 2 * half + 1`` around the rounded
    centre, and the normalised radius ``rho`` there.

    A nucleus covers the points with ``rho < 1 + sum_k amp_k cos(k phi + phase_k)`` (k = 2, 3, 4), where
    ``(rho, phi)`` are polar coordinates in the frame of its ellipse (``rho = 1`` on the ellipse);
    coverage falls from 1 to 0 over one pixel across that boundary (anti-aliasing).
    """
    offs = np.arange(-half, half + 1, dtype=float)
    frac = nuc.centres - np.rint(nuc.centres)
    dy = offs[None, :, None] - frac[:, 0, None, None]  # (N, S, 1)
    dx = offs[None, None, :] - frac[:, 1, None, None]  # (N, 1, S)
    cos, sin = np.cos(nuc.angles)[:, None, None], np.sin(nuc.angles)[:, None, None]
    major, minor = nuc.axes[:, 0, None, None], nuc.axes[:, 1, None, None]
    u = (dy * cos + dx * sin) / major  # (N, S, S)
    v = (-dy * sin + dx * cos) / minor
    rho = np.sqrt(u * u + v * v)
    c1, s1 = u / np.maximum(rho, 1e-9), v / np.maximum(rho, 1e-9)  # cos(phi), sin(phi)
    ck, sk = c1, s1
    edge = np.ones_like(rho)
    for k in range(3):  # harmonics 2, 3, 4 by the angle-addition formulas
        ck, sk = ck * c1 - sk * s1, sk * c1 + ck * s1
        amp, phase = nuc.amps[:, k, None, None], nuc.phases[:, k, None, None]
        edge += amp * (ck * np.cos(phase) - sk * np.sin(phase))
    radius = np.sqrt((major * c1) ** 2 + (minor * s1) ** 2)  # pixels from the centre to the ellipse
    return np.clip((edge - rho) * radius + 0.5, 0, 1), rho, u, v


def _draw_nuclei(rng, nuc: Nuclei, shape) -> tuple:
    """Haematoxylin density of all nuclei and the coverage of tumour-like nuclei, both ``shape``.

    Lymphocytes are dark and uniform; epithelial and tumour-like nuclei get a darker rim, a nucleolus and
    coarse chromatin in proportion to their atypia. Where nuclei overlap the denser one shows.
    """
    h, w = shape
    density = np.zeros((h + 2 * _PAD, w + 2 * _PAD))
    tumour = np.zeros_like(density)
    for kind, half in ((LYMPHOCYTE, 5), (FIBROBLAST, 8), (EPITHELIUM, 8), (TUMOUR, _BOX)):
        sel = nuc.kinds == kind
        if not sel.any():
            continue
        part = nuc.select(sel)
        alpha, rho, u, v = _coverage(part, half)
        dens = alpha * part.strength[:, None, None]
        if kind in (TUMOUR, EPITHELIUM):
            a = part.atypia[:, None, None]
            nucleolus = 0.9 * a * np.exp(-((u - 0.25) ** 2 + (v + 0.1) ** 2) / 0.03)
            dens = dens * (1 + a * (0.35 * np.minimum(rho, 1) ** 2 - 0.25)) + alpha * nucleolus
        corner = np.rint(part.centres).astype(int) - half + _PAD  # (N, 2) top-left of each box
        s = 2 * half + 1
        for i, (r, c) in enumerate(corner):
            if r < 0 or c < 0 or r + s > density.shape[0] or c + s > density.shape[1]:
                continue
            np.maximum(density[r:r + s, c:c + s], dens[i], out=density[r:r + s, c:c + s])
            if kind == TUMOUR:
                np.maximum(tumour[r:r + s, c:c + s], alpha[i], out=tumour[r:r + s, c:c + s])
    grain = 1 + 0.2 * rng.standard_normal(density.shape)  # chromatin texture
    return (density * grain)[_PAD:-_PAD, _PAD:-_PAD], tumour[_PAD:-_PAD, _PAD:-_PAD]


def _stain(rng, slide_rng) -> tuple:
    """Stain vectors and strengths of one image: a pseudo-slide's staining plus a little per image."""
    h_vec = _H_VECTOR + slide_rng.normal(0, 0.04, 3)
    e_vec = _E_VECTOR + slide_rng.normal(0, 0.04, 3)
    h_vec, e_vec = h_vec / np.linalg.norm(h_vec), e_vec / np.linalg.norm(e_vec)
    scale = slide_rng.uniform(0.8, 1.2, 2) * rng.uniform(0.93, 1.07, 2)
    return h_vec, e_vec, scale


def _render(rng, slide_rng, shape, nuc: Nuclei, tissue: _Tissue) -> tuple:
    """Compose stroma, glands, tumour cytoplasm and nuclei in optical density; returns (uint8 image,
    tumour nucleus coverage)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    wobble, fade, texture, pale = _smooth_noise(rng, shape, 5.0, 8.0, 10.0, 9.0)
    along = yy * np.cos(tissue.fibre_angle) + xx * np.sin(tissue.fibre_angle)
    fibres = (0.5 + 0.5 * np.sin(2 * np.pi * along / rng.uniform(4, 8) + 3.5 * wobble)) ** 4
    contrast = np.clip(0.5 + 0.4 * fade, 0.1, 1)  # fibres fade in and out
    eosin = rng.uniform(0.45, 0.65) * (0.6 + 0.4 * contrast * fibres) * (1 + 0.15 * texture)
    gaps = pale > rng.uniform(1.6, 2.6)
    eosin = np.where(ndimage.binary_dilation(gaps), 0.12 * eosin, eosin)
    haem = np.full(shape, 0.05)
    epithelium = ndimage.gaussian_filter(tissue.epithelium.astype(float), 1.0)
    lumen = ndimage.gaussian_filter(tissue.lumen.astype(float), 1.0)
    eosin = eosin * (1 - 0.3 * epithelium) + 0.3 * epithelium
    haem = haem + 0.08 * epithelium
    eosin = eosin * (1 - 0.85 * lumen)
    cytoplasm = tissue.atypia * ndimage.gaussian_filter(tissue.region.astype(float), 2.0)
    eosin = eosin * (1 - 0.4 * cytoplasm) + 0.35 * cytoplasm
    haem = haem + 0.25 * cytoplasm
    nuclei, tumour = _draw_nuclei(rng, nuc, shape)
    haem = haem + nuclei
    eosin = eosin * (1 - 0.6 * np.clip(nuclei, 0, 1))
    h_vec, e_vec, scale = _stain(rng, slide_rng)
    od = scale[0] * haem[..., None] * h_vec + scale[1] * eosin[..., None] * e_vec + 0.03
    rgb = 255.0 * np.exp(-od)
    rgb = ndimage.gaussian_filter(rgb, (0.5, 0.5, 0)) + rng.normal(0, 2.0, rgb.shape)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8), tumour > 0.5


def _glands(rng, shape, region: np.ndarray, difficulty: float) -> tuple:
    """Benign glands outside ``region``: ``(epithelial nuclei, lumen mask, epithelium mask, outer mask)``.

    A gland is an ellipse (semi-axes 9-18 and 0.45-0.8 of that, any orientation); its epithelial nuclei sit
    on the ellipse about 8 pixels apart, each elongated along the ellipse's normal; the lumen is the
    inner 70 %. There are ``Poisson(4 d * area / 96^2)`` of them; their nuclei are enlarged toward the
    malignant shape by ``U(0, 0.6 d)`` per gland (reactive atypia).
    """
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    lumen = np.zeros(shape, dtype=bool)
    band = np.zeros(shape, dtype=bool)
    parts = []
    for _ in range(rng.poisson(4.0 * difficulty * h * w / PATCH_SIZE ** 2)):
        centre = rng.uniform(0, [h, w])
        a = rng.uniform(9, 18)
        b = a * rng.uniform(0.45, 0.8)
        theta = rng.uniform(0, 2 * np.pi)
        dy, dx = yy - centre[0], xx - centre[1]
        u = (dy * np.cos(theta) + dx * np.sin(theta)) / a
        v = (-dy * np.sin(theta) + dx * np.cos(theta)) / b
        r2 = u * u + v * v
        t = np.linspace(0, 2 * np.pi, max(int(np.pi * (a + b) / 8.0), 5), endpoint=False)
        t = t + rng.uniform(0, 2 * np.pi)
        ring = np.stack([a * np.cos(t), b * np.sin(t)], 1)  # in the gland's frame (along, across)
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        pts = ring @ rot.T + centre + rng.normal(0, 0.6, ring.shape)
        normal = np.arctan2(a * np.sin(t), b * np.cos(t)) + theta  # direction of the ellipse's normal
        parts.append(_make_nuclei(rng, pts, EPITHELIUM, normal + rng.normal(0, 0.15, len(t)),
                                  atypia=rng.uniform(0, 0.6 * difficulty)))
        lumen |= r2 < 0.7 ** 2
        band |= (r2 >= 0.7 ** 2) & (r2 < 1.25 ** 2)
    keep_out = ndimage.binary_dilation(region, iterations=3) if region.any() else region
    lumen, band = lumen & ~keep_out, band & ~keep_out
    if not parts:
        return None, lumen, band, lumen | band
    nuc = Nuclei.concat(parts)
    return nuc.select(~_sample_at(keep_out, nuc.centres)), lumen, band, lumen | band


def _normal_nuclei(rng, shape, fibre_angle: float, lymphoid: float, difficulty: float) -> Nuclei:
    """Lymphocytes (dense where a smooth lymphoid field is high) and fibroblasts along the fibres."""
    field = _smooth_noise(rng, shape, 12.0) + lymphoid
    lym = _lattice(rng, shape, rng.uniform(7.0, 8.5), 0.3)
    keep = rng.random(len(lym)) < 1 / (1 + np.exp(-3 * _sample_at(field, lym)))
    fib = rng.uniform(-_BOX, np.array(shape) + _BOX, (rng.poisson((1 + 2 * difficulty) * np.prod(shape) / 900), 2))
    return Nuclei.concat([_make_nuclei(rng, lym[keep], LYMPHOCYTE),
                          _make_nuclei(rng, fib, FIBROBLAST, fibre_angle + rng.normal(0, 0.25, len(fib)))])


def _tissue(rng, shape, region: np.ndarray, difficulty: float, origin=None, lymphoid: float = 0.0) -> tuple:
    """Nuclei and tissue of one image: tumour-like nuclei crowded on a lattice inside ``region`` (through
    ``origin`` when given), glands and normal-like nuclei outside it."""
    fibre_angle = rng.uniform(0, np.pi)
    atypia = rng.uniform(1 - difficulty, 1)
    gland_nuclei, lumen, band, outer = _glands(rng, shape, region, difficulty)
    normal = _normal_nuclei(rng, shape, fibre_angle, lymphoid, difficulty)
    normal = normal.select(~_sample_at(region | outer, normal.centres))
    parts = [normal] + ([gland_nuclei] if gland_nuclei is not None else [])
    if region.any():
        pts = _lattice(rng, shape, rng.uniform(9.0, 11.0) + atypia * 2.5, 0.2, origin)
        pts = pts[np.all((pts >= 0) & (pts < np.array(shape)), axis=1)]
        parts.append(_make_nuclei(rng, pts[_sample_at(region, pts)], TUMOUR, atypia=atypia))
    return Nuclei.concat(parts), _Tissue(region, atypia, lumen, band, fibre_angle)


def _blob(rng, shape, centre, radius: float) -> np.ndarray:
    """A smooth random region around ``centre``: a radial bump plus a random field, thresholded."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    d2 = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2
    return np.exp(-d2 / (2 * radius ** 2)) + 0.25 * _smooth_noise(rng, shape, 8.0) > 0.5


def synthetic_patch(index: int, seed: int = 0, split: str = "train", difficulty: float = DEFAULT_DIFFICULTY,
                    label_noise: float = 0.0) -> SyntheticPatch:
    """Patch ``index`` of the synthetic PCam-like ``split`` (``"train"``, ``"valid"`` or ``"test"``).

    Label 1 (tumour in the centre): a tumour region grown around a point of the centre 32 x 32 with a
    tumour nucleus on that point. Label 0: normal tissue or, one time in three, a tumour region whose
    nuclei all stay farther than their reach from the centre 32 x 32. ``clean_label`` is read off the
    drawn tumour nuclei (any pixel in the centre), which the construction makes equal to the intended
    class; ``label`` is it flipped with probability ``label_noise``.

    Args:
        index, seed, split: which patch.
        difficulty: class overlap in [0, 1] (module docstring). Defaults to :data:`DEFAULT_DIFFICULTY`.
        label_noise: probability of a flipped ``label``. Defaults to 0.
    """
    difficulty, label_noise = check_difficulty(difficulty, label_noise)
    shape = (PATCH_SIZE, PATCH_SIZE)
    want = (index + int(_rng(seed, split, _PAIR, index // 2).integers(2))) % 2
    rng = _rng(seed, split, _PATCH, index)
    slide_rng = _rng(seed, split, _SLIDE, index // SLIDE_SIZE)
    origin = None
    if want == 1:
        origin = rng.uniform(CENTRE.start, CENTRE.stop - 1, 2)
        region = _blob(rng, shape, origin, rng.uniform(14 - 6 * difficulty, 30))
        region[tuple(np.rint(origin).astype(int))] = True
    elif rng.random() < 1 / 3:
        side = rng.integers(4)
        along = rng.uniform(0, PATCH_SIZE)
        centre = [(0.0, along), (PATCH_SIZE - 1.0, along), (along, 0.0), (along, PATCH_SIZE - 1.0)][side]
        region = _blob(rng, shape, centre, rng.uniform(12, 20))
        keep_out = slice(CENTRE.start - _REACH, CENTRE.stop + _REACH)
        region[keep_out, keep_out] = False
    else:
        region = np.zeros(shape, dtype=bool)
    nuc, tissue = _tissue(rng, shape, region, difficulty, origin, lymphoid=rng.uniform(-0.5, 1.5))
    image, tumour = _render(rng, slide_rng, shape, nuc, tissue)
    clean = int(tumour[CENTRE, CENTRE].any())
    if clean != want:
        raise RuntimeError(f"synthetic patch {index} (seed {seed}, {split}) broke its label rule")
    flip = label_noise > 0 and _rng(seed, split, _NOISE, index).random() < label_noise
    return SyntheticPatch(image, 1 - clean if flip else clean, clean, nuc, tumour, region)


def tile_shape(size) -> tuple:
    """``(H, W)`` of a tile ``size``; raises ``ValueError`` below 16 x 16."""
    h, w = (int(v) for v in size)
    if h < 16 or w < 16:
        raise ValueError(f"tile size must be at least (16, 16), got {tuple(size)}")
    return h, w


def synthetic_tile(index: int, seed: int = 0, size=(320, 320), split: str = "train",
                   difficulty: float = DEFAULT_DIFFICULTY) -> SyntheticTile:
    """Segmentation tile ``index``: ``size = (H, W)`` pixels, a random tumour region (none in about one
    tile of five) filled with tumour-like nuclei, normal-like tissue and glands elsewhere; ``mask`` is the
    region. ``difficulty`` as for :func:`synthetic_patch`."""
    difficulty, _ = check_difficulty(difficulty)
    h, w = tile_shape(size)
    rng = _rng(seed, split, _TILE, index)
    slide_rng = _rng(seed, split, _SLIDE, index // SLIDE_SIZE)
    field = _smooth_noise(rng, (h, w), min(rng.uniform(18, 40), min(h, w) / 4))
    threshold = np.inf if rng.random() < 0.2 else rng.uniform(-0.3, 1.2)
    region = field > threshold
    nuc, tissue = _tissue(rng, (h, w), region, difficulty, lymphoid=rng.uniform(-0.5, 1.0))
    image, _ = _render(rng, slide_rng, (h, w), nuc, tissue)
    return SyntheticTile(image, region.astype(np.int64), nuc)
