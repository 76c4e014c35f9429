"""The stain-normalisation figure of docs/reproduce.md: a region of the CMU slide (tests/data), normalised by
Macenko and by Reinhard to a reference (a SYNTHETIC H&E tile of equipath.data.synthetic, pinker and paler).

    python benchmarks/stain_figure.py docs/stain_cmu.jpg
"""

import sys

import numpy as np
from PIL import Image, ImageDraw

from equipath.data.stain import fit_stain_normalizer
from equipath.data.synthetic import synthetic_tile
from equipath.wsi.reader import open_slide


def main(out: str) -> None:
    with open_slide("tests/data/CMU-1-Small-Region.svs") as slide:
        region = slide.read_region(700, 1100, 512, 512)[..., :3]
    reference = synthetic_tile(3, seed=0, size=(512, 512)).image
    panels = [("CMU region (original)", region), ("reference (SYNTHETIC tile)", reference)]
    for method in ("macenko", "reinhard"):
        panels.append((f"{method.capitalize()} to the reference", fit_stain_normalizer(method, reference)(region)))
    size, pad = 256, 24
    canvas = Image.new("RGB", (len(panels) * (size + 8) + 8, size + pad + 8), "white")
    draw = ImageDraw.Draw(canvas)
    for k, (title, image) in enumerate(panels):
        x = 8 + k * (size + 8)
        canvas.paste(Image.fromarray(np.asarray(image, np.uint8)).resize((size, size), Image.Resampling.BILINEAR),
                     (x, pad))
        draw.text((x, 6), title, fill="black")
    canvas.save(out, quality=90)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/stain_cmu.jpg")
