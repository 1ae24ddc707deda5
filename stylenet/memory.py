"""In-memory datasets with PhotoFolder's interface: synthetic photo-like images for tests, and
pre-cut crops saved as one tensor (the quality benchmark hands both sides the same pixels)."""

from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from stylenet.data import split_key


class SyntheticImages(Dataset):
    """`n` deterministic in-memory photo-like images (smooth colour fields with edges), for
    tests."""

    def __init__(self, n: int = 16, image_size: int = 64, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        low = torch.rand(n, 3, 4, 4, generator=gen)
        smooth = torch.nn.functional.interpolate(
            low, size=(image_size, image_size), mode="bicubic", align_corners=False
        )
        y = torch.linspace(0, 1, image_size).view(1, 1, -1, 1)
        x = torch.linspace(0, 1, image_size).view(1, 1, 1, -1)
        freq = torch.randint(2, 8, (n, 1, 1, 1), generator=gen).float()
        stripes = 0.25 * torch.sin(2 * math.pi * freq * (x + 0.5 * y))
        self.images = ((smooth + stripes).clamp(0, 1) * 255).round().to(torch.uint8)

    @property
    def image_size(self) -> int:
        """The side of the square images served (PhotoFolder's crop size)."""
        return self.images.shape[-1]

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int, random_crop=None, generator=None, size=None) -> torch.Tensor:
        image = self.images[index]
        return image if size is None else TF.resize(image, [size, size], antialias=True)

    def __getitem__(self, key: int | tuple[int, int]) -> torch.Tensor:
        return self.images[split_key(key)[0]]


class TensorImages(SyntheticImages):
    """Photos already cut to crops, saved as one uint8 tensor (N, 3, S, S) with torch.save: no
    decoding while training, and the same pixels for every run that reads the file (the quality
    benchmark hands the same crops to stylenet and to the reference loop this way)."""

    def __init__(self, path: str):
        try:
            images = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise FileNotFoundError(f"data.dataset.path={path}: no such file") from None
        if not (isinstance(images, torch.Tensor) and images.dtype == torch.uint8
                and images.dim() == 4 and images.shape[1] == 3):
            raise ValueError(f"data.dataset.path={path}: expected a uint8 (N, 3, H, W) tensor")
        self.images = images
