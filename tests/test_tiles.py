"""Seed 001's tiles (equipath.wsi.tiles): split by slide, balanced, masks equal to the annotation raster."""

import csv

import numpy as np
import pytest
from PIL import Image

from equipath.cli import main
from equipath.data.segmentation import folder_pairs
from equipath.wsi.annotations import Annotation, rasterize, read_annotations, write_asap_xml
from equipath.wsi.geojson import label_features, write_geojson
from equipath.wsi.tiles import build_tiles, split_slides


def _slides(root, n=10):
    """``n`` slides (PNG, 420 x 400) with a tumour polygon each, half as ASAP XML, half as QuPath GeoJSON."""
    rng = np.random.default_rng(0)
    sources = []
    for k in range(n):
        image = np.full((400, 420, 3), 240, np.uint8)
        image[20:380, 20:400] = np.clip(np.array([200, 120, 190]) + rng.normal(0, 20, (360, 380, 3)), 0, 255)
        Image.fromarray(image).save(root / f"slide{k}.png")
        x0, y0 = 60 + 10 * k, 80
        if k % 2:
            notes = write_asap_xml(root / f"slide{k}.xml", [Annotation("t", "Tumor", np.array(
                [[x0, y0], [x0 + 150, y0 + 10], [x0 + 120, y0 + 200], [x0, y0 + 160]], float))])
        else:
            labels = np.zeros((400, 420), np.uint8)
            labels[y0:y0 + 180, x0:x0 + 160] = 1
            labels[y0 + 60:y0 + 90, x0 + 50:x0 + 80] = 0  # a hole
            notes = write_geojson(root / f"slide{k}.geojson", label_features(labels, {1: "Tumor"}))
        sources.append((root / f"slide{k}.png", notes))
    return sources


def test_split_slides_is_8_1_1_and_disjoint():
    names = [f"s{k}" for k in range(23)]
    splits = split_slides(names, seed=3)
    assert [len(splits[s]) for s in ("train", "valid", "test")] == [19, 2, 2]  # 18.4, 2.3, 2.3: largest remainder
    assert sorted(sum(splits.values(), [])) == sorted(names)
    assert split_slides(names, seed=3) == splits and split_slides(names, seed=4) != splits
    assert all(split_slides(["a", "b", "c"])[s] for s in ("train", "valid", "test"))


def test_tiles_are_split_by_slide_balanced_and_match_the_annotation_raster(tmp_path):
    (tmp_path / "slides").mkdir()
    sources = _slides(tmp_path / "slides")
    out = tmp_path / "tiles"
    summary = build_tiles(sources, out, 20, size=65, slide_mpp=0.972, progress=False)
    assert summary["tiles"] == {"train": 16, "valid": 2, "test": 2}
    with open(out / "tiles.csv") as f:
        rows = list(csv.DictReader(f))
    slides_of = {s: {r["slide"] for r in rows if r["split"] == s} for s in ("train", "valid", "test")}
    assert not (slides_of["train"] & slides_of["valid"] or slides_of["train"] & slides_of["test"]
                or slides_of["valid"] & slides_of["test"])
    assert 4 <= sum(r["drawn_as"] == "tumour" for r in rows) <= 16  # tumour and normal drawn 1:1
    notes = dict((p.stem, n) for p, n in sources)
    for r in rows:
        image = np.asarray(Image.open(out / r["split"] / "images" / f"{r['tile']}.png"))
        mask = np.asarray(Image.open(out / r["split"] / "masks" / f"{r['tile']}.png"))
        x, y = int(r["x"]), int(r["y"])
        expected = rasterize(read_annotations(notes[r["slide"]]), (65, 65), 1.0, origin=(x, y))
        assert np.array_equal(mask, expected.astype(np.uint8))
        slide = np.asarray(Image.open(tmp_path / "slides" / f"{r['slide']}.png"))
        inside = slide[max(y, 0):y + 65, max(x, 0):x + 65]
        assert np.array_equal(image[max(-y, 0):max(-y, 0) + inside.shape[0], max(-x, 0):max(-x, 0) + inside.shape[1]],
                              inside)
        if r["drawn_as"] == "tumour":
            assert mask.any()
    assert len(folder_pairs(out / "train" / "images", out / "train" / "masks")) == 16  # what train reads


@pytest.mark.parametrize("extra", [[], ["--size", "33"]])
def test_tiles_command(tmp_path, extra, capsys):
    (tmp_path / "slides").mkdir()
    sources = _slides(tmp_path / "slides", n=4)
    listing = tmp_path / "pairs.csv"
    listing.write_text("slide,annotation\n" + "".join(f"{s},{a}\n" for s, a in sources))
    code = main(["tiles", str(listing), "--out", str(tmp_path / "out"), "-n", "8", "--slide-mpp", "0.972",
                 "--no-progress", *extra])
    assert code == 0, capsys.readouterr()
    assert (tmp_path / "out" / "tiles.csv").is_file()
    size = 33 if extra else 321
    for image in (tmp_path / "out" / "train" / "images").iterdir():
        assert Image.open(image).size == (size, size)
