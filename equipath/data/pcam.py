"""PatchCamelyon (PCam) in its official file format.

A split is two HDF5 files in one folder (plain ``.h5`` or gzipped ``.h5.gz``, as downloaded):

- ``camelyonpatch_level_2_split_{split}_x.h5``: dataset ``x``, ``(N, 96, 96, 3)`` uint8 RGB patches,
- ``camelyonpatch_level_2_split_{split}_y.h5``: dataset ``y``, ``(N, 1, 1, 1)`` integer labels, 1 when the
  centre 32 x 32 of the patch holds tumour tissue,

and optionally ``camelyonpatch_level_2_split_{split}_meta.csv`` with a header row and one row per patch
(columns ``coord_y, coord_x, tumor_patch, center_tumor_patch, wsi``; ``wsi`` names the source slide).
The official splits hold 262,144 / 32,768 / 32,768 patches. A gzipped file is decompressed once, next to
it or into ``cache_dir``. Files written by :func:`equipath.data.write_synthetic_pcam` carry the HDF5
attribute ``synthetic = True``.

Example:
    >>> import numpy as np, tempfile
    >>> from equipath.data import PCamDataset, write_pcam
    >>> root = tempfile.mkdtemp()
    >>> x = np.zeros((4, 96, 96, 3), np.uint8); y = np.array([0, 1, 0, 1])
    >>> _ = write_pcam(root, "valid", x, y)
    >>> data = PCamDataset(root, "valid")
    >>> image, label = data[1]
    >>> tuple(image.shape), image.dtype, float(label)
    ((3, 96, 96), torch.float32, 1.0)
"""

import contextlib
import csv
import gzip
import logging
import os
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from equipath.atomic import atomic_path

__all__ = ["PCamDataset", "PCamWriter", "write_pcam", "pcam_path", "PCAM_SPLITS", "PCAM_SIZES"]

log = logging.getLogger(__name__)

PCAM_SPLITS = ("train", "valid", "test")
PCAM_SIZES = {"train": 262_144, "valid": 32_768, "test": 32_768}
_PATCH = (96, 96, 3)
_META_COLUMNS = ("coord_y", "coord_x", "tumor_patch", "center_tumor_patch", "wsi")


def _check_split(split: str) -> str:
    if split not in PCAM_SPLITS:
        raise ValueError(f"unknown PCam split {split!r}: expected one of {', '.join(PCAM_SPLITS)}")
    return split


def pcam_path(root, split: str, key: str, suffix: str = ".h5") -> Path:
    """``root / camelyonpatch_level_2_split_{split}_{key}{suffix}``, the official file name."""
    return Path(root) / f"camelyonpatch_level_2_split_{_check_split(split)}_{key}{suffix}"


def _gunzip(src: Path, dst: Path, progress: bool) -> None:
    """Decompress ``src`` into ``dst`` atomically (the bar counts compressed bytes)."""
    log.info("decompressing %s -> %s", src, dst)
    try:
        with atomic_path(dst) as tmp, open(src, "rb") as raw, gzip.GzipFile(fileobj=raw) as fin, \
                open(tmp, "wb") as fout, tqdm(total=src.stat().st_size, unit="B", unit_scale=True,
                                              desc=f"gunzip {src.name}", disable=not progress) as bar:
            while block := fin.read(1 << 22):
                fout.write(block)
                bar.update(raw.tell() - bar.n)
    except (OSError, EOFError) as exc:
        raise OSError(f"{src}: could not decompress the gzipped PCam file ({exc})") from exc


def _locate(root: Path, split: str, key: str, cache_dir, progress: bool) -> Path:
    """The plain ``.h5`` file of ``key``; a ``.h5.gz`` is decompressed first (once: a decompressed copy
    in ``cache_dir`` newer than the ``.h5.gz`` is reused)."""
    plain = pcam_path(root, split, key)
    gz = pcam_path(root, split, key, ".h5.gz")
    if plain.is_file():
        return plain
    cached = pcam_path(cache_dir if cache_dir is not None else root, split, key)
    if gz.is_file() and cached.is_file() and cached.stat().st_mtime >= gz.stat().st_mtime:
        return cached
    if gz.is_file():
        _gunzip(gz, cached, progress)
        return cached
    raise FileNotFoundError(f"PCam {split} split: expected {plain} or {gz}, found neither")


def _dataset(path: Path, key: str, f):
    if key not in f:
        raise ValueError(f"{path}: expected an HDF5 dataset {key!r}, found keys {sorted(f.keys())}")
    d = f[key]
    if not isinstance(d, h5py.Dataset):
        raise ValueError(f"{path}: {key!r} is a group, expected an HDF5 dataset")
    return d


def _read_meta(path: Path, n: int) -> dict:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"{path}: empty file, expected a header row and {n} rows")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in _META_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"{path}: expected columns {', '.join(_META_COLUMNS)}, missing {', '.join(missing)}")
    body = rows[1:]
    if len(body) != n:
        raise ValueError(f"{path}: expected {n} rows (one per patch in the h5 files), found {len(body)}")
    cols = {}
    for c in _META_COLUMNS:
        j = header.index(c)
        values = [r[j] if j < len(r) else "" for r in body]
        if c == "wsi":
            cols[c] = np.array(values, dtype=object)
            continue
        try:
            cols[c] = np.array([int(float(v)) for v in values] if c.startswith("coord")
                               else [v.strip().lower() in ("true", "1") for v in values])
        except ValueError as exc:
            raise ValueError(f"{path}: column {c!r} must be numeric ({exc})") from None
    return cols


class PCamDataset(Dataset):
    """One split of PCam read from the official files: items ``(image, label)`` with ``image`` float32
    ``(3, 96, 96)`` in [0, 1] (RGB) and ``label`` a float32 scalar tensor (1 = tumour in the centre 32 x 32).

    The files are checked when the data set is made: a missing file, a missing key, a wrong shape or dtype,
    labels other than 0/1 or x and y of different lengths raise ``FileNotFoundError`` / ``ValueError``
    naming the file and what was expected. The HDF5 file is opened lazily in the process that reads it
    (so the data set pickles into ``DataLoader`` workers), and a batch is read in one call.

    Args:
        root: folder with the split's files (``.h5`` or ``.h5.gz``).
        split: ``"train"``, ``"valid"`` or ``"test"``. Defaults to ``"train"``.
        transform: joint transform ``(image, mask) -> (image, mask)`` from :mod:`equipath.data.augment`,
            called with ``mask=None``. Defaults to None.
        cache_dir: where gzipped files are decompressed. Defaults to ``root``.
        progress: show a progress bar while decompressing. Defaults to True.

    Attributes:
        labels: ``(N,)`` int64 labels (read once, in memory).
        meta: the ``_meta.csv`` columns as arrays, or None when there is no such file.
        slides: ``(N,)`` slide names from the meta file, or None.
        synthetic: True when the files were written by the synthetic generator.

    Example:
        >>> from equipath.data import PCamDataset
        >>> data = PCamDataset("data/pcam", "valid")  # doctest: +SKIP
        >>> image, label = data[0]  # doctest: +SKIP
    """

    def __init__(self, root, split: str = "train", transform=None, cache_dir=None, progress: bool = True):
        self.root = Path(root)
        self.split = _check_split(split)
        self.transform = transform
        self.x_path = _locate(self.root, split, "x", cache_dir, progress)
        self.y_path = _locate(self.root, split, "y", cache_dir, progress)
        n, self.labels, self.synthetic = self._validate()
        meta_path = pcam_path(self.root, split, "meta", ".csv")
        self.meta = _read_meta(meta_path, n) if meta_path.is_file() else None
        self.slides = None if self.meta is None else self.meta["wsi"]
        self._file = None
        self._pid = None

    def _validate(self):
        try:
            with h5py.File(self.x_path, "r") as fx, h5py.File(self.y_path, "r") as fy:
                x = _dataset(self.x_path, "x", fx)
                y = _dataset(self.y_path, "y", fy)
                if x.ndim != 4 or tuple(x.shape[1:]) != _PATCH:
                    raise ValueError(f"{self.x_path}: expected 'x' of shape (N, 96, 96, 3), got {tuple(x.shape)}")
                if x.dtype != np.uint8:
                    raise ValueError(f"{self.x_path}: expected 'x' of dtype uint8, got {x.dtype}")
                if y.ndim != 4 or tuple(y.shape[1:]) != (1, 1, 1):
                    raise ValueError(f"{self.y_path}: expected 'y' of shape (N, 1, 1, 1), got {tuple(y.shape)}")
                if y.dtype.kind not in "uib":
                    raise ValueError(f"{self.y_path}: expected 'y' of an integer dtype, got {y.dtype}")
                if len(x) != len(y):
                    raise ValueError(f"{self.x_path} holds {len(x)} patches but {self.y_path} holds "
                                     f"{len(y)} labels: expected the same number")
                if len(x) == 0:
                    raise ValueError(f"{self.x_path} holds 0 patches: expected at least one")
                labels = y[:].reshape(-1).astype(np.int64)
                synthetic = bool(fx.attrs.get("synthetic", False))
        except OSError as exc:
            raise ValueError(f"{self.x_path} / {self.y_path}: not readable as HDF5 ({exc})") from None
        bad = ~np.isin(labels, (0, 1))
        if bad.any():
            raise ValueError(f"{self.y_path}: expected labels 0 or 1, found {labels[bad][0]} at index "
                             f"{int(np.flatnonzero(bad)[0])}")
        return len(labels), labels, synthetic

    def __len__(self) -> int:
        return len(self.labels)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_file"] = None  # an h5py handle does not survive pickling; each worker opens its own
        state["_pid"] = None
        return state

    def _images(self):
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.x_path, "r")
            self._pid = os.getpid()
        return self._file["x"]

    def _item(self, image: torch.Tensor, index: int):
        if self.transform is not None:
            image, _ = self.transform(image, None)
        return image, torch.tensor(float(self.labels[index]))

    @staticmethod
    def _to_float(block: np.ndarray) -> torch.Tensor:
        """uint8 ``(..., 96, 96, 3)`` -> float32 ``(..., 3, 96, 96)`` in [0, 1]."""
        return torch.from_numpy(block).movedim(-1, -3).contiguous().float().div_(255)

    def _index(self, index: int) -> int:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for PCam {self.split} with {n} patches")
        return index % n

    def __getitem__(self, index: int):
        index = self._index(int(index))
        return self._item(self._to_float(self._images()[index]), index)

    def __getitems__(self, indices) -> list:
        """A batch in one HDF5 read (h5py wants sorted unique indices); used by ``DataLoader``."""
        indices = [self._index(int(i)) for i in indices]
        unique, inverse = np.unique(indices, return_inverse=True)
        block = self._to_float(self._images()[unique])  # (U, 3, 96, 96)
        return [self._item(block[j], i) for i, j in zip(indices, inverse)]


class PCamWriter:
    """Writes one split in the official format, in chunks, atomically: ``x`` ``(n, 96, 96, 3)`` uint8 and
    ``y`` ``(n, 1, 1, 1)`` uint8 go to temporary files that replace the final names only on success.

    Example:
        >>> import numpy as np, tempfile
        >>> from equipath.data import PCamWriter
        >>> with PCamWriter(tempfile.mkdtemp(), "test", 2) as w:
        ...     w.write(0, np.zeros((2, 96, 96, 3), np.uint8), np.array([0, 1]))
    """

    def __init__(self, root, split: str, n: int, attrs: dict | None = None, meta: dict | None = None):
        self.root = Path(root)
        self.split = _check_split(split)
        if n < 1:
            raise ValueError(f"a PCam split needs at least one patch, got n={n}")
        self.n = int(n)
        self.attrs = dict(attrs or {})
        self.meta = meta
        self._written = np.zeros(self.n, dtype=bool)

    def __enter__(self):
        self._stack = contextlib.ExitStack()
        tmp_x, tmp_y = (self._stack.enter_context(atomic_path(pcam_path(self.root, self.split, k))) for k in "xy")
        self._fx = self._stack.enter_context(h5py.File(tmp_x, "w"))
        self._fy = self._stack.enter_context(h5py.File(tmp_y, "w"))
        self._x = self._fx.create_dataset("x", (self.n, *_PATCH), dtype=np.uint8)
        self._y = self._fy.create_dataset("y", (self.n, 1, 1, 1), dtype=np.uint8)
        for f in (self._fx, self._fy):
            f.attrs.update(self.attrs)
        return self

    def write(self, start: int, images: np.ndarray, labels) -> None:
        """Store ``images`` ``(k, 96, 96, 3)`` uint8 and ``labels`` ``(k,)`` at ``start``."""
        images = np.asarray(images)
        labels = np.asarray(labels).reshape(-1)
        if images.ndim != 4 or images.shape[1:] != _PATCH or images.dtype != np.uint8:
            raise ValueError(f"expected images of shape (k, 96, 96, 3) uint8, got {images.shape} {images.dtype}")
        if len(labels) != len(images) or start < 0 or start + len(images) > self.n:
            raise ValueError(f"expected {len(images)} labels for rows {start}..{start + len(images) - 1} of "
                             f"{self.n}, got {len(labels)} labels")
        if not np.isin(labels, (0, 1)).all():
            raise ValueError(f"expected labels 0 or 1, got {np.unique(labels).tolist()}")
        self._x[start:start + len(images)] = images
        self._y[start:start + len(images)] = labels.astype(np.uint8).reshape(-1, 1, 1, 1)
        self._written[start:start + len(images)] = True

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            return self._stack.__exit__(exc_type, exc, tb)  # closes and removes the temporary files
        try:
            if not self._written.all():
                raise ValueError(f"PCam {self.split}: rows {np.flatnonzero(~self._written)[:5].tolist()}... "
                                 f"were never written")
            if self.meta is not None:
                _write_meta(pcam_path(self.root, self.split, "meta", ".csv"), self.meta, self.n)
        except BaseException as error:
            self._stack.__exit__(type(error), error, error.__traceback__)
            raise
        self._stack.close()  # closes both files and moves them into place
        return False


def _write_meta(path: Path, meta: dict, n: int) -> None:
    missing = [c for c in _META_COLUMNS if c not in meta]
    if missing or any(len(meta[c]) != n for c in _META_COLUMNS):
        raise ValueError(f"meta needs columns {', '.join(_META_COLUMNS)} of length {n}, missing {missing}")
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["", *_META_COLUMNS])
        w.writerows([i, *(meta[c][i] for c in _META_COLUMNS)] for i in range(n))


def write_pcam(root, split: str, images: np.ndarray, labels, attrs: dict | None = None,
               meta: dict | None = None) -> tuple:
    """Write a whole split (``images`` ``(N, 96, 96, 3)`` uint8, ``labels`` ``(N,)`` 0/1, optional
    ``meta`` columns) in the official format; returns the ``(x, y)`` paths."""
    with PCamWriter(root, split, len(images), attrs, meta) as w:
        w.write(0, images, labels)
    return pcam_path(root, split, "x"), pcam_path(root, split, "y")
