"""``analyze stability --image --mpp``: a region at another resolution is resampled to the models' 0.972
um/px before the largest admissible square is cut, and no "not writable" warning is raised on the way."""

import json
import warnings

import numpy as np
from PIL import Image

from equipath.cli import main

TINY = ["--model-arg", "growth=8", "--model-arg", "stem=1"]


def test_stability_image_is_resampled_to_the_model_resolution(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (300, 320, 3), dtype=np.uint8)).save(tmp_path / "region.png")
    out = tmp_path / "st"
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*not writable.*")
        assert main(["analyze", "stability", "--model", "p4m_densenet", *TINY, "--image", str(tmp_path / "region.png"),
                     "--mpp", "0.486", "--rotations", "1", "--out", str(out), "--no-progress"]) == 0
    # 300 x 320 px at 0.486 um/px is 150 x 160 px at 0.972 um/px: the largest admissible square is 128
    assert json.loads((out / "stability.json").read_text())["image_size"] == [128, 128]
    assert main(["analyze", "stability", "--model", "p4m_densenet", *TINY, "--image", str(tmp_path / "region.png"),
                 "--mpp", "0", "--out", str(out)]) == 2
