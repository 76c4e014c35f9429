"""BreakHis folder tree (original naming) and prediction by the maximum over random crops."""

import numpy as np
import pytest
import torch
from PIL import Image

from equipath.data import BreakHisDataset, predict_max_over_crops

FILES = [
    ("benign", "adenosis", "SOB_B_A_14-22549AB", "40X", "SOB_B_A-14-22549AB-40-001.png"),
    ("benign", "adenosis", "SOB_B_A_14-22549AB", "100X", "SOB_B_A-14-22549AB-100-001.png"),
    ("malignant", "ductal_carcinoma", "SOB_M_DC_14-2523", "40X", "SOB_M_DC-14-2523-40-010.png"),
    ("malignant", "ductal_carcinoma", "SOB_M_DC_14-2523", "40X", "SOB_M_DC-14-2523-40-011.png"),
]


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "BreaKHis_v1" / "histology_slides" / "breast"
    for k, (label, kind, patient, mag, name) in enumerate(FILES):
        folder = root / label / "SOB" / kind / patient / mag
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((46, 70, 3), 10 * k, np.uint8)).save(folder / name)
    return tmp_path / "BreaKHis_v1"


def test_labels_magnifications_patients(tree):
    data = BreakHisDataset(tree)
    assert data.labels.tolist() == [0, 0, 1, 1]
    assert data.magnifications == ["100X", "40X", "40X", "40X"]
    assert data.patients == ["14-22549AB", "14-22549AB", "14-2523", "14-2523"]
    image, label = data[2]
    assert image.shape == (3, 46, 70) and image.dtype == torch.float32 and float(label) == 1.0
    assert torch.allclose(image, torch.full_like(image, 20 / 255))


def test_magnification_filter(tree):
    data = BreakHisDataset(tree, magnification="40x")
    assert len(data) == 3 and set(data.magnifications) == {"40X"}
    with pytest.raises(ValueError, match="no images at magnification '200X'"):
        BreakHisDataset(tree, magnification="200X")


def test_plain_names_use_folders(tmp_path):
    for label in ("Benign", "Malignant"):
        d = tmp_path / label / "patient_7" / "400X"
        d.mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / "img.png")
    data = BreakHisDataset(tmp_path)
    assert data.labels.tolist() == [0, 1] and data.patients == ["patient_7", "patient_7"]
    assert data.magnifications == ["400X", "400X"]


def test_bad_trees(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        BreakHisDataset(tmp_path / "nothing")
    with pytest.raises(ValueError, match="found none"):
        BreakHisDataset(tmp_path)
    (tmp_path / "unsorted").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "unsorted" / "x.png")
    with pytest.raises(ValueError, match=r"x\.png: expected exactly one folder named 'benign' or 'malignant'"):
        BreakHisDataset(tmp_path)


def test_max_over_crops_matches_brute_force():
    image = torch.rand(3, 46, 70)
    calls = []

    def model_fn(batch):
        calls.append(batch.shape)
        return batch[:, 0].amax((1, 2))  # any callable returning probabilities (B,)

    best = predict_max_over_crops(model_fn, image, n_crops=1000, crop=16, seed=5, batch_size=128)
    assert sum(c[0] for c in calls) == 1000 and all(c[1:] == (3, 16, 16) for c in calls)
    rng = np.random.default_rng(5)
    ys, xs = rng.integers(0, 46 - 16 + 1, 1000), rng.integers(0, 70 - 16 + 1, 1000)
    expected = max(float(image[0, y:y + 16, x:x + 16].max()) for y, x in zip(ys, xs))
    assert best == expected
    assert predict_max_over_crops(model_fn, image, n_crops=50, crop=16, seed=5) == \
        predict_max_over_crops(model_fn, image, n_crops=50, crop=16, seed=5)


def test_max_over_crops_checks():
    image = torch.rand(3, 20, 20)
    with pytest.raises(ValueError, match="crop 32 is larger than the 20x20 image"):
        predict_max_over_crops(lambda b: b.mean((1, 2, 3)), image, crop=32)
    with pytest.raises(ValueError, match=r"model_fn must return probabilities of shape \(10,\)"):
        predict_max_over_crops(lambda b: torch.zeros(len(b), 2), image, n_crops=10, crop=8)
    assert predict_max_over_crops(lambda b: torch.ones(len(b), 1) * 0.25, image, n_crops=3, crop=8) == 0.25


def test_patient_splits_are_patient_wise_70_30_and_repeatable():
    """82 patients like BreakHis (24 benign, 58 malignant), 3 to 40 images each: in each of the 5 repetitions
    no patient is in both folds, 70 % of each class's patients train, and the splits differ."""
    from equipath.data import patient_splits

    rng = np.random.default_rng(0)
    patients, labels = [], []
    for p in range(82):
        n = rng.integers(3, 40)
        patients += [f"p{p}"] * n
        labels += [int(p >= 24)] * n
    patients, labels = np.array(patients), np.array(labels)
    splits = patient_splits(patients, labels)
    assert len(splits) == 5
    for split in splits:
        train, test = set(patients[split["train"]]), set(patients[split["test"]])
        assert not train & test and len(train | test) == 82
        assert len(split["train"]) + len(split["test"]) == len(patients)
        assert sum(int(p[1:]) < 24 for p in train) == round(0.7 * 24) == 17  # benign patients
        assert sum(int(p[1:]) >= 24 for p in train) == round(0.7 * 58) == 41  # malignant patients
    assert len({tuple(s["train"]) for s in splits}) == 5
    again = patient_splits(patients, labels)
    assert all((a["train"] == b["train"]).all() for a, b in zip(splits, again))
    with pytest.raises(ValueError, match="both classes"):
        patient_splits(["a", "a", "b", "c"], [0, 1, 0, 1])


def test_patient_splits_are_the_same_at_every_magnification(tmp_path):
    from equipath.data import patient_splits

    for label, kind, code in (("benign", "adenosis", "B_A"), ("malignant", "ductal_carcinoma", "M_DC")):
        for p in range(5):
            for mag in ("40", "100"):
                folder = tmp_path / label / "SOB" / kind / f"SOB_{code}_14-{p}{code[0]}" / f"{mag}X"
                folder.mkdir(parents=True)
                name = f"SOB_{code}-14-{p}{code[0]}-{mag}-001.png"  # patient 14-{p}{B|M} from the file name
                Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / name)
    train = {}
    for mag in ("40X", "100X"):
        data = BreakHisDataset(tmp_path, mag)
        assert len(set(data.patients)) == 10
        train[mag] = [set(np.array(data.patients)[s["train"]]) for s in patient_splits(data.patients, data.labels)]
    assert train["40X"] == train["100X"]
    assert all(len(t) == 2 * round(0.7 * 5) for t in train["40X"])


def test_breakhis_resolution_matching(tree):
    from equipath.data import breakhis_mpp

    assert breakhis_mpp("40X") == pytest.approx(6.5 / (4 * 3.3)) == pytest.approx(0.4924, abs=1e-4)
    assert breakhis_mpp("100x") == pytest.approx(0.1970, abs=1e-4)
    data = BreakHisDataset(tree, "40X", mpp=0.972)  # to PCam's resolution: 46 x 70 -> 23 x 35
    assert tuple(data[0][0].shape) == (3, round(46 * 0.4924 / 0.972), round(70 * 0.4924 / 0.972)) == (3, 23, 35)
    with pytest.raises(ValueError, match="'40x'|'40X'"):
        breakhis_mpp("forty")


def test_split_accuracy_image_and_patient_level(tmp_path):
    """Patient b1 (benign): 3 images, one bright (misread as malignant); patient m1 (malignant): 1 dark image
    (misread as benign), 1 bright. Image level: 3 right of 5; patient level: mean(2/3, 1/2) = 7/12."""
    from equipath.data import split_accuracy

    values = {("benign", "b1"): [10, 20, 250], ("malignant", "m1"): [15, 240]}
    for (label, patient), levels in values.items():
        folder = tmp_path / label / patient / "40X"
        folder.mkdir(parents=True)
        for k, v in enumerate(levels):
            Image.fromarray(np.full((12, 12, 3), v, np.uint8)).save(folder / f"{k}.png")
    data = BreakHisDataset(tmp_path)
    result = split_accuracy(lambda b: b.mean((1, 2, 3)), data, range(len(data)), n_crops=3, crop=8)
    assert result == {"accuracy": 3 / 5, "patient_accuracy": pytest.approx(7 / 12), "n_images": 5, "n_patients": 2}
