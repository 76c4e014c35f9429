"""Image / mask pairs from folders and CSV lists (PNG and TIFF), random and grid patch sampling, errors."""

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from torch.utils.data import DataLoader

from equipath.data import SegmentationDataset, csv_pairs, folder_pairs
from equipath.data.segmentation import read_image, read_mask


def _coded(h, w):
    """An image whose pixels encode their position, and the mask that is a function of the image."""
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.stack([yy % 256, xx % 256, (yy // 256) * 16 + xx // 256], -1).astype(np.uint8)
    mask = ((yy // 7 + xx // 5) % 3).astype(np.uint8)
    return image, mask


def _mask_of(image_patch: torch.Tensor) -> torch.Tensor:
    yx = (image_patch[:2] * 255).round().long()
    hi = (image_patch[2] * 255).round().long()
    y, x = yx[0] + 256 * (hi // 16), yx[1] + 256 * (hi % 16)
    return (y // 7 + x // 5) % 3


@pytest.fixture
def folders(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    image, mask = _coded(300, 340)
    Image.fromarray(image).save(tmp_path / "images" / "a.png")
    Image.fromarray(mask).save(tmp_path / "masks" / "a_mask.png")
    image, mask = _coded(290, 290)
    tifffile.imwrite(tmp_path / "images" / "b.tif", image)
    tifffile.imwrite(tmp_path / "masks" / "b_mask.tiff", mask)
    return tmp_path


def test_folder_pairs_png_and_tiff(folders):
    pairs = folder_pairs(folders / "images", folders / "masks", mask_suffix="_mask")
    assert [(i.name, m.name) for i, m in pairs] == [("a.png", "a_mask.png"), ("b.tif", "b_mask.tiff")]
    data = SegmentationDataset(pairs)
    image, mask = data[1]
    assert image.shape == (3, 290, 290) and image.dtype == torch.float32 and mask.dtype == torch.int64
    assert torch.equal(mask, _mask_of(image))


def test_csv_pairs_relative_to_the_csv(folders):
    (folders / "list.csv").write_text("image,mask\nimages/b.tif,masks/b_mask.tiff\nimages/a.png,masks/a_mask.png\n")
    pairs = csv_pairs(folders / "list.csv")
    assert [p[0].name for p in pairs] == ["b.tif", "a.png"]
    assert pairs[0][0] == folders / "images" / "b.tif"


def test_random_patches_inside_and_aligned(folders):
    data = SegmentationDataset(folder_pairs(folders / "images", folders / "masks", "_mask"), patch_size=64,
                               patches_per_image=5)
    assert len(data) == 10
    corners = set()
    for k in range(len(data)):
        image, mask = data[k]
        assert image.shape == (3, 64, 64) and mask.shape == (64, 64)
        assert torch.equal(mask, _mask_of(image))  # the mask is cut at the same place as the image
        corners.add((int((image[0, 0, 0] * 255).round()), int((image[1, 0, 0] * 255).round())))
    assert len(corners) > 5  # positions vary


def test_grid_covers_every_pixel_once_flush_with_the_border(folders):
    pairs = folder_pairs(folders / "images", folders / "masks", "_mask")
    data = SegmentationDataset(pairs, patch_size=(128, 96), sampling="grid")
    coverage = {k: np.zeros(s, dtype=int) for k, s in enumerate(data.sizes)}
    for k, y, x in data.grid:
        coverage[k][y:y + 128, x:x + 96] += 1
    for k, cov in coverage.items():
        assert cov.min() >= 1
    assert max(y for k, y, _ in data.grid if k == 0) == 300 - 128
    assert max(x for k, _, x in data.grid if k == 0) == 340 - 96
    assert len(data) == len(data.grid) == 3 * 4 + 3 * 4
    image, mask = data[len(data) - 1]
    assert image.shape == (3, 128, 96) and torch.equal(mask, _mask_of(image))
    assert len(SegmentationDataset(pairs, patch_size=64, sampling="grid", stride=32)) == 9 * 10 + 9 * 9


def test_label_map(folders):
    pairs = folder_pairs(folders / "images", folders / "masks", "_mask")
    mapped = SegmentationDataset(pairs, label_map={0: 0, 1: 0, 2: 1})
    assert set(mapped[0][1].unique().tolist()) == {0, 1}
    with pytest.raises(ValueError, match=r"a_mask\.png: mask value 2 is not in label_map"):
        SegmentationDataset(pairs, label_map={0: 0, 1: 1})[0]


def test_random_sampling_with_two_workers(folders):
    data = SegmentationDataset(folder_pairs(folders / "images", folders / "masks", "_mask"), patch_size=32,
                               patches_per_image=4)
    for images, masks in DataLoader(data, batch_size=4, num_workers=2):
        assert images.shape == (4, 3, 32, 32)
        assert all(torch.equal(m, _mask_of(i)) for i, m in zip(images, masks))


def test_missing_mask(folders):
    (folders / "masks" / "b_mask.tiff").unlink()
    with pytest.raises(FileNotFoundError, match=r"b\.tif: no mask, expected .*b_mask"):
        folder_pairs(folders / "images", folders / "masks", "_mask")


def test_size_mismatch_names_both_files(folders):
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(folders / "masks" / "a_mask.png")
    with pytest.raises(ValueError, match=r"a_mask\.png: mask is 10x10 but image .*a\.png is 300x340"):
        SegmentationDataset(folder_pairs(folders / "images", folders / "masks", "_mask"))


def test_patch_larger_than_image(folders):
    with pytest.raises(ValueError, match=r"a\.png: image is 300x340, smaller than the patch size 320x320"):
        SegmentationDataset(folder_pairs(folders / "images", folders / "masks", "_mask"), patch_size=320)


def test_bad_image_and_mask_files(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "grey.png")
    with pytest.raises(ValueError, match=r"grey\.png: expected an RGB\(A\) image"):
        read_image(tmp_path / "grey.png")
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 1] = 1
    Image.fromarray(rgb).save(tmp_path / "colour_mask.png")
    with pytest.raises(ValueError, match=r"colour_mask\.png: expected a single-channel mask"):
        read_mask(tmp_path / "colour_mask.png")
    Image.fromarray(np.dstack([np.full((8, 8), 2, np.uint8)] * 3)).save(tmp_path / "grey_rgb_mask.png")
    assert read_mask(tmp_path / "grey_rgb_mask.png").tolist() == np.full((8, 8), 2).tolist()
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match=r"broken\.png: not a readable image"):
        read_image(tmp_path / "broken.png")
    tifffile.imwrite(tmp_path / "wide.tif", np.zeros((8, 8, 3), np.uint16) + 65535)
    assert read_image(tmp_path / "wide.tif").max() == 1.0


def test_bad_csv(folders):
    (folders / "list.csv").write_text("img,msk\na,b\n")
    with pytest.raises(ValueError, match=r"list\.csv: expected a header with columns 'image' and 'mask'"):
        csv_pairs(folders / "list.csv")
    (folders / "list.csv").write_text("image,mask\nimages/a.png,masks/nope.png\n")
    with pytest.raises(FileNotFoundError, match=r"list\.csv line 2: .*nope\.png does not exist"):
        csv_pairs(folders / "list.csv")


def test_bad_arguments(folders):
    pairs = folder_pairs(folders / "images", folders / "masks", "_mask")
    with pytest.raises(ValueError, match="sampling must be"):
        SegmentationDataset(pairs, patch_size=32, sampling="sliding")
    with pytest.raises(ValueError, match="at least one"):
        SegmentationDataset([])
