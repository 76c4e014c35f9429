"""The procedural H&E generator: determinism, balance, the label rule (checked from the cell layout),
and its outputs read back by the real loaders."""

import numpy as np
import pytest
import torch
from PIL import Image

from equipath.data import (PCamDataset, SegmentationDataset, SyntheticSegmentation, csv_pairs, folder_pairs,
                           write_preview, write_synthetic_pcam, write_synthetic_tiles)
from equipath.data.synthetic import (CENTRE, EPITHELIUM, FIBROBLAST, LYMPHOCYTE, SLIDE_SIZE, TUMOUR,
                                     synthetic_patch, synthetic_tile)

N = 40


@pytest.fixture(scope="module", params=[0.0, 1.0], ids=["easy", "hard"])
def patches(request):
    return [synthetic_patch(i, seed=3, difficulty=request.param) for i in range(N)]


@pytest.fixture(scope="module")
def easy():
    return [synthetic_patch(i, seed=3, difficulty=0.0) for i in range(N)]


def test_deterministic_per_index_seed_and_split(easy):
    patches = easy
    again = [synthetic_patch(i, seed=3, difficulty=0.0) for i in reversed(range(6))][::-1]  # other order
    for a, b in zip(patches, again):
        assert np.array_equal(a.image, b.image) and a.label == b.label
        assert np.array_equal(a.nuclei.centres, b.nuclei.centres)
    assert not np.array_equal(patches[0].image, synthetic_patch(0, seed=4).image)
    assert not np.array_equal(patches[0].image, synthetic_patch(0, seed=3, split="valid").image)


def test_balanced(patches):
    labels = np.array([p.label for p in patches])
    assert labels.sum() == N // 2
    assert (labels[0::2] + labels[1::2] == 1).all()  # one positive in every pair of indices


def test_label_rule_from_the_cell_layout(patches):
    """Label 1 exactly when a tumour-like nucleus lies in the centre 32x32: checked from the layout alone."""
    lo, hi = CENTRE.start, CENTRE.stop - 1
    for p in patches:
        tumour = p.nuclei.kinds == TUMOUR
        centres, reach = p.nuclei.centres[tumour], p.nuclei.reach[tumour]
        inside = np.all((np.rint(centres) >= lo) & (np.rint(centres) <= hi), axis=1)
        gap = np.hypot(*(np.maximum(0, np.maximum(lo - centres, centres - hi)).T))  # distance to the square
        if p.label == 1:
            assert inside.any()
        else:
            assert (gap > reach).all()
        assert bool(p.tumour_nuclei[CENTRE, CENTRE].any()) == bool(p.label)


def test_drawn_tumour_nuclei_lie_within_their_reach(patches):
    for p in patches[:10]:
        tumour = p.nuclei.kinds == TUMOUR
        rows, cols = np.nonzero(p.tumour_nuclei)
        if not len(rows):
            continue
        d = np.hypot(rows[:, None] - p.nuclei.centres[tumour, 0], cols[:, None] - p.nuclei.centres[tumour, 1])
        assert (d <= p.nuclei.reach[tumour]).any(axis=1).all()


def test_cell_types_look_like_their_description(easy):
    patches = easy
    nuclei = [p.nuclei for p in patches]
    kinds = np.concatenate([n.kinds for n in nuclei])
    axes = np.concatenate([n.axes for n in nuclei])
    area = axes.prod(1)
    elong = axes[:, 0] / axes[:, 1]
    assert area[kinds == TUMOUR].mean() > 3 * area[kinds == LYMPHOCYTE].mean()  # larger
    assert elong[kinds == TUMOUR].mean() > elong[kinds == LYMPHOCYTE].mean()  # less round
    assert elong[kinds == FIBROBLAST].min() > 2  # thin
    angles = np.concatenate([n.angles[n.kinds == TUMOUR] for n in nuclei]) % np.pi
    assert np.histogram(angles, 4, (0, np.pi))[0].min() > 0.1 * len(angles)  # random orientation
    hard_negatives = [p for p in patches if p.label == 0 and (p.nuclei.kinds == TUMOUR).any()]
    assert hard_negatives  # tumour outside the centre does not make a positive
    assert not any((n.kinds == EPITHELIUM).any() for n in nuclei)  # no glands at difficulty 0


def test_images_look_like_h_and_e(easy):
    patches = easy
    images = np.stack([p.image for p in patches]).astype(float)
    r, g, b = images[..., 0].mean(), images[..., 1].mean(), images[..., 2].mean()
    assert r > b > g  # pink-purple: green absorbed most
    pos = np.stack([p.image for p in patches if p.label == 1])[:, CENTRE, CENTRE].mean()
    neg = np.stack([p.image for p in patches if p.label == 0])[:, CENTRE, CENTRE].mean()
    assert pos < neg  # tumour centres are darker (crowded, hyperchromatic nuclei)


def test_tiles_deterministic_with_masks():
    a, b = synthetic_tile(2, seed=1, size=(48, 64)), synthetic_tile(2, seed=1, size=(48, 64))
    assert a.image.shape == (48, 64, 3) and a.mask.shape == (48, 64) and a.mask.dtype == np.int64
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    masks = [synthetic_tile(i, seed=1, size=(48, 64)).mask for i in range(8)]
    assert set(np.unique(np.concatenate([m.ravel() for m in masks]))) == {0, 1}
    tile = synthetic_tile(0, seed=5, size=(64, 64))
    for (r, c), kind in zip(np.rint(tile.nuclei.centres).astype(int), tile.nuclei.kinds):
        if 0 <= r < 64 and 0 <= c < 64:
            assert (kind == TUMOUR) == bool(tile.mask[r, c])  # tumour nuclei exactly in the tumour region
    with pytest.raises(ValueError, match="at least"):
        synthetic_tile(0, size=(8, 8))


def test_written_pcam_is_read_by_the_real_loader_and_independent_of_workers(tmp_path):
    write_synthetic_pcam(tmp_path / "a", {"train": 12, "test": 4}, seed=2, progress=False, chunk=5)
    write_synthetic_pcam(tmp_path / "b", {"train": 12}, seed=2, progress=False, workers=2, chunk=4)
    a, b = PCamDataset(tmp_path / "a", "train"), PCamDataset(tmp_path / "b", "train")
    assert a.synthetic and len(a) == 12 and a.labels.sum() == 6
    for i in (0, 5, 11):
        assert np.array_equal((a[i][0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8),
                              synthetic_patch(i, seed=2).image)
        assert a[i][1] == b[i][1] and (a[i][0] == b[i][0]).all()
    assert a.slides.tolist() == [f"synthetic_train_{i // SLIDE_SIZE:05d}" for i in range(12)]
    assert a.meta["center_tumor_patch"].astype(int).tolist() == a.labels.tolist()
    assert len(PCamDataset(tmp_path / "a", "test")) == 4
    with pytest.raises(ValueError, match="unknown split 'val'"):
        write_synthetic_pcam(tmp_path, {"val": 3}, progress=False)


def test_written_tiles_read_by_the_segmentation_loader(tmp_path):
    csv_path = write_synthetic_tiles(tmp_path, 3, size=(40, 56), seed=1, progress=False)
    assert "SYNTHETIC" in (tmp_path / "SYNTHETIC.txt").read_text()
    assert csv_pairs(csv_path) == folder_pairs(tmp_path / "images", tmp_path / "masks")
    image, mask = SegmentationDataset(csv_pairs(csv_path))[1]
    direct_image, direct_mask = SyntheticSegmentation(3, size=(40, 56), seed=1)[1]
    assert (image == direct_image).all() and (mask == direct_mask).all()
    assert mask.dtype == direct_mask.dtype == torch.int64


def test_preview_picture(tmp_path):
    path = write_preview(tmp_path / "preview.png", n_per_class=4, seed=0)
    with Image.open(path) as im:
        assert im.width > 300 and im.height > 100
    assert [p.name for p in tmp_path.iterdir()] == ["preview.png"]


def test_difficulty_blends_tumour_nuclei_toward_benign_glands():
    """Documented direction: harder means smaller, more regular tumour nuclei and glands whose nuclei
    overlap them in size; difficulty 0 has no glands (checked above) and larger tumour nuclei."""
    def layout(difficulty):
        nuclei = [synthetic_patch(i, seed=5, difficulty=difficulty).nuclei for i in range(24)]
        kinds = np.concatenate([n.kinds for n in nuclei])
        area = np.concatenate([n.axes.prod(1) for n in nuclei])
        atypia = np.concatenate([n.atypia for n in nuclei])
        return kinds, area, atypia

    kinds0, area0, atypia0 = layout(0.0)
    kinds1, area1, atypia1 = layout(1.0)
    assert area1[kinds1 == TUMOUR].mean() < 0.8 * area0[kinds0 == TUMOUR].mean()
    assert atypia0[kinds0 == TUMOUR].min() == 1.0 and atypia1[kinds1 == TUMOUR].min() < 0.3
    gland = area1[kinds1 == EPITHELIUM]
    assert len(gland) > 20 and gland.max() > np.percentile(area1[kinds1 == TUMOUR], 25)  # classes overlap
    assert synthetic_patch(0, seed=5, difficulty=0.4, label_noise=0.3).clean_label in (0, 1)
    flipped = [synthetic_patch(i, seed=5, difficulty=0.0, label_noise=0.4) for i in range(40)]
    assert 0 < sum(p.label != p.clean_label for p in flipped) < 40
    with pytest.raises(ValueError, match="difficulty"):
        synthetic_patch(0, difficulty=1.5)


def _centre_features(image: np.ndarray) -> np.ndarray:
    """Grey-level statistics and dark-blob sizes of the centre 32 x 32, a simple classifier's features."""
    from scipy import ndimage

    grey = image[CENTRE, CENTRE].astype(float).mean(-1) / 255
    blobs, n = ndimage.label(grey < 0.45)
    areas = np.bincount(blobs.ravel())[1:] if n else np.zeros(1)
    return np.array([grey.mean(), grey.std(), (grey < 0.45).mean(), (grey < 0.3).mean(), areas.max(), areas.mean()])


def _nearest_centroid_accuracy(difficulty: float, n: int) -> float:
    train = [synthetic_patch(i, seed=0, split="train", difficulty=difficulty) for i in range(n)]
    test = [synthetic_patch(i, seed=0, split="test", difficulty=difficulty) for i in range(n)]
    x, y = np.stack([_centre_features(p.image) for p in train]), np.array([p.label for p in train])
    xt, yt = np.stack([_centre_features(p.image) for p in test]), np.array([p.label for p in test])
    mean, std = x.mean(0), x.std(0) + 1e-9
    x, xt = (x - mean) / std, (xt - mean) / std
    c0, c1 = x[y == 0].mean(0), x[y == 1].mean(0)
    pred = ((xt - c1) ** 2).sum(1) < ((xt - c0) ** 2).sum(1)
    return float((pred == yt).mean())


@pytest.mark.slow
def test_difficulty_lowers_a_simple_classifiers_accuracy():
    """A nearest-centroid classifier on centre grey levels and dark-blob sizes (160 train / 160 test
    patches): accurate at difficulty 0, markedly less so at 1 (measured 0.87 vs 0.74 on 200 / 200)."""
    easy, hard = _nearest_centroid_accuracy(0.0, 160), _nearest_centroid_accuracy(1.0, 160)
    assert easy > 0.8 and easy - hard > 0.06, (easy, hard)
