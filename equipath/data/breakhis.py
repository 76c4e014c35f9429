"""BreakHis-style folder classification (benign / malignant from the path) and prediction by the
maximum over random crops (seed 000, after Spanhol et al.).

The original tree is ``BreaKHis_v1/histology_slides/breast/{benign,malignant}/SOB/<type>/<patient>/
<magnification>/SOB_<B|M>_<type>-<yy>-<patient>-<mag>-<seq>.png`` (700 x 460 RGB). The label is 1 when a
folder of the path is named ``malignant`` and 0 for ``benign`` (case-insensitive); the magnification is
the ``40X``-style folder (or the file name's ``-40-``); the patient comes from the file name (or the
folder above the magnification).

Example:
    >>> import numpy as np, tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from equipath.data import BreakHisDataset
    >>> root = Path(tempfile.mkdtemp())
    >>> for label in ("benign", "malignant"):
    ...     d = root / label / "p1" / "40X"; d.mkdir(parents=True)
    ...     Image.fromarray(np.zeros((46, 70, 3), np.uint8)).save(d / "a.png")
    >>> data = BreakHisDataset(root)
    >>> data.labels.tolist(), tuple(data[0][0].shape)
    ([0, 1], (3, 46, 70))
"""

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

__all__ = ["BreakHisDataset", "predict_max_over_crops"]

_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
_NAME = re.compile(r"^SOB_([BM])_[A-Za-z]+-(\d+-[A-Za-z0-9]+)-(\d+)-\d+$")
_MAG = re.compile(r"^(\d+)X$", re.IGNORECASE)


def _describe(path: Path, root: Path) -> tuple:
    """(label, magnification, patient) of one image path."""
    parts = [p.lower() for p in path.relative_to(root).parts[:-1]]
    labels = {1 for p in parts if p == "malignant"} | {0 for p in parts if p == "benign"}
    if len(labels) != 1:
        raise ValueError(f"{path}: expected exactly one folder named 'benign' or 'malignant' in its path "
                         f"below {root}")
    label = labels.pop()
    name = _NAME.match(path.stem)
    mags = [m.group(1) for p in path.parts[:-1] if (m := _MAG.match(p))]
    magnification = f"{mags[-1]}X" if mags else (f"{name.group(3)}X" if name else None)
    if name:
        patient = name.group(2)
    else:
        parents = path.relative_to(root).parts[:-1]
        patient = parents[-2] if mags and len(parents) >= 2 else parents[-1]
    return label, magnification, patient


class BreakHisDataset(Dataset):
    """Images under ``root`` as ``(image, label)``: ``image`` float32 ``(3, H, W)`` in [0, 1] (RGB),
    ``label`` float32 scalar (1 = malignant).

    Args:
        root: the folder to search (recursively) for images.
        magnification: keep only this magnification, e.g. ``"40X"``. Defaults to None (all).
        transform: joint transform ``(image, mask) -> (image, mask)`` called with ``mask=None``.
            Defaults to None.

    Attributes:
        paths, labels (int64), magnifications, patients: one entry per image, sorted by path.
    """

    def __init__(self, root, magnification: str | None = None, transform=None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root} is not a folder: expected a BreakHis tree")
        paths = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in _SUFFIXES and p.is_file())
        if not paths:
            raise ValueError(f"{self.root}: expected images ({', '.join(_SUFFIXES)}) below benign/ and "
                             f"malignant/ folders, found none")
        described = [(p, *_describe(p, self.root)) for p in paths]
        if magnification is not None:
            described = [d for d in described if d[2] is not None and d[2].upper() == magnification.upper()]
            if not described:
                raise ValueError(f"{self.root}: no images at magnification {magnification!r}")
        self.paths = [d[0] for d in described]
        self.labels = np.array([d[1] for d in described], dtype=np.int64)
        self.magnifications = [d[2] for d in described]
        self.patients = [d[3] for d in described]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        path = self.paths[index]
        try:
            with Image.open(path) as im:
                array = np.asarray(im.convert("RGB"))
        except OSError as exc:
            raise ValueError(f"{path}: not a readable image ({exc})") from None
        image = torch.from_numpy(array.transpose(2, 0, 1).astype(np.float32) / 255)  # (3, H, W)
        if self.transform is not None:
            image, _ = self.transform(image, None)
        return image, torch.tensor(float(self.labels[index]))


@torch.no_grad()
def predict_max_over_crops(model_fn, image: torch.Tensor, n_crops: int = 1000, crop: int = 96,
                           seed: int = 0, batch_size: int = 100) -> float:
    """``max_k p(crop_k)`` over ``n_crops`` random ``crop x crop`` windows of ``image``.

    Args:
        model_fn: callable mapping ``(B, 3, crop, crop)`` to probabilities ``(B,)`` or ``(B, 1)``.
        image: float ``(3, H, W)``.
        n_crops: number of crops. Defaults to 1000 (seed 000).
        crop: crop side in pixels. Defaults to 96.
        seed: seeds the crop positions. Defaults to 0.
        batch_size: crops per call of ``model_fn``. Defaults to 100.

    Example:
        >>> import torch
        >>> from equipath.data import predict_max_over_crops
        >>> image = torch.zeros(3, 50, 60); image[:, 20:, 30:] = 1
        >>> predict_max_over_crops(lambda b: b.mean((1, 2, 3)), image, n_crops=200, crop=8)
        1.0
    """
    if image.dim() != 3:
        raise ValueError(f"expected an image (3, H, W), got shape {tuple(image.shape)}")
    h, w = image.shape[-2:]
    if crop > h or crop > w:
        raise ValueError(f"crop {crop} is larger than the {h}x{w} image")
    if n_crops < 1 or batch_size < 1:
        raise ValueError(f"n_crops and batch_size must be >= 1, got {n_crops}, {batch_size}")
    rng = np.random.default_rng(seed)
    ys = rng.integers(0, h - crop + 1, n_crops)
    xs = rng.integers(0, w - crop + 1, n_crops)
    best = -np.inf
    for start in range(0, n_crops, batch_size):
        batch = torch.stack([image[:, y:y + crop, x:x + crop]
                             for y, x in zip(ys[start:start + batch_size], xs[start:start + batch_size])])
        probs = torch.as_tensor(model_fn(batch))
        if probs.shape not in ((len(batch),), (len(batch), 1)):
            raise ValueError(f"model_fn must return probabilities of shape ({len(batch)},) or "
                             f"({len(batch)}, 1), got {tuple(probs.shape)}")
        best = max(best, float(probs.max()))
    return best
