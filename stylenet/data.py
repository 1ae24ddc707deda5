"""Training photos: a recursive image-folder dataset that skips bad files, an in-memory synthetic
dataset for tests, and the DataModule that serves them as uint8 batches (normalised on the GPU)."""

from __future__ import annotations

import importlib.resources
import logging
import math
from pathlib import Path

import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.transforms.v2 import functional as TF

from stylenet.image import ImageError, list_images, open_rgb

log = logging.getLogger(__name__)


def crop_photo(img: Image.Image, size: int, resize: int | None = None, random: bool = False) -> torch.Tensor:
    """Resize the shorter side to `resize` (default `size`) and crop a `size` square, at the
    centre as the reference recipe does, or at a random place: (3, size, size) uint8."""
    t = TF.resize(TF.pil_to_tensor(img), resize or size, antialias=True)
    if not random:
        return TF.center_crop(t, size)
    h, w = t.shape[-2:]
    top = int(torch.randint(0, h - size + 1, ()))
    left = int(torch.randint(0, w - size + 1, ()))
    return TF.crop(t, top, left, size, size)


class ImageFolder(Dataset):
    """Every .jpg/.jpeg/.png/.webp under `root` (recursively), or an explicit list of `files`.

    With `package`, root and files are relative to that installed Python package (the demo reads
    scikit-image's bundled photos this way). Items are (image uint8 (3, S, S), files skipped).
    `resize` (shorter side, default image_size) above image_size with `random_crop` gives many
    different crops of few photos. A file that cannot be decoded, is smaller than `min_size`, or whose crop is near-constant
    (std below `min_std`, which makes instance norm amplify noise without bound) is skipped once
    with a warning naming it, and the next file is served instead so batches keep their size.
    """

    def __init__(
        self,
        root: str | None = None,
        files: list[str] | None = None,
        package: str | None = None,
        image_size: int = 256,
        min_size: int = 32,
        min_std: float = 2.0,
        draft: bool = True,
        resize: int | None = None,
        random_crop: bool = False,
    ):
        base = Path(str(importlib.resources.files(package))) if package else Path(".")
        if files:
            self.paths = [base / f for f in files]
            missing = [str(p) for p in self.paths if not p.is_file()]
            if missing:
                raise FileNotFoundError(f"data files not found: {missing}: check data.files")
        elif root is not None:
            root_path = base / root
            if not root_path.is_dir():
                raise FileNotFoundError(
                    f"training photo folder {root_path} does not exist: download COCO train2014 "
                    "as data/README.md says, or set data.dataset.root to a folder of photos "
                    "(or run with data=demo / data=synthetic)"
                )
            self.paths = list_images(root_path)
            if not self.paths:
                raise FileNotFoundError(
                    f"no .jpg/.jpeg/.png/.webp photos under {root_path}: "
                    "set data.dataset.root to a folder of photos"
                )
        else:
            raise ValueError("ImageFolder needs root or files: set data.dataset.root")
        self.image_size = image_size
        self.min_size = min_size
        self.min_std = min_std
        self.draft = draft
        self.resize = max(resize or image_size, image_size)
        self.random_crop = random_crop
        self.bad: set[int] = set()  # per worker process: indices already warned about

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int, random_crop: bool | None = None) -> torch.Tensor:
        """One photo as a (3, S, S) uint8 crop; raises ImageError when it is unusable.
        random_crop=False gives the whole photo's centre square (for previews)."""
        path = self.paths[index]
        img = open_rgb(path, draft_size=self.resize if self.draft else None)
        if min(img.size) < self.min_size:
            raise ImageError(f"{path}: {img.size[0]}x{img.size[1]} is smaller than data.min_size={self.min_size}")
        if random_crop is False:
            crop = crop_photo(img, self.image_size)
        else:
            crop = crop_photo(img, self.image_size, self.resize, self.random_crop)
        if crop.float().std() < self.min_std:
            raise ImageError(f"{path}: the crop is a near-constant colour (unusable for instance norm)")
        return crop

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        skipped = 0
        for offset in range(len(self.paths)):
            i = (index + offset) % len(self.paths)
            if i in self.bad:
                continue
            try:
                return self.load(i), skipped
            except ImageError as e:
                self.bad.add(i)
                skipped += 1
                log.warning("skipping training photo: %s", e)
        raise RuntimeError(
            f"none of the {len(self.paths)} training photos is usable: check data.dataset.root"
        )


class SyntheticImages(Dataset):
    """`n` deterministic in-memory photos-like images (smooth colour fields with edges), for tests."""

    def __init__(self, n: int = 16, image_size: int = 64, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        low = torch.rand(n, 3, 4, 4, generator=gen)
        smooth = torch.nn.functional.interpolate(low, size=(image_size, image_size), mode="bicubic", align_corners=False)
        y = torch.linspace(0, 1, image_size).view(1, 1, -1, 1)
        x = torch.linspace(0, 1, image_size).view(1, 1, 1, -1)
        freq = torch.randint(2, 8, (n, 1, 1, 1), generator=gen).float()
        stripes = 0.25 * torch.sin(2 * math.pi * freq * (x + 0.5 * y))
        self.images = ((smooth + stripes).clamp(0, 1) * 255).round().to(torch.uint8)

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int, random_crop: bool | None = None) -> torch.Tensor:
        return self.images[index]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], 0


class StyleDataModule(pl.LightningDataModule):
    """Splits off the last `val_size` photos for validation; the first `num_preview` of those are
    the fixed preview photos logged to TensorBoard."""

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int = 4,
        num_workers: int = 0,
        val_size: int = 8,
        num_preview: int = 4,
        pin_memory: bool = True,
        persistent_workers: bool = True,
    ):
        super().__init__()
        if len(dataset) <= val_size:
            raise ValueError(
                f"only {len(dataset)} photos but data.val_size={val_size}: add photos or lower val_size"
            )
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_size = val_size
        self.num_preview = min(num_preview, val_size)
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        n = len(dataset)
        self.train_set = Subset(dataset, range(0, n - val_size))
        self.val_set = Subset(dataset, range(n - val_size, n))
        if len(self.train_set) < batch_size:
            raise ValueError(
                f"{len(self.train_set)} training photos are fewer than data.batch_size={batch_size}"
            )

    def preview_images(self) -> torch.Tensor:
        """(P, 3, S, S) uint8: the same photos, centre-cropped, at every step and in every run."""
        indices = self.val_set.indices[: self.num_preview]
        return torch.stack([self.dataset.load(i, random_crop=False) for i in indices])

    def _loader(self, subset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            subset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=shuffle,  # constant batch shape in training
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.persistent_workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)
