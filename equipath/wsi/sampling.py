"""Training patches from annotated slides, written in the PCam format (seed 000 section 3.1).

Each patch is drawn in three steps: a class, tumour or non-tumour, with equal probability; a slide,
uniformly among the slides that have candidates of that class; a position, uniformly over that slide's
candidate area (tumour: inside the ASAP tumour polygons; non-tumour: tissue outside them, on a tissue mask
at about ``tissue.mpp``). A patch is rejected and drawn again when it holds no tissue pixel (seed 000: the
maximum blurred saturation must exceed 0.07 and the value 0.1). Its label follows PCam: 1 when the centre
``32 x 32`` holds a tumour pixel (rasterised at the patch's own resolution).

The output is one PCam split: ``camelyonpatch_level_2_split_{split}_{x,y}.h5`` and ``_meta.csv`` (level-0
top-left ``coord_x``, ``coord_y``, ``tumor_patch``, ``center_tumor_patch``, ``wsi``), written atomically by
:class:`equipath.data.PCamWriter`, so :class:`equipath.data.PCamDataset` reads it like the real PCam.

Example (Camelyon16: ``[("tumor_001.tif", "tumor_001.xml"), ("normal_001.tif", None), ...]``):
    >>> import numpy as np, tempfile
    >>> image = np.full((300, 300, 3), 240, np.uint8); image[50:250, 50:250] = (200, 120, 190)
    >>> x, y = sample_patches([(image, None)], tempfile.mkdtemp(), "train", 8, slide_mpp=0.972, progress=False)
    >>> x.name
    'camelyonpatch_level_2_split_train_x.h5'
"""

import logging
from contextlib import ExitStack
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from equipath.data import PCamWriter
from equipath.data.pcam import pcam_path
from equipath.wsi.annotations import rasterize, read_annotations
from equipath.wsi.reader import SlideView, open_slide
from equipath.wsi.tissue import TissueOptions, tissue_mask

__all__ = ["sample_patches", "PATCH", "CENTRE"]

log = logging.getLogger(__name__)

PATCH, CENTRE = 96, 32


class _Slide:
    """One slide at the patch resolution, with its candidate areas on a coarse grid."""

    def __init__(self, reader, annotations, mpp: float, tissue: TissueOptions):
        self.reader, self.annotations = reader, annotations
        self.name = Path(reader.name).stem
        self.view = SlideView.at(reader, mpp=mpp)
        k = max(1.0, tissue.mpp / self.view.mpp)
        coarse = self.view.coarser(k)
        self.scale = coarse.downsample / self.view.downsample  # view pixels per coarse pixel
        is_tissue = tissue_mask(coarse.read_all(), tissue)
        tumour = rasterize(annotations, coarse.shape, coarse.downsample)
        self.candidates = {1: np.argwhere(tumour), 0: np.argwhere(is_tissue & ~tumour)}

    def draw(self, kind: int, rng) -> tuple[int, int]:
        """View pixel ``(x, y)`` of the top-left corner of a patch centred in a random candidate pixel."""
        row, col = self.candidates[kind][rng.integers(len(self.candidates[kind]))]
        cy, cx = (np.array([row, col]) + rng.random(2)) * self.scale
        return int(cx) - PATCH // 2, int(cy) - PATCH // 2

    def label(self, x: int, y: int) -> tuple[bool, bool]:
        """``(tumour anywhere in the patch, tumour in its centre 32 x 32)``."""
        d = self.view.downsample
        mask = rasterize(self.annotations, (PATCH, PATCH), d, origin=(x * d, y * d))
        lo, hi = (PATCH - CENTRE) // 2, (PATCH + CENTRE) // 2
        return bool(mask.any()), bool(mask[lo:hi, lo:hi].any())


def sample_patches(sources, root, split: str, n: int, *, mpp: float = 0.972,
                   tissue: TissueOptions = TissueOptions(), seed: int = 0, backend: str = "auto",
                   slide_mpp: float | None = None, max_tries: int = 50, chunk: int = 256,
                   progress: bool = True) -> tuple[Path, Path]:
    """Draw ``n`` balanced, tissue-filtered 96 x 96 patches from slides into a PCam split (module docstring).

    Args:
        sources: ``(slide, annotation)`` pairs; ``annotation`` is an ASAP XML path or None (a normal slide).
        root: the output folder; ``split``: ``train``, ``valid`` or ``test``.
        n: the number of patches.
        mpp: microns per pixel of the patches. Defaults to 0.972 (PCam's 10x).
        tissue: tissue detection options. Defaults to ``TissueOptions()``.
        seed: seed of every random draw. Defaults to 0.
        backend, slide_mpp: as in :func:`~equipath.wsi.reader.open_slide`.
        max_tries: give up after ``max_tries * n`` rejected draws. Defaults to 50.
        chunk: patches held in memory before they are written. Defaults to 256.
        progress: show a progress bar. Defaults to True.

    Returns:
        The ``(x, y)`` h5 paths.
    """
    if n < 1:
        raise ValueError(f"sample_patches: n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    with ExitStack() as stack:
        slides = []
        for slide_path, annotation_path in sources:
            reader = stack.enter_context(open_slide(slide_path, backend, slide_mpp))
            annotations = read_annotations(annotation_path) if annotation_path is not None else []
            slides.append(_Slide(reader, annotations, mpp, tissue))
        by_kind = {k: [s for s in slides if len(s.candidates[k])] for k in (0, 1)}
        for kind, what in ((1, "tumour annotation"), (0, "non-tumour tissue")):
            if not by_kind[kind]:
                log.warning("no slide has %s: every patch is drawn from the other class", what)
        if not by_kind[0] and not by_kind[1]:
            raise ValueError(f"no tissue and no tumour annotation in any of the {len(slides)} slide(s)")
        meta = {c: [] for c in ("coord_y", "coord_x", "tumor_patch", "center_tumor_patch", "wsi")}
        writer = stack.enter_context(PCamWriter(root, split, n, attrs={"source": "equipath.wsi.sampling", "mpp": mpp},
                                                meta=meta))
        images = np.empty((min(n, chunk), PATCH, PATCH, 3), dtype=np.uint8)
        labels = np.empty(len(images), dtype=np.uint8)
        rejected, done, filled, tumour = 0, 0, 0, 0
        bar = stack.enter_context(tqdm(total=n, desc="patches", unit="patch", disable=not progress))
        while done < n:
            kind = int(rng.random() < 0.5)
            if not by_kind[kind]:
                kind = 1 - kind
            slide = by_kind[kind][rng.integers(len(by_kind[kind]))]
            x, y = slide.draw(kind, rng)
            patch = slide.view.read(x, y, PATCH, PATCH)
            if not tissue_mask(patch, tissue).any():
                rejected += 1
                if rejected > max_tries * n:
                    raise ValueError(f"sample_patches: {rejected} draws held no tissue; check the tissue thresholds")
                continue
            anywhere, centre = slide.label(x, y)
            images[filled], labels[filled] = patch, centre
            d = slide.view.downsample
            for column, value in zip(meta, (round(y * d), round(x * d), anywhere, centre, slide.name)):
                meta[column].append(value)
            filled += 1
            tumour += centre
            if filled == len(images) or done + filled == n:
                writer.write(done, images[:filled], labels[:filled])
                done, filled = done + filled, 0
                bar.update(done - bar.n)
    log.info("%d patches (%d tumour-centred) from %d slides; %d draws rejected without tissue", n, tumour,
             len(slides), rejected)
    return pcam_path(root, split, "x"), pcam_path(root, split, "y")
