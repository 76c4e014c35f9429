"""``equipath synth``: writes the synthetic sets the real loaders read, and fails cleanly on bad input."""

import pytest

from equipath.cli import main
from equipath.data import PCamDataset, SegmentationDataset, csv_pairs


def test_synth_pcam(tmp_path, capsys):
    assert main(["synth", "pcam", "--out", str(tmp_path), "--n", "4", "--n-train", "6", "--no-progress"]) == 0
    assert "SYNTHETIC" in capsys.readouterr().out
    assert [len(PCamDataset(tmp_path, s)) for s in ("train", "valid", "test")] == [6, 4, 4]
    assert PCamDataset(tmp_path, "train").synthetic


def test_synth_tiles_and_preview(tmp_path, capsys):
    assert main(["synth", "tiles", "--out", str(tmp_path / "tiles"), "--n", "2", "--size", "32", "48", "--no-progress"]) == 0
    image, mask = SegmentationDataset(csv_pairs(tmp_path / "tiles" / "pairs.csv"))[0]
    assert image.shape == (3, 32, 48) and mask.shape == (32, 48)
    assert main(["synth", "preview", "--out", str(tmp_path / "p.png"), "--n", "2"]) == 0
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert "SYNTHETIC preview" in capsys.readouterr().out


def test_synth_bad_input(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", "pcam", "--out", str(tmp_path), "--n", "0"])
    assert exit_info.value.code == 2
    assert main(["synth", "tiles", "--out", str(tmp_path), "--size", "4", "--no-progress"]) == 2
    assert "tile size must be at least (16, 16)" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["synth", "pcam", "--out", str(blocker / "out"), "--n", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("equipath synth: error:")


def test_synth_difficulty_and_label_noise_reach_the_data(tmp_path, capsys):
    import numpy as np

    for name, extra in (("easy", ["--difficulty", "0"]), ("hard", []), ("noisy", ["--label-noise", "0.4"])):
        assert main(["synth", "pcam", "--out", str(tmp_path / name), "--n", "8", "--no-progress", *extra]) == 0
    x = {n: np.stack([np.asarray(PCamDataset(tmp_path / n, "train")[i][0]) for i in range(8)])
         for n in ("easy", "hard", "noisy")}
    y = {n: [int(PCamDataset(tmp_path / n, split)[i][1]) for split in ("train", "test") for i in range(8)]
         for n in ("hard", "noisy")}
    assert not np.array_equal(x["easy"], x["hard"])           # the default is the documented hard setting
    assert np.array_equal(x["hard"], x["noisy"])              # label noise changes labels, not images
    assert y["hard"][:8] != y["noisy"][:8] and y["hard"][8:] == y["noisy"][8:]  # train only; test stays clean
    for bad in (["--difficulty", "1.5"], ["--difficulty", "nan"], ["--label-noise", "-0.1"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["synth", "pcam", "--out", str(tmp_path / "bad"), "--n", "2", *bad])
        assert exit_info.value.code == 2
    assert "expected a number in [0, 1]" in capsys.readouterr().err
