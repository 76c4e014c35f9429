"""DeepZoom tiles of any slide :mod:`equipath.wsi.reader` opens (OpenSlide, tiffslide, plain images).

The DeepZoom pyramid (the format OpenSeadragon reads) has levels ``0 .. L``, ``L = ceil(log2(max(W, H)))``:
level ``l`` is the slide shrunk by ``d = 2^(L - l)``, ``ceil(W / d) x ceil(H / d)`` pixels, cut into tiles of
``tile_size`` pixels plus ``overlap`` pixels of the neighbours on every inner side. Level ``L`` is the slide
at level 0, level 0 a single pixel. A tile is read from the coarsest slide level at least as fine as ``d``
and resized with PIL's antialiased filter; pixels past the slide are white.

Example:
    >>> import numpy as np
    >>> from equipath.wsi.reader import open_slide
    >>> dz = DeepZoom(open_slide(np.full((300, 500, 3), 200, np.uint8)), tile_size=254, overlap=1)
    >>> dz.max_level, dz.level_dimensions[-1], dz.level_dimensions[8], dz.tile_grid(9)
    (9, (500, 300), (250, 150), (2, 2))
    >>> dz.tile_box(9, 1, 0), dz.read_tile(9, 1, 0).size
    ((253, 0, 500, 255), (247, 255))
"""

import io
import math

from PIL import Image

from equipath.wsi.reader import SlideReader

__all__ = ["DeepZoom"]


class DeepZoom:
    """The DeepZoom pyramid of ``reader`` (see the module docstring).

    Args:
        reader: an open :class:`~equipath.wsi.reader.SlideReader`.
        tile_size: tile side without the overlap. Defaults to 254 (256 with a 1-pixel overlap).
        overlap: pixels shared with each neighbouring tile. Defaults to 1.
        format: ``"jpeg"`` or ``"png"``. Defaults to ``"jpeg"``.
        quality: JPEG quality. Defaults to 85.
    """

    def __init__(self, reader: SlideReader, tile_size: int = 254, overlap: int = 1, format: str = "jpeg",
                 quality: int = 85):
        if tile_size < 1 or overlap < 0:
            raise ValueError(f"DeepZoom: tile_size must be >= 1 and overlap >= 0, got {tile_size}, {overlap}")
        if format not in ("jpeg", "png"):
            raise ValueError(f"DeepZoom: format must be 'jpeg' or 'png', got {format!r}")
        self.reader, self.tile_size, self.overlap, self.format, self.quality = reader, tile_size, overlap, format, quality
        W, H = reader.dimensions
        self.max_level = max(0, math.ceil(math.log2(max(W, H))))
        self.level_dimensions = tuple((math.ceil(W / 2 ** (self.max_level - level)),
                                       math.ceil(H / 2 ** (self.max_level - level)))
                                      for level in range(self.max_level + 1))

    def descriptor(self) -> dict:
        """The ``.dzi`` descriptor as the JSON tile source OpenSeadragon accepts (add ``Url``)."""
        W, H = self.reader.dimensions
        return {"Image": {"xmlns": "http://schemas.microsoft.com/deepzoom/2008", "Format": self.format,
                          "Overlap": str(self.overlap), "TileSize": str(self.tile_size),
                          "Size": {"Width": str(W), "Height": str(H)}}}

    def tile_grid(self, level: int) -> tuple[int, int]:
        """``(columns, rows)`` of tiles on ``level``."""
        W, H = self._dimensions(level)
        return math.ceil(W / self.tile_size), math.ceil(H / self.tile_size)

    def _dimensions(self, level: int) -> tuple[int, int]:
        if not 0 <= level <= self.max_level:
            raise ValueError(f"DeepZoom level {level} does not exist (levels 0..{self.max_level})")
        return self.level_dimensions[level]

    def tile_box(self, level: int, col: int, row: int) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)`` of the tile in pixels of DeepZoom ``level``, overlap included."""
        W, H = self._dimensions(level)
        cols, rows = self.tile_grid(level)
        if not (0 <= col < cols and 0 <= row < rows):
            raise ValueError(f"DeepZoom tile ({col}, {row}) is outside level {level} ({cols} x {rows} tiles)")
        t, o = self.tile_size, self.overlap
        x0, y0 = col * t - (o if col > 0 else 0), row * t - (o if row > 0 else 0)
        return x0, y0, min((col + 1) * t + o, W), min((row + 1) * t + o, H)

    def read_tile(self, level: int, col: int, row: int) -> Image.Image:
        """The tile as an RGB PIL image."""
        x0, y0, x1, y1 = self.tile_box(level, col, row)
        d = 2.0 ** (self.max_level - level)  # level-0 pixels per DeepZoom pixel
        source = self.reader.best_level(d)
        f = d / self.reader.level_downsamples[source]  # source-level pixels per DeepZoom pixel
        sx0, sy0, sx1, sy1 = x0 * f, y0 * f, x1 * f, y1 * f
        ix0, iy0 = math.floor(sx0), math.floor(sy0)
        ix1, iy1 = max(math.ceil(sx1), ix0 + 1), max(math.ceil(sy1), iy0 + 1)
        region = Image.fromarray(self.reader.read_region(ix0, iy0, ix1 - ix0, iy1 - iy0, source))
        if region.size == (x1 - x0, y1 - y0) and (sx0, sy0) == (ix0, iy0):
            return region
        box = (sx0 - ix0, sy0 - iy0, sx1 - ix0, sy1 - iy0)
        return region.resize((x1 - x0, y1 - y0), Image.Resampling.LANCZOS, box=box)

    def tile_bytes(self, level: int, col: int, row: int) -> bytes:
        """The tile encoded in ``format``."""
        buffer = io.BytesIO()
        image = self.read_tile(level, col, row)
        if self.format == "jpeg":
            image.save(buffer, format="JPEG", quality=self.quality)
        else:
            image.save(buffer, format="PNG")
        return buffer.getvalue()
