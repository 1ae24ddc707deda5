"""benchmarks/quality.py's photos: the training photos it cuts crops from (data/photos, or
scikit-image's bundled ones), the held-out photos it scores on, and the crops themselves."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from stylenet.image import list_images, open_rgb

ROOT = Path(__file__).resolve().parents[1]
SKIMAGE = Path(str(importlib.resources.files("skimage"))) / "data"
# Held out: never cut into training crops. People and animals show whether the subject survives.
HELD_OUT = [SKIMAGE / "astronaut.png", SKIMAGE / "chelsea.png"]
# Real photos bundled with scikit-image, for machines without data/photos (the tests use these).
SKIMAGE_TRAIN = ["rocket.jpg", "coffee.png", "motorcycle_left.png", "hubble_deep_field.jpg",
                 "retina.jpg", "motorcycle_right.png"]


def training_photos(folder: str) -> list[Path]:
    if folder == "auto":
        photos = ROOT / "data" / "photos"
        folder = str(photos) if list_images(photos) else "skimage"
    if folder != "skimage":
        paths = list_images(Path(folder))
        if not paths:
            raise SystemExit(f"--photos {folder}: no .jpg/.png/.webp photos there")
        return paths
    return [SKIMAGE / name for name in SKIMAGE_TRAIN]


def resized(path: Path, shorter: int) -> torch.Tensor:
    """(3, H, W) uint8 with the shorter side `shorter` and both sides multiples of 4."""
    img = open_rgb(path)
    scale = shorter / min(img.size)
    w, h = round(img.width * scale) // 4 * 4, round(img.height * scale) // 4 * 4
    return TF.pil_to_tensor(img.resize((w, h), Image.Resampling.LANCZOS))


def cut_crops(photos: list[torch.Tensor], n: int, size: int, seed: int) -> torch.Tensor:
    """n random (3, size, size) crops of random photos (each pre-resized to 2x the crop), with
    random horizontal flips: (n, 3, size, size) uint8."""
    gen = torch.Generator().manual_seed(seed)
    out = torch.empty(n, 3, size, size, dtype=torch.uint8)
    for i in range(n):
        photo = photos[int(torch.randint(len(photos), (), generator=gen))]
        h, w = photo.shape[-2:]
        top = int(torch.randint(h - size + 1, (), generator=gen))
        left = int(torch.randint(w - size + 1, (), generator=gen))
        crop = photo[:, top : top + size, left : left + size]
        out[i] = crop.flip(-1) if torch.rand((), generator=gen) < 0.5 else crop
    return out
