"""The benchmark scripts run: the GPU script's dry run on the CPU (one markdown table with every row), the
layer benchmark with a peer library present (a stand-in e2cnn), and the slide benchmark's building blocks."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

FAKE_E2CNN = {  # the slice of e2cnn's API the layer benchmark uses, over a plain Conv2d
    "__init__.py": "from e2cnn import gspaces, nn\n",
    "gspaces.py": "class _Space:\n    regular_repr = 8\n\ndef FlipRot2dOnR2(N):\n    return _Space()\n",
    "nn.py": (
        "import torch\n"
        "class FieldType:\n"
        "    def __init__(self, space, reprs):\n        self.size = sum(reprs)\n"
        "class GeometricTensor:\n"
        "    def __init__(self, tensor, field):\n        self.tensor = tensor\n"
        "class R2Conv(torch.nn.Module):\n"
        "    def __init__(self, fin, fout, k, padding=0):\n"
        "        super().__init__()\n        self.conv = torch.nn.Conv2d(fin.size, fout.size, k, padding=padding)\n"
        "    def forward(self, g):\n        return GeometricTensor(self.conv(g.tensor), None)\n"),
}


def _run(args, env=None, timeout=600):
    out = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out.stdout


@pytest.mark.slow
def test_gpu_script_dry_run_writes_one_table_with_every_row(tmp_path):
    table = tmp_path / "gpu.md"
    _run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--dry-run", "--out", str(table)])
    text = table.read_text()
    assert text.startswith("# equipath GPU benchmark: CPU dry run")
    assert text.count("| benchmark | measurement |") == 1  # one table
    for row in ("layers (cpu)", "GroupConv2d training step", "overhead p4m_densenet over its folded copy",
                "PCam epoch", "slide large_10x.tif", "tissue Mpx/s", "fraction of roofline", "peak memory"):
        assert row in text, row


def test_gpu_script_rejects_unknown_arguments():
    out = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--fast"], capture_output=True, text=True)
    assert out.returncode == 2 and "unknown argument --fast" in out.stderr


@pytest.mark.slow
def test_layer_benchmark_times_a_peer_library_when_present(tmp_path):
    package = tmp_path / "e2cnn"
    package.mkdir()
    for name, text in FAKE_E2CNN.items():
        (package / name).write_text(text)
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    out = _run([sys.executable, str(ROOT / "benchmarks" / "layers.py"), "--batch", "2", "--size", "8",
                "--channels", "2", "--repeats", "2"], env=env)
    lines = [line for line in out.splitlines() if line.strip().startswith("e2cnn")]
    assert lines and "skipped" not in lines[0]  # timed beside equipath, with a ratio to the folded conv
    assert "escnn skipped" in out


def test_interleaved_timing_rotates_the_order():
    from _timing import interleaved, quartiles

    calls = []
    samples = interleaved({k: (lambda k=k: calls.append(k)) for k in "abc"}, repeats=3, warmup=0)
    assert calls == list("abcbcacab")
    assert all(len(s.wall) == len(s.cpu) == 3 for s in samples.values())
    assert quartiles([4, 1, 3, 2, 5]) == (2, 3, 4)


def test_legacy_planner_and_perimeter():
    from slide import _perimeter, legacy_band_tiles

    cells = np.zeros((5, 6), bool)
    cells[1:3, 1:4] = True
    assert _perimeter(cells) == 2 * (2 + 3)
    tiles = legacy_band_tiles(cells, 4)
    assert tiles == [(0, 1, 4, 3)]
