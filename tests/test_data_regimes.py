"""Data regimes: nested, seeded fractions, by patch or by slide."""

import numpy as np
import pytest

from equipath.data import REGIME_FRACTIONS, regime_indices


def test_nested_sizes_and_seeded():
    n = 1003
    regimes = [regime_indices(n, f, seed=7) for f in REGIME_FRACTIONS]
    assert [len(r) for r in regimes] == [1003, 502, 251, 125]
    for big, small in zip(regimes, regimes[1:]):
        assert set(small) <= set(big)
    assert all((np.diff(r) > 0).all() and r.dtype == np.int64 for r in regimes)
    assert np.array_equal(regime_indices(n, 0.25, seed=7), regimes[2])
    assert not np.array_equal(regime_indices(n, 0.25, seed=8), regimes[2])


def test_tiny_fraction_keeps_one():
    assert len(regime_indices(3, 0.125)) == 1


def test_by_slide_keeps_whole_slides_nested():
    slides = np.repeat([f"s{i}" for i in range(16)], np.arange(1, 17))  # slides of different sizes
    n = len(slides)
    previous = None
    for f in REGIME_FRACTIONS:
        idx = regime_indices(n, f, seed=1, slides=slides)
        kept = set(slides[idx])
        assert len(kept) == 16 * f
        assert sorted(idx.tolist()) == [i for i in range(n) if slides[i] in kept]  # whole slides
        if previous is not None:
            assert kept <= previous
        previous = kept


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
        regime_indices(10, 0)
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
        regime_indices(10, 1.5)
    with pytest.raises(ValueError, match="n >= 1"):
        regime_indices(0, 0.5)
    with pytest.raises(ValueError, match=r"slides must have shape \(10,\)"):
        regime_indices(10, 0.5, slides=["a"] * 9)
