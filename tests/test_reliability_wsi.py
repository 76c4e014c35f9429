"""Slide runs under hostile names, concurrent runs, mismatched resumes and a killed parent: nothing outside
the output folder is touched, finished results survive, and no worker outlives its run."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from equipath.checkpoint import save_checkpoint
from equipath.cli import main
from equipath.models import create_model
from equipath.wsi.batch import run_slides


def _job(slide, folder):
    (folder / "result.txt").write_text(Path(slide).name)
    return {}


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()
            and "lock" not in p.name and p.name != ".done"}


def test_dot_named_slides_touch_nothing_outside_their_own_folder(tmp_path):
    """``...svs`` (stem ``..``) and ``..svs`` (stem ``.``) once named the output folder's parent and the
    output folder itself: ``--overwrite`` deleted them. Files beside and above the output folder and another
    slide's finished output survive; the dot-named slides are processed, not "already done"."""
    base = tmp_path / "base"
    out = base / "out"
    slides = base / "slides"
    slides.mkdir(parents=True)
    (tmp_path / "above.txt").write_text("above")
    (base / "beside.txt").write_text("beside")
    normal, dots2, dots1 = slides / "normal.svs", slides / "...svs", slides / "..svs"
    for slide in (normal, dots2, dots1):
        slide.write_text("pixels")
    first = run_slides([normal], out, _job, progress=False)
    assert [o.status for o in first] == ["done"]
    before = _tree(tmp_path)
    for resume in (True, False):  # a plain run, then --overwrite
        outcomes = run_slides([dots2, dots1], out, _job, resume=resume, progress=False)
        assert [o.status for o in outcomes] == ["done", "done"], outcomes
        for o in outcomes:
            folder = Path(o.output)
            assert folder.parent == out.resolve() and (folder / "result.txt").read_text() == Path(o.slide).name
    after = _tree(tmp_path)
    for name, text in before.items():
        assert after.get(name) == text, f"{name} was changed or deleted"
    assert (out / "normal" / "result.txt").read_text() == "normal.svs"
    assert len([p for p in out.iterdir() if p.is_dir()]) == 3


def test_an_empty_existing_slide_folder_is_not_done(tmp_path):
    (tmp_path / "out" / "a").mkdir(parents=True)
    outcomes = run_slides([tmp_path / "a.svs"], tmp_path / "out", _job, progress=False)
    assert [o.status for o in outcomes] == ["done"]
    assert (tmp_path / "out" / "a" / "result.txt").read_text() == "a.svs"
    assert [o.status for o in run_slides([tmp_path / "a.svs"], tmp_path / "out", _job, progress=False)] == ["skipped"]


_SLOW_RUN = """
import sys, time
from pathlib import Path
from equipath.wsi.batch import run_slides

def job(slide, folder):
    print("running", flush=True)
    while not Path(sys.argv[2]).exists():
        time.sleep(0.01)
    (folder / "result.txt").write_text("first")
    return {}

run_slides([Path("slow.svs")], sys.argv[1], job, progress=False)
"""


def test_a_second_slide_run_into_the_same_folder_is_refused(tmp_path):
    out, release = tmp_path / "out", tmp_path / "release"
    first = subprocess.Popen([sys.executable, "-c", _SLOW_RUN, str(out), str(release)], stdout=subprocess.PIPE,
                             text=True, cwd=tmp_path)
    try:
        assert first.stdout.readline().strip() == "running"
        partial = [p.name for p in out.iterdir() if p.name.startswith(".slow.partial-")]
        with pytest.raises(OSError, match=f"in use by process {first.pid} on "):
            run_slides([tmp_path / "slow.svs", tmp_path / "other.svs"], out, _job, resume=False, progress=False)
        assert [p.name for p in out.iterdir() if p.name.startswith(".slow.partial-")] == partial  # untouched
    finally:
        release.write_text("")
        first.communicate(timeout=120)
    assert first.returncode == 0 and (out / "slow" / "result.txt").read_text() == "first"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = create_model("densenet", growth=2)
        paths.append(save_checkpoint(root / f"m{seed}.pt", model, name="densenet", kwargs={"growth": 2},
                                     normalization={"mean": [0.5] * 3, "std": [0.25] * 3}, task="classification"))
    return paths


@pytest.fixture(scope="module")
def slide_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("slides")
    rng = np.random.default_rng(0)
    for k in range(3):
        image = np.full((256, 288, 3), 240, np.uint8)
        image[40:220, 30:250] = rng.integers(60, 200, (180, 220, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / f"s{k}.png")
    return root


def _predict(slides, checkpoint, out, *extra):
    return ["predict-slide", str(slides), "--checkpoint", str(checkpoint), "--out", str(out), "--slide-mpp", "0.972",
            "--tile-cells", "4", "--no-progress", *extra]


def test_a_resume_with_another_checkpoint_or_options_is_refused(tmp_path, checkpoints, slide_folder, capsys):
    out = tmp_path / "out"
    first = slide_folder / "s0.png"
    assert main(_predict(first, checkpoints[0], out)) == 0
    probability = (out / "s0" / "probability.npy").read_bytes()
    capsys.readouterr()
    for checkpoint, extra, fragment in [(checkpoints[1], [], "checkpoint_sha256 = "),
                                        (checkpoints[0], ["--mpp", "1.944"], "options.mpp = 0.972, this run has 1.944")]:
        assert main(_predict(slide_folder, checkpoint, out, *extra)) == 2
        err = capsys.readouterr().err.strip()
        assert err.splitlines() == [err] and err.startswith("equipath predict-slide: error: ") and fragment in err
        assert "--overwrite" in err
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["s0"]  # nothing mixed in
    assert (out / "s0" / "probability.npy").read_bytes() == probability
    assert main(_predict(slide_folder, checkpoints[1], out, "--overwrite")) == 0  # redo everything: allowed
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["s0", "s1", "s2"]


@pytest.mark.parametrize("flag, value", [("--batch-size", "0"), ("--batch-size", "-3"), ("--batch-size", "10000000"),
                                         ("--nms-window", "0"), ("--tile-cells", "0"), ("--mpp", "nan"),
                                         ("--mpp", "-1"), ("--threshold", "inf"), ("--nms-threshold", "2")])
def test_bad_numbers_fail_before_any_slide_is_read(tmp_path, checkpoints, slide_folder, capsys, flag, value):
    out = tmp_path / "out"
    assert main(_predict(slide_folder, checkpoints[0], out, flag, value)) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and flag in err, err
    assert not out.exists()


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killing_predict_slide_with_two_workers_leaves_no_process(tmp_path, checkpoints, slide_folder):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    parent = subprocess.Popen([sys.executable, "-m", "equipath", *_predict(slide_folder, checkpoints[0],
                                                                           tmp_path / "out", "--workers", "2")],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    out = tmp_path / "out"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and parent.poll() is None and not list(out.glob(".s*.partial-*")):
            time.sleep(0.02)  # until a worker runs a slide
        workers = {p for p in _descendants(parent.pid) if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()}
        assert len(workers) == 2 and parent.poll() is None, "the workers never started"
        everyone = _descendants(parent.pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(_alive(p) for p in everyone):
            time.sleep(0.1)
        assert not [p for p in everyone if _alive(p)], "processes outlived their parent"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)


def _strict_json(path):
    def refuse(constant):
        raise AssertionError(f"{path} holds {constant}: not JSON")

    return __import__("json").loads(Path(path).read_text(), parse_constant=refuse)


def test_slide_json_is_strict_json(tmp_path):
    """A model with NaN weights (what a NaN-loss training once saved) gives NaN probabilities: slide.json
    still parses as strict JSON, NaN written as null."""
    model = create_model("densenet", growth=2)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    checkpoint = save_checkpoint(tmp_path / "nan.pt", model, name="densenet", kwargs={"growth": 2},
                                 normalization={"mean": [0.5] * 3, "std": [0.25] * 3}, task="classification")
    image = np.full((400, 400, 3), 240, np.uint8)
    image[80:320, 80:320] = (200, 120, 190)  # eosin pink: tissue
    Image.fromarray(image).save(tmp_path / "pink.png")
    assert main(_predict(tmp_path / "pink.png", checkpoint, tmp_path / "out")) == 0
    summary = _strict_json(tmp_path / "out" / "pink" / "slide.json")
    assert summary["tissue_cells"] > 0 and summary["max_probability"] is None


def _declared_tiff(path, width, height, tile=256):
    """A tiled TIFF declaring ``width x height`` pixels in a few megabytes: every tile is the same deflated
    white tile (what a hostile or broken file looks like)."""
    import struct
    import zlib

    data = zlib.compress(np.full((tile, tile, 3), 245, np.uint8).tobytes(), 9)
    n = -(-width // tile) * -(-height // tile)
    short = lambda tag, value: struct.pack("<HHIHH", tag, 3, 1, value, 0)  # noqa: E731
    long_ = lambda tag, count, value: struct.pack("<HHII", tag, 4, count, value)  # noqa: E731
    bps_at = 8 + 2 + 12 * 11 + 4
    offsets_at, counts_at = bps_at + 6, bps_at + 6 + 4 * n
    tile_at = counts_at + 4 * n
    ifd = [long_(256, 1, width), long_(257, 1, height), struct.pack("<HHII", 258, 3, 3, bps_at), short(259, 8),
           short(262, 2), short(277, 3), short(284, 1), short(322, tile), short(323, tile),
           long_(324, n, offsets_at), long_(325, n, counts_at)]
    path.write_bytes(b"II*\x00" + struct.pack("<IH", 8, len(ifd)) + b"".join(ifd) + struct.pack("<I", 0)
                     + struct.pack("<HHH", 8, 8, 8) + np.full(n, tile_at, "<u4").tobytes()
                     + np.full(n, len(data), "<u4").tobytes() + data)
    return path


@pytest.mark.parametrize("size, tile, fragment", [
    (200_000, 256, "declares 200000 x 200000 pixels with no pyramid level below 200000 x 200000"),
    (30_000, 512, "declares 30000 x 30000 pixels but the file holds only"),
])
def test_a_small_file_declaring_a_huge_slide_is_refused_at_once(tmp_path, checkpoints, capsys, size, tile, fragment):
    slide = _declared_tiff(tmp_path / "huge.tif", size, size, tile)
    assert slide.stat().st_size < 6_000_000
    assert main(_predict(slide, checkpoints[0], tmp_path / "out")) == 1  # the slide fails, alone, in one line
    printed = capsys.readouterr().out
    assert "FAILED" in printed and fragment in printed
