"""Training patches from annotated slides into the PCam format: balanced draws, tissue filter, the PCam label
rule (tumour in the centre 32 x 32), read back by the PCam reader."""

import csv

import numpy as np
import pytest
from PIL import Image

from equipath.data import PCamDataset
from equipath.wsi.annotations import Annotation, write_asap_xml
from equipath.wsi.sampling import sample_patches
from equipath.wsi.tissue import tissue_mask

pytestmark = pytest.mark.wsi

TUMOUR = (200, 180, 380, 330)  # x0, y0, x1, y1 in level-0 pixels


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    root = tmp_path_factory.mktemp("slides")
    rng = np.random.default_rng(0)
    tumour = np.full((520, 560, 3), 245, np.uint8)
    tumour[40:480, 40:520] = (215, 140, 200) + rng.integers(-10, 10, (440, 480, 3))  # pink tissue
    x0, y0, x1, y1 = TUMOUR
    tumour[y0:y1, x0:x1] = (120, 60, 150)  # purple, crowded nuclei
    Image.fromarray(tumour).save(root / "tumor_01.png")
    square = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)  # pixel k covers [k, k + 1)
    write_asap_xml(root / "tumor_01.xml", [Annotation("t", "_0", square)])
    normal = np.full((300, 300, 3), 245, np.uint8)
    normal[100:250, 60:280] = (220, 150, 205)
    Image.fromarray(normal).save(root / "normal_01.png")
    return root


def test_patches_are_balanced_tissue_filtered_and_labelled_by_the_centre(slides, tmp_path):
    sources = [(slides / "tumor_01.png", slides / "tumor_01.xml"), (slides / "normal_01.png", None)]
    sample_patches(sources, tmp_path, "train", 48, slide_mpp=0.972, seed=3, chunk=20, progress=False)
    data = PCamDataset(tmp_path, "train")
    assert len(data) == 48
    with open(tmp_path / "camelyonpatch_level_2_split_train_meta.csv") as f:
        meta = list(csv.DictReader(f))
    labels = np.array([float(data[i][1]) for i in range(48)])
    x0, y0, x1, y1 = TUMOUR
    for i, row in enumerate(meta):
        x, y = int(row["coord_x"]), int(row["coord_y"])
        centre_hits = (x + 32 < x1) and (x + 64 > x0) and (y + 32 < y1) and (y + 64 > y0)
        if row["wsi"] == "normal_01":
            centre_hits = False
        assert labels[i] == centre_hits, (i, row)
        assert (row["center_tumor_patch"] == "True") == centre_hits
        image = (data[i][0].numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8)
        assert tissue_mask(image).any()
    assert 0.3 < labels.mean() < 0.8
    assert {row["wsi"] for row in meta} == {"tumor_01", "normal_01"}


def test_sampling_is_deterministic_and_checks_its_inputs(slides, tmp_path):
    sources = [(slides / "tumor_01.png", slides / "tumor_01.xml")]
    for name in ("a", "b"):
        sample_patches(sources, tmp_path / name, "valid", 12, slide_mpp=0.972, seed=9, progress=False)
    a, b = PCamDataset(tmp_path / "a", "valid"), PCamDataset(tmp_path / "b", "valid")
    assert all(np.array_equal(a[i][0], b[i][0]) for i in range(12))
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((200, 200, 3), 250, np.uint8)).save(blank)
    with pytest.raises(ValueError, match="no tissue and no tumour annotation"):
        sample_patches([(blank, None)], tmp_path / "c", "train", 4, slide_mpp=0.972, progress=False)
    with pytest.raises(ValueError, match="no microns-per-pixel metadata"):
        sample_patches(sources, tmp_path / "d", "train", 4, progress=False)
