"""OCELOT 2023 reader on a folder in the original layout, point <-> mask conversions, and bad files."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from equipath.data import OcelotDataset, mask_to_points, points_to_heatmap, points_to_mask
from equipath.data.ocelot import read_cell_csv, tissue_in_cell_frame

SIZE = 128  # the real patches are 1024 x 1024; the reader does not depend on the size
CELLS = {"001": [(20, 30, 1), (90, 70, 2), (100, 15, 2)], "002": [(64, 64, 1)]}


@pytest.fixture
def ocelot(tmp_path):
    rng = np.random.default_rng(0)
    pairs = {}
    for sid, cells in CELLS.items():
        for sub in ("images/train/cell", "images/train/tissue", "annotations/train/cell", "annotations/train/tissue"):
            (tmp_path / sub).mkdir(parents=True, exist_ok=True)
        for kind in ("cell", "tissue"):
            Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(
                tmp_path / "images/train" / kind / f"{sid}.jpg", quality=95)
        (tmp_path / "annotations/train/cell" / f"{sid}.csv").write_text("".join(f"{x},{y},{c}\n" for x, y, c in cells))
        tissue = np.ones((SIZE, SIZE), np.uint8)
        tissue[:, SIZE // 2:] = 2
        tissue[:4] = 255
        Image.fromarray(tissue).save(tmp_path / "annotations/train/tissue" / f"{sid}.png")
        pairs[sid] = {"slide_name": f"slide_{sid}", "organ": "kidney", "mpp_x": 0.25, "mpp_y": 0.25,
                      "cell": {"resized_mpp_x": 0.2, "resized_mpp_y": 0.2},
                      "tissue": {"resized_mpp_x": 0.8, "resized_mpp_y": 0.8},
                      "patch_x_offset": 0.5, "patch_y_offset": 0.25}
    (tmp_path / "metadata.json").write_text(json.dumps({"dataset_name": "ocelot2023", "sample_pairs": pairs}))
    return tmp_path


def test_reads_cells_as_disc_masks(ocelot):
    data = OcelotDataset(ocelot, "train")
    assert data.ids == ["001", "002"] and len(data) == 2
    image, mask = data[0]
    assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.float32 and mask.dtype == torch.int64
    assert mask[30, 20] == 1 and mask[70, 90] == 2 and mask[15, 100] == 2
    assert mask[30, 20 + 30] == 1 and mask[30, 20 + 31] == 0  # radius 30 (seed 002)
    sample = data.sample(0)
    assert sample.points.tolist() == [[20, 30], [90, 70], [100, 15]] and sample.classes.tolist() == [1, 2, 2]
    assert sample.tissue_mask.shape == (SIZE, SIZE) and sample.meta["organ"] == "kidney"


def test_gaussian_target(ocelot):
    image, target = OcelotDataset(ocelot, "train", target="gaussian", sigma=4)[0]
    assert target.shape == (2, SIZE, SIZE) and target.dtype == torch.float32
    assert target[0, 30, 20] == 1 and target[1, 70, 90] == 1 and target[1, 30, 20] < 1e-3
    assert abs(float(target[0, 30, 24]) - np.exp(-16 / 32)) < 1e-6


def test_touching_discs_split_by_the_nearest_cell():
    mask = points_to_mask([[10, 20], [30, 20]], [1, 2], (40, 40), radius=15)
    assert mask[20, 19] == 1 and mask[20, 21] == 2  # the bisector is x = 20
    assert (mask[20, :] > 0).all()  # x = 0..39 all within 15 px of a cell


def test_points_mask_points_round_trip():
    rng = np.random.default_rng(1)
    points = np.array([[40, 40], [160, 50], [50, 170], [170, 180], [105, 110]], float)
    classes = rng.integers(1, 3, len(points))
    mask = points_to_mask(points, classes, (220, 230), radius=30)
    found, found_classes, scores = mask_to_points(mask, min_distance=10)
    order = np.lexsort(found.T)
    expected = np.lexsort(points.T)
    assert np.allclose(found[order], points[expected]) and (found_classes[order] == classes[expected]).all()
    assert (scores == 1).all()
    heat = points_to_heatmap(points + 0.3, classes, (220, 230), sigma=5)
    found, found_classes, scores = mask_to_points(heat, min_distance=5, threshold=0.5)
    assert len(found) == len(points) and np.allclose(np.sort(scores), 1)


def test_probability_plateaus_with_smoothing():
    disc = (points_to_mask([[32, 32]], [1], (64, 64), radius=10) > 0).astype(np.float32)
    probs = np.stack([disc, np.zeros_like(disc)])
    points, classes, _ = mask_to_points(probs, min_distance=5, threshold=0.3, smooth=4)
    assert points.tolist() == [[32, 32]] and classes.tolist() == [1]
    with pytest.raises(ValueError, match="integer mask"):
        mask_to_points(np.zeros((4, 4), np.float32))


def test_tissue_in_cell_frame(ocelot):
    sample = OcelotDataset(ocelot, "train").sample(0)
    crop = tissue_in_cell_frame(sample.tissue_mask, sample.meta, (SIZE, SIZE))
    # the cell patch covers a quarter of the tissue side, centred at (0.25 H, 0.5 W): rows 16..47, cols 48..79
    assert crop.shape == (SIZE, SIZE)
    assert (crop[:, : SIZE // 2] == 1).all() and (crop[:, SIZE // 2:] == 2).all()
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    coded = tissue_in_cell_frame(yy * 1000 + xx, sample.meta, (SIZE, SIZE))
    assert coded[0, 0] == 16 * 1000 + 48 and coded[-1, -1] == 47 * 1000 + 79


def test_empty_cell_csv(ocelot):
    (ocelot / "annotations/train/cell/002.csv").write_text("")
    image, mask = OcelotDataset(ocelot, "train")[1]
    assert int(mask.sum()) == 0


BAD = {
    "missing metadata": (lambda r: (r / "metadata.json").unlink(), FileNotFoundError, r"metadata\.json does not exist"),
    "metadata without sample_pairs": (lambda r: (r / "metadata.json").write_text("{}"), ValueError,
                                      r"metadata\.json: expected JSON with a 'sample_pairs'"),
    "id not in metadata": (lambda r: (r / "metadata.json").write_text('{"sample_pairs": {"001": {}}}'), ValueError,
                           r"no sample_pairs entry for train image '002'"),
    "missing csv": (lambda r: (r / "annotations/train/cell/002.csv").unlink(), FileNotFoundError,
                    r"002\.csv does not exist"),
    "missing tissue mask": (lambda r: (r / "annotations/train/tissue/001.png").unlink(), FileNotFoundError,
                            r"001\.png does not exist"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_folders(ocelot, case):
    damage, error, message = BAD[case]
    damage(ocelot)
    with pytest.raises(error, match=message):
        OcelotDataset(ocelot, "train")


BAD_ROWS = {"3,4\n": "expected 'x,y,class'", "a,4,1\n": "expected 'x,y,class'",
            "3,4,5\n": "class 5, expected 1", f"{SIZE + 2},4,1\n": "outside the"}


@pytest.mark.parametrize("row", BAD_ROWS)
def test_bad_csv_rows(ocelot, row):
    (ocelot / "annotations/train/cell/001.csv").write_text("10,10,1\n" + row)
    with pytest.raises(ValueError, match=rf"001\.csv line 2: .*{BAD_ROWS[row]}"):
        OcelotDataset(ocelot, "train")[0]


def test_bad_tissue_values(ocelot):
    Image.fromarray(np.full((SIZE, SIZE), 7, np.uint8)).save(ocelot / "annotations/train/tissue/001.png")
    with pytest.raises(ValueError, match=r"001\.png: expected values 1 \(background\), 2 .* found 7"):
        OcelotDataset(ocelot, "train").sample(0)


def test_missing_split_and_bad_target(ocelot):
    with pytest.raises(FileNotFoundError, match="expected OCELOT 'val' cell images"):
        OcelotDataset(ocelot, "val")
    with pytest.raises(ValueError, match="target must be"):
        OcelotDataset(ocelot, "train", target="points")
    assert read_cell_csv(ocelot / "annotations/train/cell/002.csv")[0].tolist() == [[64, 64]]
