"""Segmentation pairs: RGB images with integer masks, from folders or CSV lists, sampled as patches.

Images are PNG, JPEG or TIFF RGB(A) (uint8 or uint16); masks are single-channel PNG or TIFF of class
indices (a mask stored as RGB with three equal channels is accepted). Large images are cut into
``patch_size`` patches (seed 001 uses 320 x 320), either at random positions (``sampling="random"``,
``patches_per_image`` per image per epoch) or on a grid covering the image (``sampling="grid"``, the last
row and column flush with the border).

Example:
    >>> import numpy as np, tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from equipath.data import SegmentationDataset, folder_pairs
    >>> root = Path(tempfile.mkdtemp())
    >>> (root / "images").mkdir(); (root / "masks").mkdir()
    >>> Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(root / "images" / "a.png")
    >>> Image.fromarray(np.ones((40, 50), np.uint8)).save(root / "masks" / "a.png")
    >>> data = SegmentationDataset(folder_pairs(root / "images", root / "masks"), patch_size=32,
    ...                            sampling="grid", stride=16)
    >>> len(data), tuple(data[0][0].shape), tuple(data[0][1].shape)
    (6, (3, 32, 32), (32, 32))
"""

import csv
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

import numpy as np
import tifffile
import torch
from PIL import Image
from torch.utils.data import Dataset

__all__ = ["SegmentationDataset", "folder_pairs", "csv_pairs", "read_image", "read_mask",
           "image_size", "IMAGE_SUFFIXES", "MASK_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
MASK_SUFFIXES = (".png", ".tif", ".tiff")


def _is_tiff(path: Path) -> bool:
    return path.suffix.lower() in (".tif", ".tiff")


def _read_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        if _is_tiff(path):
            return tifffile.imread(path)
        with Image.open(path) as im:
            return np.asarray(im)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable image ({exc})") from None


def read_image(path, grey_to_rgb: bool = False) -> np.ndarray:
    """An RGB image as float32 ``(H, W, 3)`` in [0, 1] (uint8 / 255, uint16 / 65535; alpha dropped); with
    ``grey_to_rgb`` a greyscale image ``(H, W)`` has its channel repeated 3 times."""
    path = Path(path)
    a = _read_array(path)
    if grey_to_rgb and (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (1, 2))):  # grey, or grey + alpha
        a = np.repeat((a if a.ndim == 2 else a[..., 0])[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        hint = " (a greyscale image: set data.grey_to_rgb: true)" if a.ndim == 2 else ""
        raise ValueError(f"{path}: expected an RGB(A) image (H, W, 3 or 4), got shape {a.shape}{hint}")
    if a.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{path}: expected uint8 or uint16 pixels, got {a.dtype}")
    return a[..., :3].astype(np.float32) / np.iinfo(a.dtype).max


def read_mask(path) -> np.ndarray:
    """A mask of class indices as int64 ``(H, W)``."""
    path = Path(path)
    a = _read_array(path)
    if a.ndim == 3 and a.shape[-1] in (3, 4) and (a[..., :3] == a[..., :1]).all():
        a = a[..., 0]
    if a.ndim != 2:
        raise ValueError(f"{path}: expected a single-channel mask (H, W), got shape {a.shape}")
    if a.dtype.kind not in "uib":
        raise ValueError(f"{path}: expected integer class indices, got {a.dtype}")
    return a.astype(np.int64)


def image_size(path) -> tuple:
    """``(H, W)`` of an image file, read from its header."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        if _is_tiff(path):
            with tifffile.TiffFile(path) as tif:
                return tuple(tif.pages[0].shape[:2])
        with Image.open(path) as im:
            return im.height, im.width
    except (OSError, ValueError, IndexError) as exc:
        raise ValueError(f"{path}: not a readable image ({exc})") from None


def folder_pairs(images_dir, masks_dir, mask_suffix: str = "") -> list:
    """``[(image, mask), ...]``: every image in ``images_dir`` with the mask named ``stem + mask_suffix``
    (any of :data:`MASK_SUFFIXES`) in ``masks_dir``, sorted by name."""
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    for d in (images_dir, masks_dir):
        if not d.is_dir():
            raise FileNotFoundError(f"{d} is not a folder")
    images = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise ValueError(f"{images_dir}: expected images ({', '.join(IMAGE_SUFFIXES)}), found none")
    pairs = []
    for image in images:
        candidates = [masks_dir / f"{image.stem}{mask_suffix}{s}" for s in MASK_SUFFIXES]
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise FileNotFoundError(f"{image}: no mask, expected {masks_dir / (image.stem + mask_suffix)}"
                                    f"{{{','.join(MASK_SUFFIXES)}}} (masks named NAME_mask.png: set "
                                    f"data.mask_suffix: _mask)")
        pairs.append((image, found[0]))
    return pairs


def csv_pairs(csv_path) -> list:
    """``[(image, mask), ...]`` from a CSV with a header holding columns ``image`` and ``mask``; relative
    paths are taken from the CSV's folder."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path} does not exist")
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        if "image" not in columns or "mask" not in columns:
            raise ValueError(f"{csv_path}: expected a header with columns 'image' and 'mask', got {columns}")
        rows = list(reader)
    if not rows:
        raise ValueError(f"{csv_path}: expected at least one image,mask row, found none")
    pairs = []
    for line, row in enumerate(rows, start=2):
        pair = tuple(csv_path.parent / (row[k] or "").strip() for k in ("image", "mask"))
        for p in pair:
            if not p.is_file():
                raise FileNotFoundError(f"{csv_path} line {line}: {p} does not exist")
        pairs.append(pair)
    return pairs


def _pair_size(pair) -> tuple:
    size, mask_size = image_size(pair[0]), image_size(pair[1])
    if size != mask_size:
        raise ValueError(f"{pair[1]}: mask is {mask_size[0]}x{mask_size[1]} but image {pair[0]} is "
                         f"{size[0]}x{size[1]}: expected the same size")
    return size


def _starts(length: int, patch: int, stride: int) -> list:
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] != length - patch:
        starts.append(length - patch)
    return starts


def _stat_key(path: Path) -> tuple:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


@lru_cache(maxsize=65_536)
def _mask_values(path: Path, size: int, mtime_ns: int) -> tuple:
    """The distinct values of a mask file (cached while the file is unchanged)."""
    mask = read_mask(path)
    if mask.size and mask.min() >= 0 and mask.max() < 1 << 16:
        return tuple(int(v) for v in np.flatnonzero(np.bincount(mask.ravel())))
    return tuple(int(v) for v in np.unique(mask))


class SegmentationDataset(Dataset):
    """Image / mask pairs as ``(image, mask)``: ``image`` float32 ``(3, h, w)`` in [0, 1], ``mask`` int64
    ``(h, w)``, where ``(h, w)`` is ``patch_size`` (or the whole image when it is None).

    Args:
        pairs: ``[(image_path, mask_path), ...]`` from :func:`folder_pairs` or :func:`csv_pairs`.
        patch_size: int or ``(h, w)``; None returns whole images. Defaults to None.
        sampling: ``"random"`` (positions drawn from torch's generator at every access) or ``"grid"``.
            Defaults to ``"random"``.
        patches_per_image: random patches per image per epoch. Defaults to 1.
        stride: grid step, int or ``(sy, sx)``. Defaults to ``patch_size`` (no overlap).
        transform: joint transform ``(image, mask) -> (image, mask)``. Defaults to None.
        label_map: ``{stored value: class}``; a stored value not in it raises ``ValueError``. Defaults
            to None (values are classes).
        cache_size: decoded images kept per process. Defaults to 4.
        grey_to_rgb: accept greyscale images, their channel repeated 3 times. Defaults to False.
    """

    def __init__(self, pairs, patch_size=None, sampling: str = "random", patches_per_image: int = 1,
                 stride=None, transform=None, label_map: dict | None = None, cache_size: int = 4,
                 grey_to_rgb: bool = False):
        self.pairs = [(Path(i), Path(m)) for i, m in pairs]
        if not self.pairs:
            raise ValueError("SegmentationDataset needs at least one (image, mask) pair")
        if sampling not in ("random", "grid"):
            raise ValueError(f"sampling must be 'random' or 'grid', got {sampling!r}")
        if patches_per_image < 1:
            raise ValueError(f"patches_per_image must be >= 1, got {patches_per_image}")
        self.patch = None if patch_size is None else tuple(np.broadcast_to(patch_size, 2).astype(int))
        self.sampling = sampling
        self.patches_per_image = patches_per_image
        self.transform = transform
        self.label_map = label_map
        self.cache_size = cache_size
        self.grey_to_rgb = grey_to_rgb
        self.sizes = [_pair_size(p) for p in self.pairs]
        if self.patch is not None:
            for (image, _), (h, w) in zip(self.pairs, self.sizes):
                if h < self.patch[0] or w < self.patch[1]:
                    raise ValueError(f"{image}: image is {h}x{w}, smaller than the patch size "
                                     f"{self.patch[0]}x{self.patch[1]}")
        self.grid = None
        if self.patch is not None and sampling == "grid":
            step = tuple(np.broadcast_to(self.patch if stride is None else stride, 2).astype(int))
            if min(step) < 1:
                raise ValueError(f"stride must be >= 1, got {stride}")
            self.grid = [(k, y, x) for k, (h, w) in enumerate(self.sizes)
                         for y in _starts(h, self.patch[0], step[0]) for x in _starts(w, self.patch[1], step[1])]
        self._cache = OrderedDict()

    def check_classes(self, num_classes: int) -> None:
        """``ValueError`` naming the first mask holding a value that is not a class ``0 .. num_classes - 1``
        (after ``label_map``): found when the data set is opened, not mid-epoch, nor missed when the bad
        pixels are never sampled. One pass over the masks, cached per file (path, size, mtime)."""
        for _, mask_path in self.pairs:
            values = _mask_values(mask_path, *_stat_key(mask_path))
            if self.label_map is not None:
                unknown = [v for v in values if v not in self.label_map]
                if unknown:
                    raise ValueError(f"{mask_path}: mask value {unknown[0]} is not in label_map {sorted(self.label_map)}")
                values = sorted({self.label_map[v] for v in values})
            bad = [v for v in values if not 0 <= v < num_classes]
            if bad:
                raise ValueError(f"{mask_path}: mask value {bad[0]} is not a class of the {num_classes}-class model "
                                 f"(expected 0 to {num_classes - 1}; a label_map maps stored values to classes)")

    def __len__(self) -> int:
        if self.grid is not None:
            return len(self.grid)
        return len(self.pairs) * (self.patches_per_image if self.patch is not None else 1)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()
        return state

    def _load(self, k: int) -> tuple:
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        image_path, mask_path = self.pairs[k]
        image, mask = read_image(image_path, self.grey_to_rgb), read_mask(mask_path)
        if self.label_map is not None:
            values = np.unique(mask)
            unknown = [int(v) for v in values if int(v) not in self.label_map]
            if unknown:
                raise ValueError(f"{mask_path}: mask value {unknown[0]} is not in label_map "
                                 f"{sorted(self.label_map)}")
            lut = np.zeros(int(values.max()) + 1, dtype=np.int64)
            for v in values:
                lut[v] = self.label_map[int(v)]
            mask = lut[mask]
        self._cache[k] = (image, mask)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return image, mask

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        if self.grid is not None:
            k, y, x = self.grid[index]
        else:
            k = index // (self.patches_per_image if self.patch is not None else 1)
            y = x = 0
            if self.patch is not None:
                h, w = self.sizes[k]
                y = int(torch.randint(h - self.patch[0] + 1, ()))
                x = int(torch.randint(w - self.patch[1] + 1, ()))
        image, mask = self._load(k)
        if self.patch is not None:
            image = image[y:y + self.patch[0], x:x + self.patch[1]]
            mask = mask[y:y + self.patch[0], x:x + self.patch[1]]
        image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))  # (3, h, w)
        mask = torch.from_numpy(np.ascontiguousarray(mask))  # (h, w)
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image, mask
