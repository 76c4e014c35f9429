"""Data regimes: nested, seeded fractions of a training set (seed 000 and 001: 100, 50, 25 and 12.5 %).

One random order of the training set is drawn from ``seed``; the regime of fraction ``f`` is its first
``round(f * n)`` items, so every smaller regime is a subset of every larger one. With ``slides`` (one slide
name per patch) the order is drawn over slides and a regime keeps every patch of its first
``round(f * n_slides)`` slides, as seed 000 removes whole WSIs.

Example:
    >>> from equipath.data import regime_indices
    >>> half = regime_indices(10, 0.5, seed=0)
    >>> quarter = regime_indices(10, 0.25, seed=0)
    >>> len(half), len(quarter), set(quarter) <= set(half)
    (5, 2, True)
"""

import numpy as np

__all__ = ["regime_indices", "REGIME_FRACTIONS"]

REGIME_FRACTIONS = (1.0, 0.5, 0.25, 0.125)


def regime_indices(n: int, fraction: float, seed: int = 0, slides=None) -> np.ndarray:
    """Sorted int64 indices of the ``fraction`` regime of a training set of ``n`` items.

    Args:
        n: size of the full training set.
        fraction: in (0, 1]; at least one item (or slide) is kept.
        seed: the random order; the same seed gives nested regimes. Defaults to 0.
        slides: ``(n,)`` slide name (or id) per item, to select by slide. Defaults to None (by item).
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"regime_indices needs n >= 1, got {n}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    if slides is None:
        order = rng.permutation(n)
        return np.sort(order[:max(1, round(fraction * n))]).astype(np.int64)
    slides = np.asarray(slides)
    if slides.shape != (n,):
        raise ValueError(f"slides must have shape ({n},), one per item, got {slides.shape}")
    names, slide_of = np.unique(slides, return_inverse=True)
    chosen = rng.permutation(len(names))[:max(1, round(fraction * len(names)))]
    return np.flatnonzero(np.isin(slide_of, chosen)).astype(np.int64)
