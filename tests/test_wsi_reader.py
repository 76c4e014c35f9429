"""Slide reading: OpenSlide and tiffslide on the real CMU slide, a multi-level pyramidal TIFF written with
tifffile, images in memory, resolution by level or microns per pixel, and clear errors for bad slides."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from equipath.wsi import reader as reader_module
from equipath.wsi.reader import SlideView, open_slide

pytestmark = pytest.mark.wsi

CMU = Path(__file__).parent / "data" / "CMU-1-Small-Region.svs"


def write_pyramid(path, image: np.ndarray, mpp: float, levels: int = 3, tile: int = 64) -> list[np.ndarray]:
    """A tiled pyramidal TIFF (full, 1/2, 1/4, ... as top-level pages) with resolution tags; returns the levels."""
    import tifffile

    pyramid = [image]
    for _ in range(levels - 1):
        pyramid.append(pyramid[-1][::2, ::2].copy())
    options = {"tile": (tile, tile), "photometric": "rgb", "compression": "zlib",
               "resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}
    with tifffile.TiffWriter(path) as tif:
        for k, level in enumerate(pyramid):
            tif.write(level, subfiletype=1 if k else 0, **options)
    return pyramid


@pytest.fixture(scope="module")
def pyramid_tiff(tmp_path_factory):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (200, 328, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("pyramid") / "pyramid.tif"
    return path, write_pyramid(path, image, mpp=0.25)


@pytest.mark.parametrize("backend", ["openslide", "tiffslide"])
def test_cmu_slide_metadata_and_pixels(backend):
    with open_slide(CMU, backend) as slide:
        assert slide.backend == backend
        assert slide.dimensions == (2220, 2967) and slide.level_count == 1
        assert slide.mpp == pytest.approx(0.499)
        region = slide.read_region(1000, 1200, 70, 50)
    assert region.shape == (50, 70, 3) and region.dtype == np.uint8
    with open_slide(CMU, "openslide" if backend == "tiffslide" else "tiffslide") as other:
        np.testing.assert_array_equal(other.read_region(1000, 1200, 70, 50), region)


def test_auto_backend_prefers_openslide_and_outside_is_white():
    with open_slide(CMU) as slide:
        assert slide.backend == "openslide"
        region = slide.read_region(2200, -10, 40, 30)  # straddles the right and top edges
    assert (region[:10] == 255).all() and (region[:, 20:] == 255).all()
    assert (region[10:, :20] != 255).any()


@pytest.mark.parametrize("backend", ["openslide", "tiffslide"])
def test_pyramidal_tiff_levels(pyramid_tiff, backend):
    path, pyramid = pyramid_tiff
    with open_slide(path, backend) as slide:
        assert slide.level_dimensions == ((328, 200), (164, 100), (82, 50))
        assert slide.level_downsamples == pytest.approx((1.0, 2.0, 4.0))
        assert slide.mpp == pytest.approx(0.25)
        for level, expected in enumerate(pyramid):
            np.testing.assert_array_equal(slide.read_region(5, 7, 30, 20, level), expected[7:27, 5:35])


def test_view_by_level_and_by_mpp(pyramid_tiff):
    path, pyramid = pyramid_tiff
    with open_slide(path) as slide:
        by_level = SlideView.at(slide, level=2)
        assert (by_level.level, by_level.factor, by_level.shape, by_level.mpp) == (2, 1.0, (50, 82), 1.0)
        np.testing.assert_array_equal(by_level.read_all(), pyramid[2])
        exact = SlideView.at(slide, mpp=0.5)  # level 1 exactly: no resampling
        assert (exact.level, exact.factor) == (1, 1.0)
        np.testing.assert_array_equal(exact.read(0, 0, 164, 100), pyramid[1])
        near = SlideView.at(slide, mpp=0.505)  # within 2 %: level 1 as it is
        assert (near.level, near.factor, near.mpp) == (1, 1.0, pytest.approx(0.5))
        between = SlideView.at(slide, mpp=0.75)  # resampled by 1.5 from level 1
        assert (between.level, between.factor, between.shape) == (1, 1.5, (66, 109))
        assert between.read(10, 10, 20, 20).shape == (20, 20, 3)


def test_resampled_reads_agree_wherever_the_region_starts():
    with open_slide(CMU) as slide:
        view = SlideView.at(slide, mpp=0.998)  # factor 2 from level 0
        assert view.factor == 2.0
        whole = view.read(300, 400, 96, 64).astype(int)
        left, right = view.read(300, 400, 40, 64).astype(int), view.read(340, 400, 56, 64).astype(int)
        np.testing.assert_array_equal(np.concatenate([left, right], axis=1), whole)
        odd = SlideView.at(slide, mpp=0.972)  # factor 1.948: agreement up to one grey level of rounding
        a = odd.read(200, 300, 64, 64).astype(int)
        b = odd.read(232, 300, 32, 64).astype(int)
        assert np.abs(a[:, 32:] - b).max() <= 1


def test_images_in_memory_and_png(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    assert np.array_equal(open_slide(rgb).read_region(0, 0, 40, 30), rgb)
    rgba = np.dstack([rgb, np.zeros((30, 40), np.uint8)])  # fully transparent: white
    assert (open_slide(Image.fromarray(rgba)).read_region(0, 0, 40, 30) == 255).all()
    Image.fromarray(rgb).save(tmp_path / "tile.png")
    slide = open_slide(tmp_path / "tile.png", mpp=0.5)
    assert (slide.backend, slide.mpp) == ("image", 0.5)
    assert np.array_equal(slide.read_region(0, 0, 40, 30), rgb)
    with pytest.raises(ValueError, match="uint8"):
        open_slide(rgb.astype(np.float32))


def test_bad_slides_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.svs does not exist"):
        open_slide(tmp_path / "missing.svs")
    corrupt = tmp_path / "corrupt.svs"
    corrupt.write_bytes(CMU.read_bytes()[:5000])  # a truncated Aperio file
    with pytest.raises(ValueError, match="corrupt.svs is unsupported or corrupt"):
        open_slide(corrupt)
    text = tmp_path / "notes.tif"
    text.write_text("not a slide")
    with pytest.raises(ValueError, match="notes.tif is unsupported or corrupt"):
        open_slide(text)
    broken_png = tmp_path / "broken.png"
    broken_png.write_bytes(b"\x89PNG garbage")
    with pytest.raises(ValueError, match="broken.png could not be read"):
        open_slide(broken_png)
    with pytest.raises(ValueError, match="unknown slide backend"):
        open_slide(CMU, backend="bioformats")
    with pytest.raises(ValueError, match="no microns-per-pixel metadata"):
        SlideView.at(open_slide(np.zeros((8, 8, 3), np.uint8)), mpp=1.0)
    with pytest.raises(ValueError, match="level 3 does not exist"):
        SlideView.at(open_slide(CMU), level=3)


def test_missing_backend_names_the_package(monkeypatch):
    monkeypatch.setattr(reader_module, "_import", lambda name: None)
    with pytest.raises(ImportError, match=r"openslide or tiffslide.*pip install 'equipath\[wsi\]'"):
        open_slide(CMU)
