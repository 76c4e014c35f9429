"""Segmentation data options of the config: ``data.mask_suffix``, ``data.valid_fraction`` (no ``valid/``
folder) and ``data.grey_to_rgb``, and the errors that name the option which fixes them."""

import numpy as np
import pytest
from PIL import Image

from equipath.data import SegmentationDataset
from equipath.training.config import DataConfig
from equipath.training.datasets import segmentation_pairs


def _tree(root, n=5, grey=True, suffix="_mask"):
    for sub in ("images", "masks"):
        (root / "train" / sub).mkdir(parents=True)
    for k in range(n):
        pixels = np.full((20, 24), 10 * k, np.uint8) if grey else np.full((20, 24, 3), 10 * k, np.uint8)
        Image.fromarray(pixels).save(root / "train" / "images" / f"t{k}.png")
        Image.fromarray((np.arange(24)[None].repeat(20, 0) > 11).astype(np.uint8)).save(
            root / "train" / "masks" / f"t{k}{suffix}.png")


def test_mask_suffix_valid_fraction_and_grey_images(tmp_path):
    _tree(tmp_path)
    data = DataConfig(dataset="segmentation", mask_suffix="_mask", valid_fraction=0.4, grey_to_rgb=True)
    pairs = segmentation_pairs(tmp_path, data)
    assert len(pairs["train"]) == 3 and len(pairs["valid"]) == 2
    assert not {p[0] for p in pairs["train"]} & {p[0] for p in pairs["valid"]}  # held out, not shared
    assert all(m.name == f"{i.stem}_mask.png" for i, m in pairs["train"] + pairs["valid"])
    assert segmentation_pairs(tmp_path, data) == pairs  # seeded: the same split every time
    image, mask = SegmentationDataset(pairs["train"], 16, "grid", grey_to_rgb=True)[0]
    assert image.shape == (3, 16, 16) and bool((image[0] == image[1]).all() and (image[1] == image[2]).all())
    with pytest.raises(ValueError, match="data.grey_to_rgb"):
        SegmentationDataset(pairs["train"], 16, "grid")[0]


def test_errors_name_the_option_that_fixes_them(tmp_path):
    _tree(tmp_path, grey=False)
    with pytest.raises(FileNotFoundError, match="data.valid_fraction"):
        segmentation_pairs(tmp_path, DataConfig(dataset="segmentation", mask_suffix="_mask"))
    with pytest.raises(FileNotFoundError, match="no mask.*data.mask_suffix"):
        segmentation_pairs(tmp_path, DataConfig(dataset="segmentation", valid_fraction=0.2))  # suffix not given
    with pytest.raises(ValueError, match="data.valid_fraction"):
        DataConfig(valid_fraction=1.0)


def test_synth_writes_each_training_layout(tmp_path, capsys):
    from equipath.cli import main
    from equipath.data import OcelotDataset, PCamDataset

    assert main(["synth", "segmentation", "--out", str(tmp_path / "seg"), "--n", "3", "--n-valid", "2",
                 "--size", "48", "--no-progress"]) == 0
    pairs = segmentation_pairs(tmp_path / "seg", DataConfig(dataset="segmentation"))
    assert (len(pairs["train"]), len(pairs["valid"])) == (3, 2)
    assert (tmp_path / "seg" / "train" / "SYNTHETIC.txt").is_file()
    assert main(["synth", "ocelot", "--out", str(tmp_path / "oc"), "--n", "1", "--size", "96", "--no-progress"]) == 0
    for split in ("train", "val", "test"):
        image, mask = OcelotDataset(tmp_path / "oc", split)[0]
        assert image.shape == (3, 96, 96) and set(mask.unique().tolist()) <= {0, 1, 2} and mask.max() > 0
    assert main(["synth", "pcam", "--out", str(tmp_path / "pcam"), "--n", "4", "--no-progress"]) == 0
    assert PCamDataset(tmp_path / "pcam", "valid").synthetic
