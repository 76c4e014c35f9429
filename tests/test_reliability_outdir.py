"""equipath.outdir: untrusted names stay inside their folder, deletes are confined, one run per folder,
run records refuse a mismatched resume, and only marked folders count as done."""

import json
import math
import os
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest

from equipath.atomic import atomic_path, write_json
from equipath.outdir import (DONE_MARKER, LOCK_FILE, MAX_NAME_BYTES, FolderInUse, OutputLock, check_record,
                             confined, is_done, mark_done, remove, remove_stale_temporaries, safe_name)


@pytest.mark.parametrize("name", ["..", ".", "...", "....", ".hidden", "a/b", "a\\b", "../x", "x\x00y", "tab\tname",
                                  "bell\x07", "CON", "nul.tar", "com1", "trailing.", "trailing ", 'q"uote', "a:b",
                                  "x" * 400, "é" * 200, "predict-slide.json", "PREDICT-SLIDE.JSON"])
def test_unsafe_names_map_to_a_unique_plain_child(tmp_path, name):
    safe = safe_name(name, reserved=["predict-slide.json"])
    assert safe != name and len(safe.encode()) <= MAX_NAME_BYTES
    assert safe == os.path.basename(safe) and not safe.startswith(".") and not safe.endswith((".", " "))
    assert all(ord(c) >= 32 and c not in '<>:"/\\|?*' for c in safe)
    folder = tmp_path / safe
    folder.mkdir()
    assert folder.parent == tmp_path and confined(folder, tmp_path) == folder


def test_safe_names_are_kept_and_distinct_names_stay_distinct():
    for name in ["tumor_001", "CMU-1-Small-Region", "slide 7", "a.b.c", "ünïcode", "console", "LPT"]:
        assert safe_name(name) == name
    mapped = [safe_name(n) for n in ["..", "...", "._", "__", "_.", "a/b", "a\\b", "a:b", "a_b"]]
    assert len(set(mapped)) == len(mapped)
    assert safe_name("..") == safe_name("..")  # documented and stable across runs
    with pytest.raises(ValueError, match="empty"):
        safe_name("")


def test_confined_refuses_everything_outside_the_root(tmp_path):
    root = tmp_path / "out"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)
    assert confined(root / "a" / "b", root) == root.resolve() / "a" / "b"
    assert confined(root / "link", root) == root.resolve() / "link"  # the link itself is inside
    for bad in [root, root / ".", root / "..", root / "a" / ".." / "..", tmp_path / "other", root / "link" / "x",
                "/etc/passwd"]:
        with pytest.raises(ValueError, match="not inside the output folder"):
            confined(bad, root)
    assert confined(root, root, allow_root=True) == root.resolve()


def test_remove_deletes_only_inside(tmp_path):
    root = tmp_path / "out"
    (root / "slide").mkdir(parents=True)
    (root / "slide" / "x.npy").write_text("x")
    (tmp_path / "keep.txt").write_text("keep")
    (root / "link").symlink_to(tmp_path)
    remove(root / "link", root)  # the link goes, its target stays
    assert (tmp_path / "keep.txt").exists() and not (root / "link").exists()
    with pytest.raises(ValueError):
        remove(root / "..", root)
    with pytest.raises(ValueError):
        remove(root, root)
    remove(root / "slide", root)
    assert not (root / "slide").exists() and root.is_dir() and (tmp_path / "keep.txt").exists()


_HOLD = """
import sys, time
from equipath.outdir import OutputLock
with OutputLock(sys.argv[1], command="holder --test"):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_second_run_is_refused_naming_the_first_and_a_dead_ones_lock_is_taken_over(tmp_path):
    folder = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(FolderInUse) as info:
            with OutputLock(folder):
                pass
        message = str(info.value)
        assert len(message.splitlines()) == 1 and f"process {proc.pid} on " in message
        assert "holder --test" in message and str(folder) in message
    finally:
        proc.kill()
        proc.wait()
    assert (folder / LOCK_FILE).exists()  # a killed holder leaves its lock file ...
    with OutputLock(folder, command="next"):  # ... which is taken over
        assert json.loads((folder / LOCK_FILE).read_text())["pid"] == os.getpid()
        with OutputLock(folder):  # re-entering in the same process is allowed
            pass
        assert (folder / LOCK_FILE).exists()
    assert not (folder / LOCK_FILE).exists()


def test_a_lock_leaves_no_folder_behind_when_nothing_was_written(tmp_path):
    with OutputLock(tmp_path / "a" / "b" / "c"):
        assert (tmp_path / "a" / "b" / "c" / LOCK_FILE).exists()
    assert not (tmp_path / "a").exists()
    with OutputLock(tmp_path / "kept"):
        (tmp_path / "kept" / "result.txt").write_text("1")
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["result.txt"]


def test_racing_processes_never_both_hold_a_lock(tmp_path):
    """Many processes race for one folder: at every moment at most one holds it."""
    script = """
import sys, time, os
from equipath.outdir import OutputLock, FolderInUse
wins = 0
for _ in range(40):
    try:
        with OutputLock(sys.argv[1]):
            marker = os.path.join(sys.argv[1], "holder")
            assert not os.path.exists(marker), "two holders"
            open(marker, "w").close(); time.sleep(0.002); os.remove(marker)
            wins += 1
    except FolderInUse:
        pass
print(wins)
"""
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "f")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    assert sum(int(out) for out, _ in results) > 0


def test_run_record_refuses_a_different_resume_in_one_line(tmp_path):
    record = {"checkpoint": "a.pt", "made_with": {"checkpoint_sha256": "abc", "options": {"mpp": 0.972, "tta": False}}}
    path = tmp_path / "run.json"
    check_record(path, record)  # nothing stored yet
    write_json(path, record)
    check_record(path, {**record, "checkpoint": "moved/a.pt"})  # only made_with matters
    other = {"made_with": {"checkpoint_sha256": "abc", "options": {"mpp": 0.5, "tta": False}}}
    with pytest.raises(ValueError) as info:
        check_record(path, other, hint="use --overwrite")
    message = str(info.value)
    assert len(message.splitlines()) == 1
    assert "options.mpp = 0.972, this run has 0.5; use --overwrite" in message
    with pytest.raises(ValueError, match="checkpoint_sha256 = 'abc', this run has 'def'"):
        check_record(path, {"made_with": {"checkpoint_sha256": "def", "options": {"mpp": 0.972, "tta": False}}})


def test_only_a_marked_folder_is_done(tmp_path):
    folder = tmp_path / "slide"
    assert not is_done(folder)
    folder.mkdir()
    assert not is_done(folder)  # an empty folder is not done
    mark_done(folder, seconds=1.5)
    assert is_done(folder) and json.loads((folder / DONE_MARKER).read_text())["seconds"] == 1.5
    (tmp_path / "link").symlink_to(folder)
    assert not is_done(tmp_path / "link")


def test_killed_writes_leave_temporaries_that_the_next_run_removes(tmp_path):
    script = ("import os, sys\nfrom equipath.atomic import atomic_path\n"
              "with atomic_path(sys.argv[1]) as tmp:\n    tmp.write_bytes(b'')\n    os._exit(9)\n")
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "last.pt")], check=False, timeout=120)
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".last.pt.tmp-") and left[0].endswith(".pt")
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / ".gitignore").write_text("*")
    assert [p.name for p in remove_stale_temporaries(tmp_path)] == left
    assert sorted(p.name for p in tmp_path.iterdir()) == [".gitignore", "notes.txt"]
    with atomic_path(tmp_path / "x.json") as tmp:  # a live write is not a leftover once it completes
        tmp.write_text("{}")
    assert (tmp_path / "x.json").read_text() == "{}"


def test_write_json_is_strict_json(tmp_path):
    path = tmp_path / "a.json"
    write_json(path, {"nan": math.nan, "inf": [math.inf, -math.inf], "np": np.float32("nan"),
                      "arr": np.arange(3), "n": np.int64(4), "t": (1, 2.5), "p": Path("x")})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"nan": None, "inf": [None, None], "np": None, "arr": [0, 1, 2], "n": 4,
                                "t": [1, 2.5], "p": "x"}
