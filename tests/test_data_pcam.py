"""PCam reader on fixtures written with h5py in the official format (plain and gzipped), and its errors."""

import gzip
import pickle
import shutil

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from equipath.data import PCamDataset, PCamWriter
from equipath.data.pcam import pcam_path

N = 10


def _write(root, split="valid", n=N, x=None, y=None, x_key="x", y_key="y"):
    """The official layout, written directly with h5py (not with equipath's writer)."""
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8) if x is None else x
    y = (np.arange(n) % 2).astype(np.uint8).reshape(n, 1, 1, 1) if y is None else y
    root.mkdir(parents=True, exist_ok=True)
    with h5py.File(pcam_path(root, split, "x"), "w") as f:
        f.create_dataset(x_key, data=x)
    with h5py.File(pcam_path(root, split, "y"), "w") as f:
        f.create_dataset(y_key, data=y)
    return x, y


def _gzip(root, split="valid"):
    for key in "xy":
        plain = pcam_path(root, split, key)
        with open(plain, "rb") as fin, gzip.open(pcam_path(root, split, key, ".h5.gz"), "wb") as fout:
            shutil.copyfileobj(fin, fout)
        plain.unlink()


def test_reads_plain_h5(tmp_path):
    x, y = _write(tmp_path)
    data = PCamDataset(tmp_path, "valid")
    assert len(data) == N and not data.synthetic and data.meta is None
    image, label = data[3]
    assert image.shape == (3, 96, 96) and image.dtype == torch.float32
    assert torch.equal(image, torch.from_numpy(x[3]).permute(2, 0, 1).float() / 255)
    assert label.dtype == torch.float32 and label.shape == () and float(label) == float(y[3, 0, 0, 0])
    assert data.labels.tolist() == (np.arange(N) % 2).tolist()
    assert torch.equal(data[-1][0], data[N - 1][0])
    with pytest.raises(IndexError):
        data[N]


def test_reads_h5_gz_and_caches_the_decompressed_file(tmp_path):
    x, _ = _write(tmp_path / "gz", "test")
    _gzip(tmp_path / "gz", "test")
    data = PCamDataset(tmp_path / "gz", "test", cache_dir=tmp_path / "cache")
    assert data.x_path == pcam_path(tmp_path / "cache", "test", "x")
    assert np.array_equal((data[7][0].permute(1, 2, 0) * 255).round().byte().numpy(), x[7])
    mtime = data.x_path.stat().st_mtime_ns
    PCamDataset(tmp_path / "gz", "test", cache_dir=tmp_path / "cache")  # reuses the decompressed copy
    assert data.x_path.stat().st_mtime_ns == mtime


def test_batch_read_matches_single_reads(tmp_path):
    _write(tmp_path)
    data = PCamDataset(tmp_path, "valid")
    order = [7, 2, 7, 0, 9]
    batch = data.__getitems__(order)
    for i, (image, label) in zip(order, batch):
        assert torch.equal(image, data[i][0]) and torch.equal(label, data[i][1])


def test_dataloader_with_two_workers_and_pickling(tmp_path):
    _write(tmp_path)
    data = PCamDataset(tmp_path, "valid")
    data[0]  # opens the h5 file in this process; the copy sent to the workers must not carry it
    clone = pickle.loads(pickle.dumps(data))
    assert torch.equal(clone[5][0], data[5][0])
    loader = DataLoader(data, batch_size=4, num_workers=2)
    images, labels = zip(*loader)
    images, labels = torch.cat(images), torch.cat(labels)
    assert images.shape == (N, 3, 96, 96)
    assert torch.equal(images, torch.stack([data[i][0] for i in range(N)]))
    assert labels.tolist() == data.labels.tolist()


def test_meta_csv_gives_slides(tmp_path):
    _write(tmp_path)
    rows = ["," + ",".join(["coord_y", "coord_x", "tumor_patch", "center_tumor_patch", "wsi"])]
    rows += [f"{i},{i * 96},0,{bool(i % 2)},{bool(i % 2)},slide_{i // 4}" for i in range(N)]
    pcam_path(tmp_path, "valid", "meta", ".csv").write_text("\n".join(rows) + "\n")
    data = PCamDataset(tmp_path, "valid")
    assert data.slides.tolist() == [f"slide_{i // 4}" for i in range(N)]
    assert data.meta["center_tumor_patch"].tolist() == [bool(i % 2) for i in range(N)]
    pcam_path(tmp_path, "valid", "meta", ".csv").write_text("\n".join(rows[:-1]) + "\n")
    with pytest.raises(ValueError, match=r"meta\.csv: expected 10 rows"):
        PCamDataset(tmp_path, "valid")


def test_missing_file_names_both_forms(tmp_path):
    _write(tmp_path)
    pcam_path(tmp_path, "valid", "y").unlink()
    with pytest.raises(FileNotFoundError, match=r"split_valid_y\.h5 or .*split_valid_y\.h5\.gz"):
        PCamDataset(tmp_path, "valid")


BAD_FILES = {
    "wrong x key": (dict(x_key="images"), r"_x\.h5: expected an HDF5 dataset 'x', found keys \['images'\]"),
    "wrong y key": (dict(y_key="labels"), r"_y\.h5: expected an HDF5 dataset 'y'"),
    "wrong x shape": (dict(x=np.zeros((N, 64, 64, 3), np.uint8)), r"_x\.h5: expected 'x' of shape \(N, 96, 96, 3\), got \(10, 64, 64, 3\)"),
    "channels first": (dict(x=np.zeros((N, 3, 96, 96), np.uint8)), r"_x\.h5: expected 'x' of shape \(N, 96, 96, 3\)"),
    "wrong x dtype": (dict(x=np.zeros((N, 96, 96, 3), np.float32)), r"_x\.h5: expected 'x' of dtype uint8, got float32"),
    "wrong y shape": (dict(y=np.zeros(N, np.uint8)), r"_y\.h5: expected 'y' of shape \(N, 1, 1, 1\), got \(10,\)"),
    "wrong y dtype": (dict(y=np.zeros((N, 1, 1, 1), np.float64)), r"_y\.h5: expected 'y' of an integer dtype, got float64"),
    "length mismatch": (dict(y=np.zeros((N - 1, 1, 1, 1), np.uint8)), r"_x\.h5 holds 10 patches but .*_y\.h5 holds 9 labels"),
    "label values": (dict(y=np.full((N, 1, 1, 1), 3, np.uint8)), r"_y\.h5: expected labels 0 or 1, found 3"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_files_raise_naming_the_file(tmp_path, case):
    kwargs, message = BAD_FILES[case]
    _write(tmp_path, **kwargs)
    with pytest.raises(ValueError, match=message):
        PCamDataset(tmp_path, "valid")


def test_not_an_hdf5_file(tmp_path):
    _write(tmp_path)
    pcam_path(tmp_path, "valid", "x").write_bytes(b"not hdf5 at all")
    with pytest.raises(ValueError, match=r"_x\.h5 .*not readable as HDF5"):
        PCamDataset(tmp_path, "valid")


def test_corrupt_gzip(tmp_path):
    _write(tmp_path)
    pcam_path(tmp_path, "valid", "x").unlink()
    pcam_path(tmp_path, "valid", "x", ".h5.gz").write_bytes(b"\x1f\x8b\x08\x00broken")
    with pytest.raises(OSError, match=r"_x\.h5\.gz: could not decompress"):
        PCamDataset(tmp_path, "valid")
    assert not pcam_path(tmp_path, "valid", "x").exists()


def test_unknown_split(tmp_path):
    with pytest.raises(ValueError, match="unknown PCam split 'val'"):
        PCamDataset(tmp_path, "val")


def test_writer_is_atomic(tmp_path):
    with pytest.raises(RuntimeError):
        with PCamWriter(tmp_path, "train", 4) as w:
            w.write(0, np.zeros((2, 96, 96, 3), np.uint8), [0, 1])
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="never written"):
        with PCamWriter(tmp_path, "train", 4) as w:
            w.write(0, np.zeros((2, 96, 96, 3), np.uint8), [0, 1])
    assert list(tmp_path.iterdir()) == []
    with PCamWriter(tmp_path, "train", 2) as w:
        w.write(0, np.zeros((2, 96, 96, 3), np.uint8), [0, 1])
    assert PCamDataset(tmp_path, "train").labels.tolist() == [0, 1]
