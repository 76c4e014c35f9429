"""Reading whole-slide images: OpenSlide, tiffslide, or a plain image (numpy array, PIL image, PNG/JPEG file).

Every backend answers the same question: the RGB pixels ``(h, w, 3) uint8`` of a rectangle on one pyramid
level, with pixels outside the slide (and transparent pixels) filled white, so tiles at the slide border
need no special case. :class:`SlideView` then fixes one resolution, by level or by microns per pixel,
resampling from the nearest finer level when no level matches.

Backends are imported lazily: a missing one raises ``ImportError`` naming the package to install.

Example:
    >>> import numpy as np
    >>> from equipath.wsi.reader import open_slide, SlideView
    >>> slide = open_slide(np.full((300, 400, 3), 200, np.uint8), mpp=0.5)
    >>> view = SlideView.at(slide, mpp=1.0)           # half resolution, resampled from level 0
    >>> view.shape, view.read(140, 90, 80, 70).shape  # (H, W) of the view; a region outside is white
    ((150, 200), (70, 80, 3))
"""

import logging
import math
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["SlideReader", "SlideView", "open_slide", "IMAGE_SUFFIXES", "SLIDE_SUFFIXES"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif") + IMAGE_SUFFIXES


def _to_rgb(pixels: np.ndarray) -> np.ndarray:
    """``(h, w, 3|4)`` -> ``(h, w, 3) uint8``, compositing transparent pixels onto white."""
    pixels = np.asarray(pixels)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=-1)
    if pixels.shape[-1] == 4:
        alpha = pixels[..., 3:].astype(np.float32) / 255.0
        rgb = pixels[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        return np.round(rgb).astype(np.uint8)
    return np.ascontiguousarray(pixels[..., :3], dtype=np.uint8)


class SlideReader:
    """A slide pyramid: ``level_dimensions`` ``((W0, H0), (W1, H1), ...)``, ``level_downsamples`` (level-0
    pixels per level pixel) and ``mpp`` (microns per level-0 pixel, or None when the file does not say).

    Subclasses implement ``_read(x, y, w, h, level)`` for a rectangle inside the level.
    """

    backend = ""

    def __init__(self, name: str, level_dimensions, level_downsamples, mpp: float | None):
        self.name = name
        self.level_dimensions = tuple((int(w), int(h)) for w, h in level_dimensions)
        self.level_downsamples = tuple(float(d) for d in level_downsamples)
        self.mpp = mpp

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, levels={self.level_dimensions}, "
                f"mpp={self.mpp})")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        """Release the file handle (no-op for in-memory images)."""

    @property
    def dimensions(self) -> tuple[int, int]:
        """``(W, H)`` of level 0."""
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    def best_level(self, downsample: float) -> int:
        """The coarsest level whose downsample is at most ``downsample`` (level 0 if none is)."""
        fits = [i for i, d in enumerate(self.level_downsamples) if d <= downsample]
        return max(fits, key=lambda i: self.level_downsamples[i]) if fits else 0

    def read_region(self, x: int, y: int, w: int, h: int, level: int = 0) -> np.ndarray:
        """RGB pixels ``(h, w, 3) uint8`` of the rectangle at ``(x, y)`` (level pixels) on ``level``.

        Pixels outside the level are white.
        """
        if not 0 <= level < self.level_count:
            raise ValueError(f"slide {self.name}: level {level} does not exist (levels 0..{self.level_count - 1})")
        if w <= 0 or h <= 0:
            raise ValueError(f"slide {self.name}: region size must be positive, got {w}x{h}")
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        W, H = self.level_dimensions[level]
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
        if x1 > x0 and y1 > y0:
            out[y0 - y:y1 - y, x0 - x:x1 - x] = self._read(x0, y0, x1 - x0, y1 - y0, level)
        return out

    def _read(self, x: int, y: int, w: int, h: int, level: int) -> np.ndarray:
        raise NotImplementedError


class _OpenSlideReader(SlideReader):
    backend = "openslide"

    def __init__(self, path: Path, openslide):
        self._module = openslide
        self._slide = openslide.OpenSlide(str(path))
        mpp = self._slide.properties.get(openslide.PROPERTY_NAME_MPP_X)
        super().__init__(str(path), self._slide.level_dimensions, self._slide.level_downsamples,
                         float(mpp) if mpp else None)

    def _read(self, x, y, w, h, level):
        ds = self.level_downsamples[level]
        try:
            region = self._slide.read_region((round(x * ds), round(y * ds)), level, (w, h))
        except self._module.OpenSlideError as exc:
            raise ValueError(f"slide {self.name}: could not read pixels ({exc}); the file may be corrupt") from None
        return _to_rgb(np.asarray(region))

    def close(self):
        self._slide.close()


class _TiffSlideReader(SlideReader):
    backend = "tiffslide"

    def __init__(self, path: Path, tiffslide):
        self._slide = tiffslide.TiffSlide(str(path))
        mpp = self._slide.properties.get(tiffslide.PROPERTY_NAME_MPP_X)
        super().__init__(str(path), self._slide.level_dimensions, self._slide.level_downsamples,
                         float(mpp) if mpp else None)

    def _read(self, x, y, w, h, level):
        ds = self.level_downsamples[level]
        try:
            region = self._slide.read_region((round(x * ds), round(y * ds)), level, (w, h), as_array=True)
        except (ValueError, OSError, RuntimeError, KeyError) as exc:
            raise ValueError(f"slide {self.name}: could not read pixels ({exc}); the file may be corrupt") from None
        return _to_rgb(region)

    def close(self):
        self._slide.close()


class _ImageReader(SlideReader):
    backend = "image"

    def __init__(self, pixels: np.ndarray, name: str, mpp: float | None):
        if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[-1] not in (3, 4)):
            raise ValueError(f"image {name}: expected (H, W), (H, W, 3) or (H, W, 4) pixels, got {pixels.shape}")
        if pixels.dtype != np.uint8:
            raise ValueError(f"image {name}: expected uint8 pixels, got {pixels.dtype}")
        self._pixels = _to_rgb(pixels)
        super().__init__(name, [(pixels.shape[1], pixels.shape[0])], [1.0], mpp)

    def _read(self, x, y, w, h, level):
        return self._pixels[y:y + h, x:x + w]


def _import(name: str):
    try:
        return __import__(name)
    except ImportError:
        return None


def open_slide(source, backend: str = "auto", mpp: float | None = None) -> SlideReader:
    """Open a slide file, or wrap an image already in memory.

    Args:
        source: a path (``.svs``, ``.tif``, ``.ndpi``, ... through OpenSlide or tiffslide; ``.png`` / ``.jpg``
            through PIL), an ``(H, W, 3)`` uint8 numpy array, or a PIL image.
        backend: ``"auto"`` (images through PIL, slides through OpenSlide, then tiffslide), ``"openslide"``,
            ``"tiffslide"`` or ``"image"``. Defaults to ``"auto"``.
        mpp: microns per level-0 pixel of a file that does not record it (images never do); a file's own
            metadata wins. Defaults to None.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a readable slide (unsupported or corrupt), or the array is not RGB uint8.
        ImportError: the backend the file needs is not installed.
    """
    if backend not in ("auto", "openslide", "tiffslide", "image"):
        raise ValueError(f"unknown slide backend {backend!r}: expected auto, openslide, tiffslide or image")
    if isinstance(source, Image.Image):
        return _ImageReader(np.asarray(source.convert("RGBA" if "A" in source.mode else "RGB")), "<PIL image>", mpp)
    if isinstance(source, np.ndarray):
        return _ImageReader(source, "<array>", mpp)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"slide {path} does not exist")
    if backend == "image" or (backend == "auto" and path.suffix.lower() in IMAGE_SUFFIXES):
        try:
            with Image.open(path) as im:
                pixels = np.asarray(im.convert("RGBA" if "A" in im.mode else "RGB"))
        except (OSError, Image.DecompressionBombError) as exc:
            raise ValueError(f"image {path} could not be read ({exc})") from None
        return _ImageReader(pixels, str(path), mpp)
    reader = _open_pyramid(path, backend)
    try:
        _check_declared_size(reader, path)
    except ValueError:
        reader.close()
        raise
    if reader.mpp is None and mpp is not None:
        reader.mpp = float(mpp)
    log.debug("opened %r with %s", reader, reader.backend)
    return reader


MAX_COARSEST_PIXELS = 2**30  # the coarsest level is read whole (tissue mask, thumbnail): at most a gigapixel
MIN_BYTES_PER_PIXEL = 1e-3  # real slides hold >= 0.01 bytes per level-0 pixel, even JPEG-compressed background
_SINGLE_FILE = (".svs", ".tif", ".tiff", ".ndpi", ".scn", ".bif", ".svslide")  # not .mrxs / .vms: data elsewhere


def _check_declared_size(reader: SlideReader, path: Path) -> None:
    """Refuse, in one line, a slide whose declared size cannot be real or cannot be read in reasonable time:
    a coarsest level above :data:`MAX_COARSEST_PIXELS` (no pyramid: the tissue mask would decode the whole
    slide), or a single-file slide holding under :data:`MIN_BYTES_PER_PIXEL` bytes per declared pixel (a small
    file declaring an enormous image, its tiles repeated or missing)."""
    (w0, h0), (wc, hc) = reader.level_dimensions[0], reader.level_dimensions[-1]
    if wc * hc > MAX_COARSEST_PIXELS:
        raise ValueError(f"slide {path} declares {w0} x {h0} pixels with no pyramid level below {wc} x {hc}: "
                         "finding its tissue would decode the whole image; convert it to a pyramidal TIFF "
                         "(e.g. vips tiffsave --tile --pyramid)")
    size = path.stat().st_size
    if path.suffix.lower() in _SINGLE_FILE and w0 * h0 > 2**28 and size < MIN_BYTES_PER_PIXEL * w0 * h0:
        raise ValueError(f"slide {path} declares {w0} x {h0} pixels but the file holds only {size} bytes "
                         f"({size / (w0 * h0):.1e} bytes per pixel): not a real slide (repeated or missing tiles)")


def _open_pyramid(path: Path, backend: str) -> SlideReader:
    wanted = ("openslide", "tiffslide") if backend == "auto" else (backend,)
    modules = {name: _import(name) for name in wanted}
    if all(m is None for m in modules.values()):
        raise ImportError(f"reading {path.name} needs {' or '.join(wanted)}: install them with "
                          f"`pip install 'equipath[wsi]'` (openslide-python, openslide-bin, tiffslide)")
    errors = []
    for name, module in modules.items():
        if module is None:
            continue
        try:
            return (_OpenSlideReader if name == "openslide" else _TiffSlideReader)(path, module)
        except Exception as exc:  # noqa: BLE001 - each backend raises its own types; all are reported below
            errors.append(f"{name}: {exc.__class__.__name__}: {exc}".strip())
    raise ValueError(f"slide {path} is unsupported or corrupt ({'; '.join(errors)})")


class SlideView:
    """The slide at one resolution: view pixel ``(x, y)`` covers level-0 pixels
    ``[x * d, (x + 1) * d) x [y * d, (y + 1) * d)`` with ``d = downsample``.

    Pixels come from the coarsest pyramid level at least as fine as ``d`` (within ``tolerance``, so a level
    within 2 % of the request is used as it is); when the level is finer, the region is resampled with
    PIL's antialiased bilinear filter from a source rectangle with a margin, so every read of a pixel gives
    the same value wherever the region starts (up to one grey level of rounding).

    Example:
        >>> import numpy as np
        >>> slide = open_slide(np.zeros((64, 64, 3), np.uint8))
        >>> SlideView.at(slide, level=0).shape
        (64, 64)
    """

    def __init__(self, reader: SlideReader, downsample: float, tolerance: float = 0.02):
        if not downsample > 0:
            raise ValueError(f"slide {reader.name}: downsample must be positive, got {downsample}")
        self.reader = reader
        self.level = reader.best_level(downsample * (1 + tolerance))
        level_ds = reader.level_downsamples[self.level]
        factor = downsample / level_ds
        if abs(factor - 1) <= tolerance:
            factor, downsample = 1.0, level_ds
        self.factor = factor  # level pixels per view pixel
        self.downsample = downsample
        W, H = reader.level_dimensions[self.level]
        self.shape = (int(H // factor), int(W // factor)) if factor != 1 else (H, W)

    @classmethod
    def at(cls, reader: SlideReader, level: int | None = None, mpp: float | None = None,
           tolerance: float = 0.02) -> "SlideView":
        """The view at pyramid ``level`` or at ``mpp`` microns per pixel (level 0 when neither is given)."""
        if level is not None and mpp is not None:
            raise ValueError("give a level or a resolution in microns per pixel, not both")
        if mpp is not None:
            if reader.mpp is None:
                raise ValueError(f"slide {reader.name} has no microns-per-pixel metadata: give its level-0 "
                                 f"resolution (--slide-mpp UM_PER_PX on the command line, open_slide(..., mpp=) in "
                                 f"Python) or run at a pyramid level (--level N)")
            return cls(reader, mpp / reader.mpp, tolerance)
        level = level or 0
        if not 0 <= level < reader.level_count:
            raise ValueError(f"slide {reader.name}: level {level} does not exist (levels 0..{reader.level_count - 1})")
        return cls(reader, reader.level_downsamples[level], tolerance=0.0)

    @property
    def mpp(self) -> float | None:
        """Microns per view pixel, or None when the slide's resolution is unknown."""
        return None if self.reader.mpp is None else self.reader.mpp * self.downsample

    def coarser(self, factor: float) -> "SlideView":
        """The same slide ``factor`` times coarser (e.g. for a thumbnail or a tissue mask)."""
        return SlideView(self.reader, self.downsample * factor)

    def read(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        """RGB pixels ``(h, w, 3) uint8`` of the view rectangle at ``(x, y)``; outside the slide is white."""
        if self.factor == 1:
            return self.reader.read_region(x, y, w, h, self.level)
        f = self.factor
        margin = math.ceil(f) + 1
        sx0, sy0, sx1, sy1 = x * f, y * f, (x + w) * f, (y + h) * f
        ix0, iy0 = math.floor(sx0) - margin, math.floor(sy0) - margin
        ix1, iy1 = math.ceil(sx1) + margin, math.ceil(sy1) + margin
        source = Image.fromarray(self.reader.read_region(ix0, iy0, ix1 - ix0, iy1 - iy0, self.level))
        box = (sx0 - ix0, sy0 - iy0, sx1 - ix0, sy1 - iy0)
        return np.asarray(source.resize((w, h), Image.Resampling.BILINEAR, box=box))

    def read_all(self, chunk: int = 4096) -> np.ndarray:
        """The whole view ``(H, W, 3) uint8``, read in chunks of at most ``chunk``^2 source pixels."""
        H, W = self.shape
        out = np.empty((H, W, 3), dtype=np.uint8)
        step = max(1, int(chunk / max(self.factor, 1.0)))
        for y in range(0, H, step):
            for x in range(0, W, step):
                h, w = min(step, H - y), min(step, W - x)
                out[y:y + h, x:x + w] = self.read(x, y, w, h)
        return out
