"""Seed 001's training data: image + mask tiles from annotated slides, in the folder format ``equipath train``
reads (``dataset: segmentation``).

Seed 001 cuts 320 x 320 patches at 10x from Camelyon16 slides, split 8:1:1 into train, validation and
test, keeps a patch when it holds tissue (HSV, blurred: saturation above 0.07 and value above 0.1), and
draws "tumor/non-tumor patches with equal probability" from uniformly chosen slides. Here:

1. slides are assigned to ``train`` / ``valid`` / ``test`` in the ratio 8:1:1 by a seeded shuffle, so no
   slide is in two splits (:func:`split_slides`);
2. each split's tiles are drawn like :mod:`equipath.wsi.sampling`'s patches: tumour or normal with equal
   probability, a slide uniformly among that split's slides holding the kind, a position uniformly over the
   kind's area (tumour: inside the annotation; normal: tissue outside it), redrawn without tissue;
3. each tile is ``size`` x ``size`` (default **321**, the admissible side nearest 320 of the U-Nets and
   GER-UNet) at ``mpp`` (default 0.972, 10x); its mask is the annotation rasterised at the tile's own pixel
   centres (:func:`~equipath.wsi.annotations.rasterize`, tumour = 1, exclusions and holes cut out).

Output: ``root/{split}/images/{slide}_{k}.png`` and ``root/{split}/masks/{slide}_{k}.png`` (uint8 class
indices), and ``root/tiles.csv`` (split, slide, tile, level-0 x, y, tumour fraction, kind drawn).
Annotations are ASAP XML or QuPath GeoJSON (:func:`~equipath.wsi.annotations.read_annotations`).

Example:
    >>> split_slides(["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"], seed=0)["test"]
    ['b']
"""

import csv
import io
import logging
from contextlib import ExitStack
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from equipath.atomic import atomic_path, atomic_write
from equipath.outdir import safe_name
from equipath.wsi.annotations import rasterize, read_annotations
from equipath.wsi.reader import open_slide
from equipath.wsi.sampling import _Slide
from equipath.wsi.tissue import TissueOptions, tissue_mask

__all__ = ["split_slides", "build_tiles", "SPLITS"]

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")


def split_slides(names, ratios=(8, 1, 1), seed: int = 0) -> dict[str, list[str]]:
    """``{"train": [...], "valid": [...], "test": [...]}``: the slide ``names`` shuffled with ``seed`` and cut
    in the proportions ``ratios`` (largest remainders; every split with a positive ratio gets a slide when
    there are enough). No name is in two splits."""
    names = list(dict.fromkeys(names))
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    total = sum(ratios)
    exact = [len(order) * r / total for r in ratios]
    counts = [int(e) for e in exact]
    for i in sorted(range(len(ratios)), key=lambda i: exact[i] - counts[i], reverse=True)[:len(order) - sum(counts)]:
        counts[i] += 1
    for i in range(len(ratios)):  # a slide for every wanted split, taken from the largest
        if ratios[i] and not counts[i] and max(counts) > 1:
            counts[counts.index(max(counts))] -= 1
            counts[i] += 1
    out, start = {}, 0
    for split, n in zip(SPLITS, counts):
        out[split] = sorted(order[start:start + n])
        start += n
    return out


def _png(path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    atomic_write(path, buffer.getvalue())


def build_tiles(sources, root, n: int, *, size: int = 321, mpp: float = 0.972, ratios=(8, 1, 1),
                tissue: TissueOptions = TissueOptions(), seed: int = 0, backend: str = "auto",
                slide_mpp: float | None = None, max_tries: int = 50, progress: bool = True) -> dict:
    """Write ``n`` balanced image + mask tiles from annotated slides, split by slide (module docstring).

    Args:
        sources: ``(slide, annotation)`` pairs; ``annotation`` an ASAP ``.xml`` / QuPath ``.geojson`` path or
            None (a slide without tumour).
        root: the output folder. n: tiles over all splits (split in ``ratios`` too).
        size: tile side in pixels. Defaults to 321. mpp: microns per tile pixel. Defaults to 0.972 (10x).
        ratios: train : valid : test, by slide. Defaults to 8:1:1.
        tissue: tissue detection. seed: every random choice. backend, slide_mpp: as ``open_slide``.
        max_tries: give up after ``max_tries * n`` draws without tissue. Defaults to 50.
        progress: show a progress bar. Defaults to True.

    Returns:
        ``{"splits": {split: [slide names]}, "tiles": {split: count}, "tumour_tiles": {split: count}}``.

    Raises:
        ValueError: fewer than 1 tile, duplicate slide names, or no tissue where tiles are wanted.
    """
    if n < 1 or size < 1:
        raise ValueError(f"build_tiles: n and size must be >= 1, got {n} and {size}")
    root = Path(root)
    names = [safe_name(Path(str(s)).stem) for s, _ in sources]
    if len(set(names)) != len(names):
        raise ValueError("build_tiles: slide names must be unique")
    splits = split_slides(names, ratios, seed)
    wanted = dict(zip(SPLITS, (round(n * r / sum(ratios)) for r in ratios)))
    wanted["train"] += n - sum(wanted.values())
    rng = np.random.default_rng(seed)
    rows, summary = [], {"splits": splits, "tiles": {}, "tumour_tiles": {}}
    with ExitStack() as stack:
        slides = {}
        for name, (slide_path, annotation_path) in zip(names, sources):
            reader = stack.enter_context(open_slide(slide_path, backend, slide_mpp))
            annotations = read_annotations(annotation_path) if annotation_path is not None else []
            slides[name] = _Slide(reader, annotations, mpp, tissue)
        bar = stack.enter_context(tqdm(total=n, desc="tiles", unit="tile", disable=not progress))
        for split in SPLITS:
            if wanted[split] and not splits[split]:
                log.warning("no slide for the %s split: its %d tiles are not made", split, wanted[split])
                wanted[split] = 0
            by_kind = {k: [s for s in splits[split] if len(slides[s].candidates[k])] for k in (0, 1)}
            if wanted[split] and not by_kind[0] and not by_kind[1]:
                raise ValueError(f"build_tiles: no tissue in the {split} slides {', '.join(splits[split])}")
            made = tumour = rejected = 0
            for folder in ("images", "masks"):
                (root / split / folder).mkdir(parents=True, exist_ok=True)
            while made < wanted[split]:
                kind = int(rng.random() < 0.5) if by_kind[0] and by_kind[1] else int(bool(by_kind[1]))
                name = by_kind[kind][rng.integers(len(by_kind[kind]))]
                slide = slides[name]
                row, col = slide.candidates[kind][rng.integers(len(slide.candidates[kind]))]
                cy, cx = (np.array([row, col]) + rng.random(2)) * slide.scale
                x, y = int(cx) - size // 2, int(cy) - size // 2
                image = slide.view.read(x, y, size, size)
                if not tissue_mask(image, tissue).any():
                    rejected += 1
                    if rejected > max_tries * max(n, 1):
                        raise ValueError(f"build_tiles: {rejected} draws held no tissue; check the tissue thresholds")
                    continue
                d = slide.view.downsample
                mask = rasterize(slide.annotations, (size, size), d, origin=(x * d, y * d)).astype(np.uint8)
                stem = f"{name}_{made:06d}"
                _png(root / split / "images" / f"{stem}.png", image)
                _png(root / split / "masks" / f"{stem}.png", mask)
                rows.append([split, name, stem, round(x * d), round(y * d), f"{mask.mean():.4f}",
                             "tumour" if kind else "normal"])
                made += 1
                tumour += kind
                bar.update()
            summary["tiles"][split], summary["tumour_tiles"][split] = made, tumour
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["split", "slide", "tile", "x", "y", "tumour_fraction", "drawn_as"])
    writer.writerows(rows)
    with atomic_path(root / "tiles.csv") as tmp:
        tmp.write_text(buffer.getvalue())
    log.info("%s tiles of %d px at %.3f um/px from %d slides", summary["tiles"], size, mpp, len(names))
    return summary
