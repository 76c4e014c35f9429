"""``equipath predict-slide`` end to end on the real CMU slide with a small registered model, and batch runs:
bad slides fail per slide while the others finish, finished slides are skipped, killed runs resume."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from scipy import ndimage

from equipath.checkpoint import save_checkpoint
from equipath.cli import main
from equipath.models import create_model
from equipath.outdir import DONE_MARKER
from equipath.wsi.batch import find_slides, run_slides
from equipath.wsi.detection import read_detections_csv, square_nms
from equipath.wsi.pipeline import OUTPUT_FILES
from equipath.wsi.reader import open_slide

pytestmark = pytest.mark.wsi

CMU = Path(__file__).parent / "data" / "CMU-1-Small-Region.svs"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = create_model("p4m_densenet", growth=8)
    path = tmp_path_factory.mktemp("ckpt") / "p4m.pt"
    save_checkpoint(path, model, name="p4m_densenet", kwargs={"growth": 8},
                    normalization={"mean": [0.7, 0.5, 0.7], "std": [0.15, 0.2, 0.15]}, task="classification",
                    config={"data": {"dataset": "synthetic_pcam"}})
    return path


def test_predict_slide_end_to_end_on_the_cmu_slide(tmp_path, checkpoint, capsys):
    out = tmp_path / "out"
    code = main(["predict-slide", str(CMU), "--checkpoint", str(checkpoint), "--out", str(out), "--mpp", "1.996",
                 "--tile-cells", "8", "--threshold", "0.5", "--nms-window", "3", "--nms-threshold", "0.3",
                 "--no-progress"])
    assert code == 0, capsys.readouterr()
    folder = out / "CMU-1-Small-Region"
    assert sorted(p.name for p in folder.iterdir()) == sorted([*OUTPUT_FILES, DONE_MARKER])
    (record,) = out.glob("predict-slide-*.json")  # one timestamped record per run
    assert json.loads(record.read_text())["options"]["mpp"] == 1.996
    summary = json.loads((folder / "slide.json").read_text())
    assert summary["level0_dimensions"] == [2220, 2967] and summary["backend"] == "openslide"
    assert summary["view"]["shape"] == [741, 555] and summary["grid"]["shape"] == [24, 18]
    assert summary["synthetic"] is True and summary["warnings"] == []
    prob = np.load(folder / "probability.npy")
    assert prob.shape == (24, 18) and prob.dtype == np.float32
    assert 0 < summary["tissue_cells"] < prob.size and np.isfinite(prob).sum() == summary["tissue_cells"]
    assert 0.0 <= np.nanmin(prob) and np.nanmax(prob) <= 1.0  # NaN: off tissue, not predicted
    assert summary["max_probability"] == pytest.approx(np.nanmax(prob))
    # GeoJSON: one polygon per 4-connected region of the map above the threshold
    regions = json.loads((folder / "regions.geojson").read_text())["features"]
    assert len(regions) == ndimage.label(np.nan_to_num(prob) >= 0.5)[1]
    for region in regions:  # inside the slide
        ring = np.array(region["geometry"]["coordinates"][0])
        assert ring.min() >= 0 and ring[:, 0].max() <= 2220 and ring[:, 1].max() <= 2967
    # detections: square NMS of the map, at the level-0 centres of their cells
    probs, xs, ys = read_detections_csv(folder / "detections.csv")
    expected = square_nms(prob, 3, 0.3)
    assert len(probs) == len(expected) > 0 and summary["detections"] == len(expected)
    cell = summary["grid"]["cell_size_level0"]
    np.testing.assert_array_equal((xs / cell).astype(int), expected[:, 2].astype(int))
    np.testing.assert_array_equal((ys / cell).astype(int), expected[:, 1].astype(int))
    assert xs.max() < 2220 and ys.max() < 2967  # inside the slide, also for cells that reach past it
    heat = np.asarray(Image.open(folder / "heatmap.png"))
    assert heat.ndim == 3 and heat.shape[0] > 741 and heat.shape[1] >= 555  # the thumbnail, then a legend
    assert Image.open(folder / "tissue_overlay.png").size == (555, 741)  # the thumbnail (view < 1024 px)
    assert tifffile.imread(folder / "heatmap.tif").shape == (24, 18, 3)
    assert "1 done, 0 skipped (already done), 0 failed" in capsys.readouterr().out


def test_batch_continues_past_bad_slides_and_resumes(tmp_path, checkpoint, capsys):
    slides = tmp_path / "slides"
    slides.mkdir()
    with open_slide(CMU) as slide:
        Image.fromarray(slide.read_region(600, 1200, 300, 300)).save(slides / "crop.png")
    Image.fromarray(np.full((300, 300, 3), 240, np.uint8)).save(slides / "blank.png")
    (slides / "corrupt.svs").write_bytes(CMU.read_bytes()[:4000])
    listing = tmp_path / "list.txt"
    listing.write_text("slides/crop.png\nslides/blank.png\nslides/corrupt.svs\nslides/missing.svs  # gone\n")
    out = tmp_path / "out"
    args = ["predict-slide", str(listing), "--checkpoint", str(checkpoint), "--out", str(out), "--slide-mpp", "0.972",
            "--tile-cells", "6", "--no-progress"]
    assert main(args + ["--workers", "2"]) == 1  # failures reported, exit status 1
    printed = capsys.readouterr().out
    assert "2 done, 0 skipped (already done), 2 failed" in printed
    assert "FAILED" in printed and "corrupt.svs is unsupported or corrupt" in printed
    assert "missing.svs does not exist" in printed
    assert "no tissue found" in printed  # the blank slide: a warning, and an empty map
    assert np.isnan(np.load(out / "blank" / "probability.npy")).all()  # nothing predicted
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("predict-slide-")) == ["blank", "crop", "made_with.json"]
    # A killed run: the crop's outputs vanish mid-way and a partial folder is left behind.
    shutil.rmtree(out / "crop")
    (out / ".crop.partial-12345").mkdir()
    (out / ".crop.partial-12345" / "probability.npy").write_bytes(b"half")
    assert main(args) == 1
    printed = capsys.readouterr().out
    assert "1 done, 1 skipped (already done), 2 failed" in printed
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("predict-slide-")) == ["blank", "crop", "made_with.json"]
    assert len(list(out.glob("predict-slide-*.json"))) == 2  # each run kept its record
    assert (out / "crop" / "slide.json").is_file()


def test_ranks_share_out_the_slides(tmp_path):
    names = [tmp_path / f"s{k}.svs" for k in range(5)]

    def job(slide, folder):
        (folder / "done").write_text(slide.name)
        return {}

    first = run_slides(names, tmp_path / "out", job, rank=0, world_size=2, progress=False)
    second = run_slides(names, tmp_path / "out", job, rank=1, world_size=2, progress=False)
    assert [Path(o.slide).name for o in first] == ["s0.svs", "s2.svs", "s4.svs"]
    assert [Path(o.slide).name for o in second] == ["s1.svs", "s3.svs"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"s{k}" for k in range(5)]
    with pytest.raises(ValueError, match="unique names"):
        run_slides([tmp_path / "a" / "x.svs", tmp_path / "b" / "x.tif"], tmp_path / "o2", job, progress=False)
    with pytest.raises(ValueError, match="no slides found"):
        find_slides([tmp_path / "out"])


def test_an_image_without_resolution_names_the_flags_that_fix_it(tmp_path, checkpoint, capsys):
    Image.fromarray(np.full((200, 200, 3), 200, np.uint8)).save(tmp_path / "region.png")
    assert main(["predict-slide", str(tmp_path / "region.png"), "--checkpoint", str(checkpoint),
                 "--out", str(tmp_path / "out"), "--no-progress"]) == 1
    printed = capsys.readouterr().out
    assert "--slide-mpp" in printed and "--level" in printed
