"""Cell-patch sets: the procedural one or a folder of patches, as ``(N, 3, S, S)`` float tensors in [0, 1].

A folder holds one RGB image per cell patch (PNG, TIFF or JPEG, all of one square size): either
``root/<class name>/*.png`` (labelled; classes in sorted order; images directly in ``root``, such as a
preview, are then ignored) or ``root/*.png`` (unlabelled).
:func:`write_cell_folder` writes the labelled layout, so the procedural set can be read back by the same
code a user's data goes through.

Example:
    >>> import tempfile
    >>> from equipath.cells.procedural import make_cell_patches
    >>> images, labels = make_cell_patches(6, size=32)
    >>> root = write_cell_folder(tempfile.mkdtemp(), images, labels)
    >>> x, y, classes = read_cell_folder(root)
    >>> tuple(x.shape), y.tolist(), classes[:2]
    ((6, 3, 32, 32), [0, 1, 2, 3, 4, 5], ('band', 'eosinophil'))
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from equipath.atomic import atomic_path
from equipath.cells.procedural import CELL_TYPES, make_cell_patches

__all__ = ["SYNTHETIC", "load_cells", "read_cell_folder", "write_cell_folder"]

SYNTHETIC = "synthetic"
_SUFFIXES = {".png", ".tif", ".tiff", ".jpg", ".jpeg"}


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _SUFFIXES)


def _read(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            if im.mode not in ("RGB", "RGBA"):
                raise ValueError(f"{path}: expected an RGB image, got mode {im.mode}")
            return np.asarray(im.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0
    except (OSError, SyntaxError) as exc:
        raise ValueError(f"{path}: not a readable image ({exc})") from None


def read_cell_folder(root) -> tuple[torch.Tensor, np.ndarray | None, tuple[str, ...]]:
    """Read every patch under ``root``: ``(images (N, 3, S, S), labels (N,) int64 or None, class names)``.

    Raises ``ValueError`` naming the folder or file when it holds no images or holds images of different
    or non-square sizes.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"cell patch folder {root} does not exist or is not a folder")
    classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and _images_in(p)))
    if classes:
        files = [(p, i) for i, c in enumerate(classes) for p in _images_in(root / c)]
    else:
        files = [(p, -1) for p in _images_in(root)]
    if not files:
        raise ValueError(f"cell patch folder {root}: no PNG, TIFF or JPEG images found")
    arrays, first = [], None
    for path, _ in files:
        a = _read(path)
        if first is None:
            first = a.shape
            if first[1] != first[2]:
                raise ValueError(f"{path}: expected square patches, got {first[1]}x{first[2]}")
        elif a.shape != first:
            raise ValueError(f"{path}: expected a {first[1]}x{first[2]} patch like the others, got {a.shape[1]}x{a.shape[2]}")
        arrays.append(a)
    labels = np.array([i for _, i in files], dtype=np.int64) if classes else None
    return torch.from_numpy(np.stack(arrays)), labels, classes


def write_cell_folder(root, images: np.ndarray, labels: np.ndarray, class_names=CELL_TYPES) -> Path:
    """Write ``images`` ``(N, 3, S, S)`` in [0, 1] as ``root/<class name>/<index>.png`` (each file written
    to a temporary name, then renamed). Returns ``root``."""
    root = Path(root)
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 4 or images.shape[1] != 3 or labels.shape != (len(images),):
        raise ValueError(f"write_cell_folder: expected images (N, 3, S, S) and labels (N,), got {images.shape} and {labels.shape}")
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / class_names[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.round(np.clip(image, 0, 1).transpose(1, 2, 0) * 255).astype(np.uint8)
        with atomic_path(folder / f"{i:06d}.png") as tmp:
            Image.fromarray(pixels).save(tmp, format="PNG")
    return root


def load_cells(source: str, n: int, size: int, seed: int) -> tuple[torch.Tensor, np.ndarray | None]:
    """``(images (N, 3, S, S), labels or None)`` from ``source``: ``"synthetic"`` draws ``n`` procedural
    patches of ``size`` with ``seed`` (SYNTHETIC); anything else is a folder read by :func:`read_cell_folder`
    (``n`` and ``seed`` unused), whose patches must be ``size`` x ``size``."""
    if source == SYNTHETIC:
        images, labels = make_cell_patches(n, size, seed)
        return torch.from_numpy(images), labels
    images, labels, _ = read_cell_folder(source)
    if images.shape[-1] != size:
        raise ValueError(f"cell patch folder {source}: patches are {images.shape[-1]}x{images.shape[-1]}, "
                         f"the model expects {size}x{size}")
    return images, labels
