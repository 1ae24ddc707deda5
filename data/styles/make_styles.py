"""Generates the bundled example style images (our own work, same licence as stylenet).

python data/styles/make_styles.py  ->  data/styles/mosaic.png, data/styles/waves.png
Deterministic: the same files every time.
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

HERE = Path(__file__).parent
SIZE = 512


def mosaic(seed: int = 1) -> Image.Image:
    """Stained-glass Voronoi tiles in saturated colours with dark lead lines."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(0, SIZE, (220, 2))
    palette = np.array(
        [
            [214, 40, 40],
            [247, 127, 0],
            [252, 191, 73],
            [234, 226, 183],
            [0, 48, 73],
            [42, 157, 143],
            [38, 70, 83],
            [120, 40, 140],
        ],
        float,
    )
    colours = palette[rng.integers(0, len(palette), len(points))]
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    d = np.sqrt((xx[..., None] - points[:, 0]) ** 2 + (yy[..., None] - points[:, 1]) ** 2)
    order = np.argsort(d, axis=-1)[..., :2]
    d1 = np.take_along_axis(d, order[..., :1], -1)[..., 0]
    d2 = np.take_along_axis(d, order[..., 1:2], -1)[..., 0]
    img = colours[order[..., 0]]
    img *= 0.85 + 0.3 * rng.random((SIZE, SIZE, 1))  # glass grain
    img[(d2 - d1) < 3.0] = (25, 20, 20)  # lead lines between tiles
    return Image.fromarray(img.clip(0, 255).astype(np.uint8)).filter(ImageFilter.SMOOTH)


def waves(seed: int = 2) -> Image.Image:
    """Swirling brush-stroke bands in night blues and yellows."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    phase = 14 * (x + 0.15 * np.sin(7 * y + 3 * x) + 0.1 * np.sin(13 * x * y + 1.5))
    swirl = np.sin(2 * np.pi * phase) + 0.5 * np.sin(2 * np.pi * 3.1 * (y + 0.2 * np.sin(5 * x)))
    t = (swirl - swirl.min()) / (swirl.max() - swirl.min())
    stops = np.array(
        [[10, 25, 80], [30, 70, 160], [90, 140, 210], [240, 220, 110], [250, 245, 220]], float
    )
    pos = t * (len(stops) - 1)
    i = np.clip(pos.astype(int), 0, len(stops) - 2)
    f = (pos - i)[..., None]
    img = stops[i] * (1 - f) + stops[i + 1] * f
    strokes = rng.normal(0, 1, (SIZE, SIZE // 8)).repeat(8, axis=1)  # short horizontal strokes
    img *= (1 + 0.12 * strokes)[..., None]
    return Image.fromarray(img.clip(0, 255).astype(np.uint8)).filter(ImageFilter.SMOOTH_MORE)


if __name__ == "__main__":
    for name, make in [("mosaic", mosaic), ("waves", waves)]:
        make().save(HERE / f"{name}.png", optimize=True)
        print(HERE / f"{name}.png")
