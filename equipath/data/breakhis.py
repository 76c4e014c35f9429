"""BreakHis-style folder classification (benign / malignant from the path), the evaluation protocol of
Spanhol et al. that seed 000 follows (patient-wise 70 / 30 splits, 5 repetitions, per magnification), the
resolution matching of a fine-tuned patch classifier, and prediction by the maximum over random crops.

Protocol (:func:`patient_splits`): the patients of each class (benign / malignant) are shuffled with the
seed of the repetition and the first ``round(0.7 n)`` go to training, the rest to test, so no patient is in
both, both classes are in both, and the same patient split serves every magnification. Accuracy is then
reported as the mean and standard deviation over the 5 repetitions (seed 000: 96.1 +- 3.2 for the
P4M-DenseNet, 93.5 +- 4.7 for the DenseNet, at 40X).

Resolution (:func:`breakhis_mpp`, :class:`BreakHisDataset`'s ``mpp``): BreakHis was acquired through a
3.3x relay lens on a camera with 6.5 um pixels (Spanhol et al. 2016), so an image at magnification factor
``M`` (objective ``M / 10``) has ``6.5 / (M / 10 * 3.3)`` um per pixel: 0.49 at 40X, 0.20 at 100X. Seed 000
pre-trains "on Camelyon16 at a similar pixel resolution": Camelyon16 level 1 is 0.486 um/px; a model
trained at PCam's 0.972 um/px sees 40X images downscaled by 2 (``BreakHisDataset(..., mpp=0.972)``).

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

__all__ = ["BreakHisDataset", "predict_max_over_crops", "patient_splits", "breakhis_mpp", "split_accuracy"]

SENSOR_UM, RELAY = 6.5, 3.3  # Spanhol et al. 2016: camera pixel pitch and relay-lens magnification


def breakhis_mpp(magnification: str) -> float:
    """Microns per pixel of a BreakHis magnification factor (``"40X"`` -> 0.49; module docstring)."""
    match = _MAG.match(str(magnification))
    if not match:
        raise ValueError(f"magnification {magnification!r}: expected e.g. '40X', '100X', '200X' or '400X'")
    return SENSOR_UM / (int(match.group(1)) / 10 * RELAY)


def patient_splits(patients, labels, repetitions: int = 5, train_fraction: float = 0.7, seed: int = 0) -> list:
    """Patient-wise train / test splits of images: ``[{"train": idx, "test": idx}, ...]`` (int64 image
    indices), one per repetition (module docstring).

    Args:
        patients: ``(N,)`` patient of each image. labels: ``(N,)`` 0 / 1 of each image (one per patient).
        repetitions: number of splits. Defaults to 5. train_fraction: of each class's patients. Defaults to 0.7.
        seed: repetition ``r`` shuffles with ``seed + r``. Defaults to 0.
    """
    patients, labels = np.asarray(patients), np.asarray(labels)
    if patients.shape != labels.shape or patients.ndim != 1:
        raise ValueError(f"patient_splits: patients and labels need one entry per image, got {patients.shape} "
                         f"and {labels.shape}")
    if not 0 < train_fraction < 1:
        raise ValueError(f"patient_splits: train_fraction must be in (0, 1), got {train_fraction}")
    names = np.unique(patients)
    label_of = {}
    for name in names:
        values = np.unique(labels[patients == name])
        if len(values) != 1:
            raise ValueError(f"patient {name} has images of both classes; expected one class per patient")
        label_of[name] = int(values[0])
    splits = []
    for repetition in range(repetitions):
        rng = np.random.default_rng(seed + repetition)
        train = []
        for cls in (0, 1):
            group = np.array([n for n in names if label_of[n] == cls])
            if len(group) < 2:
                raise ValueError(f"patient_splits: class {cls} needs at least 2 patients, got {len(group)}")
            k = min(len(group) - 1, max(1, round(train_fraction * len(group))))
            train += list(rng.permutation(group)[:k])
        in_train = np.isin(patients, train)
        splits.append({"train": np.flatnonzero(in_train), "test": np.flatnonzero(~in_train)})
    return splits

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
        mpp: resample every image (antialiased bilinear) from its magnification's :func:`breakhis_mpp` to
            this many microns per pixel, the resolution a pre-trained model saw. Defaults to None (as stored).

    Attributes:
        paths, labels (int64), magnifications, patients: one entry per image, sorted by path.
    """

    def __init__(self, root, magnification: str | None = None, transform=None, mpp: float | None = None):
        self.root = Path(root)
        self.mpp = mpp
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
                im = im.convert("RGB")
                if self.mpp is not None:
                    if self.magnifications[index] is None:
                        raise ValueError(f"{path}: no magnification in its path; needed to resample to "
                                         f"{self.mpp} um/px")
                    factor = breakhis_mpp(self.magnifications[index]) / self.mpp
                    size = (max(1, round(im.width * factor)), max(1, round(im.height * factor)))
                    im = im.resize(size, Image.Resampling.BILINEAR, reducing_gap=None)
                array = np.asarray(im)
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


def split_accuracy(model_fn, dataset: BreakHisDataset, indices, n_crops: int = 1000, crop: int = 96,
                   threshold: float = 0.5, seed: int = 0) -> dict:
    """Image- and patient-level accuracy of one test fold (Spanhol et al.'s two recognition rates): each image
    is malignant when :func:`predict_max_over_crops` exceeds ``threshold``; the patient-level rate is the
    mean over patients of the fraction of their images classified correctly.

    Example:
        >>> import numpy as np, tempfile, torch
        >>> from pathlib import Path
        >>> from PIL import Image
        >>> root = Path(tempfile.mkdtemp())
        >>> for label, value in (("benign", 0), ("malignant", 255)):
        ...     d = root / label / f"p_{label}" / "40X"; d.mkdir(parents=True)
        ...     Image.fromarray(np.full((20, 20, 3), value, np.uint8)).save(d / "a.png")
        >>> data = BreakHisDataset(root)
        >>> split_accuracy(lambda b: b.mean((1, 2, 3)), data, [0, 1], n_crops=4, crop=8)
        {'accuracy': 1.0, 'patient_accuracy': 1.0, 'n_images': 2, 'n_patients': 2}
    """
    indices = [int(i) for i in indices]
    if not indices:
        raise ValueError("split_accuracy: the fold holds no image")
    correct = {}
    for k, index in enumerate(indices):
        image, label = dataset[index]
        prob = predict_max_over_crops(model_fn, image, n_crops, crop, seed + k)
        correct.setdefault(dataset.patients[index], []).append(float((prob > threshold) == bool(label)))
    flat = [c for values in correct.values() for c in values]
    patient_accuracy = float(np.mean([np.mean(v) for v in correct.values()]))
    return {"accuracy": float(np.mean(flat)), "patient_accuracy": patient_accuracy, "n_images": len(flat),
            "n_patients": len(correct)}
