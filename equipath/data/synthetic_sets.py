"""The synthetic generator's outputs: a PCam-format h5 set, segmentation tiles on disk or on the fly,
and a preview picture. Everything written here is labelled synthetic (an HDF5 attribute, a SYNTHETIC.txt
note, the picture's title).

Example:
    >>> import tempfile
    >>> from equipath.data import PCamDataset, write_synthetic_pcam
    >>> root = tempfile.mkdtemp()
    >>> _ = write_synthetic_pcam(root, {"valid": 4}, seed=0, progress=False)
    >>> data = PCamDataset(root, "valid")
    >>> len(data), data.synthetic, int(data.labels.sum())
    (4, True, 2)
"""

import csv
import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from equipath import __version__
from equipath.atomic import atomic_path, save_figure
from equipath.data.pcam import PCAM_SPLITS, PCamWriter, pcam_path
from equipath.data.synthetic import (CENTRE, DEFAULT_DIFFICULTY, SLIDE_SIZE, TUMOUR, check_difficulty,
                                     synthetic_patch, synthetic_tile, tile_shape)

__all__ = ["write_synthetic_pcam", "write_synthetic_tiles", "write_synthetic_ocelot", "SyntheticSegmentation",
           "write_preview", "SYNTHETIC_NOTE"]

log = logging.getLogger(__name__)

SYNTHETIC_NOTE = ("SYNTHETIC data: procedural H&E-like images from equipath's generator, not real tissue. "
                  "Results on it say nothing about real pathology.")


def _splits(n_per_split) -> dict:
    counts = {s: n_per_split for s in PCAM_SPLITS} if isinstance(n_per_split, int) else dict(n_per_split)
    unknown = [s for s in counts if s not in PCAM_SPLITS]
    if unknown:
        raise ValueError(f"unknown split {unknown[0]!r}: expected some of {', '.join(PCAM_SPLITS)}")
    bad = {s: n for s, n in counts.items() if not isinstance(n, int) or n < 1}
    if bad or not counts:
        raise ValueError(f"expected a positive number of patches per split, got {n_per_split}")
    return counts


def _patch_chunk(args) -> tuple:
    """Patches ``start..stop-1``: images ``(k, 96, 96, 3)``, labels ``(k,)``, any-tumour flags ``(k,)``."""
    split, seed, start, stop, difficulty, label_noise = args
    patches = [synthetic_patch(i, seed, split, difficulty, label_noise) for i in range(start, stop)]
    return (np.stack([p.image for p in patches]), np.array([p.label for p in patches]),
            np.array([bool(p.tumour_region.any()) for p in patches]))


def _map(fn, jobs, workers: int):
    if workers <= 0:
        yield from map(fn, jobs)
        return
    with ProcessPoolExecutor(workers) as pool:
        yield from pool.map(fn, jobs)


def write_synthetic_pcam(root, n_per_split, seed: int = 0, progress: bool = True, workers: int = 0,
                         chunk: int = 256, difficulty: float = DEFAULT_DIFFICULTY, label_noise: float = 0.0) -> dict:
    """Write synthetic patches in the official PCam format, so :class:`~equipath.data.PCamDataset` reads them.

    Each split gets ``camelyonpatch_level_2_split_{split}_{x,y}.h5`` (HDF5 attribute ``synthetic = True``)
    and a ``_meta.csv`` whose ``wsi`` column names the pseudo-slide (``SLIDE_SIZE`` consecutive patches
    share one slide's staining), for by-slide regimes. Patch ``i`` of a split depends only on
    ``(seed, split, i)``; labels are balanced (one positive per pair of indices).

    Args:
        root: output folder.
        n_per_split: patches per split, an int for all three splits or ``{"train": n, ...}``.
        seed: generator seed. Defaults to 0.
        progress: show a progress bar. Defaults to True.
        workers: processes generating in parallel (0 = this process). Defaults to 0.
        chunk: patches per job and write. Defaults to 256.
        difficulty: class overlap of the generator in [0, 1] (:mod:`equipath.data.synthetic`). Defaults to
            :data:`~equipath.data.synthetic.DEFAULT_DIFFICULTY`.
        label_noise: probability of a flipped label, in the train split only (validation and test keep
            the true labels). Defaults to 0.

    Returns:
        ``{split: (x_path, y_path)}``.
    """
    counts = _splits(n_per_split)
    difficulty, label_noise = check_difficulty(difficulty, label_noise)
    attrs = {"synthetic": True, "description": SYNTHETIC_NOTE, "seed": seed, "generator": f"equipath {__version__}",
             "difficulty": difficulty, "label_noise": label_noise}
    out = {}
    for split, n in counts.items():
        per_side = int(np.ceil(np.sqrt(SLIDE_SIZE)))
        index = np.arange(n)
        slot = index % SLIDE_SIZE
        meta = {"coord_y": (slot // per_side) * 96, "coord_x": (slot % per_side) * 96,
                "tumor_patch": np.zeros(n, dtype=bool), "center_tumor_patch": np.zeros(n, dtype=bool),
                "wsi": [f"synthetic_{split}_{i // SLIDE_SIZE:05d}" for i in index]}
        noise = label_noise if split == "train" else 0.0
        jobs = [(split, seed, s, min(s + chunk, n), difficulty, noise) for s in range(0, n, chunk)]
        with PCamWriter(root, split, n, attrs, meta) as writer, \
                tqdm(total=n, desc=f"synthetic {split}", unit="patch", disable=not progress) as bar:
            for (_, _, start, stop, _, _), (images, labels, tumour) in zip(jobs, _map(_patch_chunk, jobs, workers)):
                writer.write(start, images, labels)
                meta["tumor_patch"][start:stop] = tumour
                meta["center_tumor_patch"][start:stop] = labels.astype(bool)
                bar.update(stop - start)
        out[split] = (pcam_path(root, split, "x"), pcam_path(root, split, "y"))
        log.info("wrote %d synthetic %s patches to %s", n, split, root)
    return out


def _save_atomic(array: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp)


def write_synthetic_tiles(root, n: int, size=(320, 320), seed: int = 0, split: str = "train",
                          progress: bool = True, difficulty: float = DEFAULT_DIFFICULTY) -> Path:
    """Write ``n`` synthetic segmentation tiles as ``root/images/tile_NNNNN.png`` (RGB) and
    ``root/masks/tile_NNNNN.png`` (0 / 1), a ``root/pairs.csv`` (columns ``image,mask``) and
    ``root/SYNTHETIC.txt``; readable with :func:`~equipath.data.folder_pairs` or
    :func:`~equipath.data.csv_pairs`; ``difficulty`` as for :func:`~equipath.data.synthetic.synthetic_tile`.
    Returns the CSV path."""
    if n < 1:
        raise ValueError(f"expected n >= 1 tiles, got {n}")
    size = tile_shape(size)
    root = Path(root)
    for d in ("images", "masks"):
        (root / d).mkdir(parents=True, exist_ok=True)
    with atomic_path(root / "SYNTHETIC.txt") as tmp:
        tmp.write_text(SYNTHETIC_NOTE + f"\nseed={seed} split={split} size={tuple(size)} difficulty={difficulty:g}\n")
    rows = []
    for i in tqdm(range(n), desc=f"synthetic tiles {split}", unit="tile", disable=not progress):
        tile = synthetic_tile(i, seed, size, split, difficulty)
        name = f"tile_{i:05d}.png"
        _save_atomic(tile.image, root / "images" / name)
        _save_atomic(tile.mask.astype(np.uint8), root / "masks" / name)
        rows.append((f"images/{name}", f"masks/{name}"))
    csv_path = root / "pairs.csv"
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as f:
        csv.writer(f).writerows([("image", "mask"), *rows])
    log.info("wrote %d synthetic %s tiles to %s", n, split, root)
    return csv_path


def write_synthetic_ocelot(root, n: int, size: int = 256, seed: int = 0, progress: bool = True,
                           difficulty: float = DEFAULT_DIFFICULTY) -> Path:
    """Write a tiny SYNTHETIC set in the OCELOT 2023 layout (:class:`~equipath.data.OcelotDataset` reads it):
    ``n`` samples per split ``train`` / ``val`` / ``test`` of synthetic tiles, ``size`` pixels square, the cell
    CSV holding every nucleus centre (class 2 for tumour-like nuclei, 1 for the others), the tissue PNG
    2 inside the tumour region and 1 elsewhere, and ``metadata.json`` (the tissue patch is the cell patch:
    same field of view and resolution). Returns ``root``."""
    import json

    if n < 1:
        raise ValueError(f"expected n >= 1 samples per split, got {n}")
    root = Path(root)
    pairs, index = {}, 0
    for split in ("train", "val", "test"):
        for sub in ("images/{}/cell", "images/{}/tissue", "annotations/{}/cell", "annotations/{}/tissue"):
            (root / sub.format(split)).mkdir(parents=True, exist_ok=True)
        for i in tqdm(range(n), desc=f"synthetic OCELOT {split}", unit="sample", disable=not progress):
            index += 1
            sid = f"{index:03d}"
            tile = synthetic_tile(i, seed, (size, size), "valid" if split == "val" else split, difficulty)
            for kind in ("cell", "tissue"):
                with atomic_path(root / "images" / split / kind / f"{sid}.jpg") as tmp:
                    Image.fromarray(tile.image).save(tmp, format="JPEG", quality=95)
            rows = "".join(f"{int(c):d},{int(r):d},{2 if k == TUMOUR else 1}\n"
                           for (r, c), k in zip(np.rint(tile.nuclei.centres), tile.nuclei.kinds)
                           if 0 <= r < size and 0 <= c < size)
            with atomic_path(root / "annotations" / split / "cell" / f"{sid}.csv") as tmp:
                tmp.write_text(rows)
            _save_atomic(np.where(tile.mask > 0, 2, 1).astype(np.uint8),
                         root / "annotations" / split / "tissue" / f"{sid}.png")
            pairs[sid] = {"slide_name": f"synthetic_{split}_{i}", "organ": "SYNTHETIC", "mpp_x": 0.2, "mpp_y": 0.2,
                          "cell": {"resized_mpp_x": 0.2, "resized_mpp_y": 0.2},
                          "tissue": {"resized_mpp_x": 0.2, "resized_mpp_y": 0.2},
                          "patch_x_offset": 0.5, "patch_y_offset": 0.5}
    with atomic_path(root / "metadata.json") as tmp:
        tmp.write_text(json.dumps({"dataset_name": "SYNTHETIC equipath OCELOT-format set", "sample_pairs": pairs},
                                  indent=1))
    with atomic_path(root / "SYNTHETIC.txt") as tmp:
        tmp.write_text(SYNTHETIC_NOTE + f"\nOCELOT layout, seed={seed} size={size} difficulty={difficulty:g}\n")
    log.info("wrote %d synthetic OCELOT-format samples per split to %s", n, root)
    return root


class SyntheticSegmentation(Dataset):
    """Synthetic segmentation tiles drawn on the fly: ``(image, mask)`` with ``image`` float32
    ``(3, H, W)`` in [0, 1] and ``mask`` int64 ``(H, W)`` (1 = tumour region). Item ``i`` depends only on
    ``(seed, split, i)``.

    Example:
        >>> from equipath.data import SyntheticSegmentation
        >>> image, mask = SyntheticSegmentation(4, size=(64, 64))[0]
        >>> tuple(image.shape), tuple(mask.shape), mask.dtype
        ((3, 64, 64), (64, 64), torch.int64)
    """

    synthetic = True

    def __init__(self, n: int, size=(320, 320), seed: int = 0, split: str = "train", transform=None,
                 difficulty: float = DEFAULT_DIFFICULTY):
        if n < 1:
            raise ValueError(f"expected n >= 1 tiles, got {n}")
        self.n, self.size, self.seed, self.split, self.transform = n, tuple(size), seed, split, transform
        self.difficulty = check_difficulty(difficulty)[0]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} tiles")
        tile = synthetic_tile(index, self.seed, self.size, self.split, self.difficulty)
        image = torch.from_numpy(tile.image.transpose(2, 0, 1).astype(np.float32) / 255)  # (3, H, W)
        mask = torch.from_numpy(tile.mask)
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image, mask


def write_preview(path, n_per_class: int = 16, seed: int = 0, split: str = "train",
                  difficulty: float = DEFAULT_DIFFICULTY) -> Path:
    """Write a picture of ``n_per_class`` synthetic patches of each label (the centre 32 x 32, which
    decides the label, outlined), titled as synthetic, to ``path`` (PNG, PDF, ...) atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    if n_per_class < 1:
        raise ValueError(f"expected n_per_class >= 1, got {n_per_class}")
    path = Path(path)
    by_label = {0: [], 1: []}
    index = 0
    while min(len(v) for v in by_label.values()) < n_per_class:
        patch = synthetic_patch(index, seed, split, difficulty)
        if len(by_label[patch.label]) < n_per_class:
            by_label[patch.label].append(patch.image)
        index += 1
    cols = int(np.ceil(np.sqrt(n_per_class)))
    rows = int(np.ceil(n_per_class / cols))
    height = 1.2 * rows + 0.6
    fig, axes = plt.subplots(rows, 2 * cols + 1, figsize=(1.2 * (2 * cols + 0.2), height), squeeze=False,
                             gridspec_kw={"width_ratios": [1] * cols + [0.2] + [1] * cols})
    for ax in axes.ravel():
        ax.axis("off")
    for label, offset in ((0, 0), (1, cols + 1)):
        for k, image in enumerate(by_label[label]):
            ax = axes[k // cols, offset + k % cols]
            ax.imshow(image)
            ax.add_patch(Rectangle((CENTRE.start - 0.5, CENTRE.start - 0.5), 32, 32, fill=False, lw=0.6,
                                   ec="lime" if label else "white"))
        centre = 0.01 + 0.98 * (cols / 2 + label * (cols + 0.2)) / (2 * cols + 0.2)  # of the label's columns
        fig.text(centre, 1 - 0.42 / height, f"label {label}: {'tumour' if label else 'no tumour'} in the centre",
                 ha="center", fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.55 / height, wspace=0.05, hspace=0.05)
    fig.suptitle(f"SYNTHETIC H&E-like patches (equipath generator, seed {seed}, {split}, difficulty {difficulty:g})"
                 " - not real tissue",
                 fontsize=10)
    return save_figure(fig, path)  # the one figure writer: atomic, FIGURE_DPI, closed
