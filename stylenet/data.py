"""Training photos: a recursive image-folder dataset that skips bad files, and the DataModule that
serves any dataset (this one, or stylenet/memory.py's in-memory ones) as uint8 batches,
normalised on the GPU."""

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
from stylenet.loader import ResumableLoader, ResumableSampler

log = logging.getLogger(__name__)

# Training photos above this are refused from the header: crops are a few hundred pixels, and a
# decoded 100 Mpx PNG per loader worker is how a decompression bomb ends a run (8K x 8K passes).
TRAIN_MAX_PIXELS = 8192 * 8192
# Photo headers read at start-up to check that the crop fits the photos (cheap: no decoding).
PROBE_FILES = 32
# The photos' shape assumed when sizing the cache (width over height): wider than most cameras'.
CACHE_ASPECT = 16 / 9


def crop_photo(img: Image.Image, size: int, resize: int | None = None, random: bool = False,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Resize the shorter side to `resize` (default `size`) and crop a `size` square, at the
    centre as the reference recipe does, or at a random place drawn from `generator` (the global
    RNG when None): (3, size, size) uint8."""
    return crop_resized(resize_photo(img, resize or size), size, random, generator)


def resize_photo(img: Image.Image, side: int) -> torch.Tensor:
    """A photo as (3, H, W) uint8, its shorter side `side` (antialiased)."""
    return TF.resize(TF.pil_to_tensor(img), side, antialias=True)


def crop_resized(t: torch.Tensor, size: int, random: bool = False,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """crop_photo's crop, of a photo already resized: (3, H, W) uint8 -> (3, size, size)."""
    if not random:
        return TF.center_crop(t, size)
    h, w = t.shape[-2:]
    top = int(torch.randint(0, h - size + 1, (), generator=generator))
    left = int(torch.randint(0, w - size + 1, (), generator=generator))
    return TF.crop(t, top, left, size, size)


def split_key(key: int | tuple[int, int]) -> tuple[int, int | None]:
    """Dataset keys are an index, or (index, crop seed) from ResumableSampler."""
    return key if isinstance(key, tuple) else (key, None)


class PhotoFolder(Dataset):
    """Every .jpg/.jpeg/.png/.webp under `root` (recursively), or an explicit list of `files`.

    package: root and files are relative to it. Items are uint8 (3, S, S), S = image_size.
    resize: shorter side before cropping (default image_size). Unusable photos (undecodable,
    below min_size, over max_pixels, crop std below min_std) are skipped once, with a warning, for
    the next file; bad_indices() lists them. cache_mb: when every photo, resized, fits in this
    (reckoned at CACHE_ASPECT), each is decoded once and kept, resized, in memory (per loader
    process); the crops are the same as without it. 0: decode every time.
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
        max_pixels: int = TRAIN_MAX_PIXELS,
        cache_mb: float = 0,
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
            raise ValueError("PhotoFolder needs root or files: set data.dataset.root")
        self.image_size = image_size
        self.min_size = min_size
        self.min_std = min_std
        self.draft = draft
        self.resize = max(resize or image_size, image_size)
        self.random_crop = random_crop
        self.max_pixels = max_pixels
        per_photo = 3 * self.resize * math.ceil(self.resize * CACHE_ASPECT)
        self.cache: dict[int, torch.Tensor] | None = (
            {} if len(self.paths) * per_photo <= cache_mb * 2**20 else None)
        self.where = str(base / root) if root is not None and not files else "data.files"
        # Shared memory: loader workers (forked or spawned) see each other's findings.
        self.bad = torch.zeros(len(self.paths), dtype=torch.bool).share_memory_()
        # Two workers can fail on the same file at once; the flag is claimed under this lock so
        # that exactly one of them warns and counts it.
        self._bad_lock = torch.multiprocessing.get_context().Lock()
        self._check_photos()

    def __len__(self) -> int:
        return len(self.paths)

    def _check_photos(self) -> None:
        """Start-up checks: the crop fits the photos, and at least one photo is usable."""
        sides = []
        for path in self.paths[:PROBE_FILES]:
            try:
                with Image.open(path) as img:  # reads the header only
                    sides.append(min(img.size))
            except Exception:  # noqa: BLE001 - a bad file here is found again, and named, below
                continue
        if sides and max(sides) < self.image_size:
            raise ValueError(
                f"data.dataset.image_size={self.image_size} is larger than every photo checked "
                f"(the first {len(sides)} in {self.where}; the largest shorter side is "
                f"{max(sides)} px): lower data.dataset.image_size to {max(sides)} or less"
            )
        first_error = None
        for i in range(len(self.paths)):
            try:
                self.load(i, random_crop=False)
                return
            except Exception as e:  # noqa: BLE001 - see __getitem__
                first_error = first_error or self._describe(i, e)
        raise ValueError(
            f"none of the {len(self.paths)} photos in {self.where} is usable (first: "
            f"{first_error}): set data.dataset.root to a folder of readable photos"
        )

    def load(
        self,
        index: int,
        random_crop: bool | None = None,
        generator: torch.Generator | None = None,
        size: int | None = None,
    ) -> torch.Tensor:
        """One photo as a (3, S, S) uint8 crop; raises ImageError when it is unusable.
        random_crop=False gives the whole photo's centre square at `size` (for previews)."""
        if random_crop is False:
            crop = crop_photo(self._open(index), size or self.image_size)
        else:
            resized = self.cache.get(index) if self.cache is not None else None
            if resized is None:
                resized = resize_photo(self._open(index), self.resize)
                if self.cache is not None:
                    self.cache[index] = resized
            crop = crop_resized(resized, self.image_size, self.random_crop, generator)
        # Spatial spread per channel: a plain coloured wallpaper has a large std across its three
        # channels but none across pixels, and instance norm sees only the latter.
        if crop.float().flatten(1).std(dim=1).max() < self.min_std:
            raise ImageError(
                f"{self.paths[index]}: the crop is a near-constant colour "
                "(unusable for instance norm)"
            )
        return crop

    def _open(self, index: int) -> Image.Image:
        """The photo decoded (at a reduced DCT scale when draft is on); too small: ImageError."""
        path = self.paths[index]
        draft = self.resize if self.draft else None
        img = open_rgb(path, draft_size=draft, max_pixels=self.max_pixels)
        if min(img.size) < self.min_size:
            raise ImageError(
                f"{path}: {img.size[0]}x{img.size[1]} is smaller than "
                f"data.dataset.min_size={self.min_size}"
            )
        return img

    def _describe(self, index: int, error: Exception) -> str:
        if isinstance(error, ImageError):
            return str(error)  # already names the file
        return f"{self.paths[index]}: {type(error).__name__}: {error}"

    def __getitem__(self, key: int | tuple[int, int]) -> torch.Tensor:
        index, seed = split_key(key)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        for offset in range(len(self.paths)):
            i = (index + offset) % len(self.paths)
            if self.bad[i]:
                continue
            try:
                return self.load(i, generator=generator)
            # Not only ImageError: decoders run third-party C code on files nobody checked, and
            # one odd photo must not end a run of hours. A bug shows as every photo skipped.
            except Exception as e:  # noqa: BLE001
                with self._bad_lock:
                    first = not self.bad[i]  # another worker may have flagged it meanwhile
                    self.bad[i] = True
                if first:
                    log.warning("skipping training photo: %s", self._describe(i, e))
        raise RuntimeError(
            f"none of the {len(self.paths)} training photos is usable any more: check "
            f"data.dataset.root ({self.where}) and the warnings above"
        )

    def bad_indices(self) -> list[int]:
        return torch.nonzero(self.bad).flatten().tolist()

    def mark_bad(self, indices: list[int]) -> None:
        """Flag files found unusable before a restart, so they are not warned about again."""
        self.bad[[i for i in indices if i < len(self.bad)]] = True


class StyleDataModule(pl.LightningDataModule):
    """Splits off the last `val_size` photos for validation; the first `num_preview` of those are
    the fixed preview photos logged to TensorBoard (at `preview_size`: the net is fully
    convolutional, so previews can be larger than the training crops)."""

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int = 4,
        num_workers: int = 0,
        val_size: int = 8,
        num_preview: int = 4,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        seed: int | None = None,
        preview_size: int | None = None,
        shuffle: bool = True,
    ):
        super().__init__()
        n = len(dataset)
        if n < val_size + batch_size:
            where = getattr(dataset, "where", "the dataset")
            raise ValueError(
                f"{n} photos in {where}, but data.val_size={val_size} are held out and a batch "
                f"takes data.batch_size={batch_size}: add photos (at least "
                f"{val_size + batch_size}) or lower data.val_size or data.batch_size"
            )
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_size = val_size
        self.num_preview = min(num_preview, val_size)
        self.preview_size = preview_size  # None: the training crop size
        self.shuffle = shuffle  # False: the photos in the order of the dataset
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        # None: the seed train() gave seed_everything (torch's initial seed); saved in checkpoints.
        self.seed = torch.initial_seed() % 2**63 if seed is None else seed
        self.train_set = Subset(dataset, range(0, n - val_size))
        self.val_set = Subset(dataset, range(n - val_size, n))

    def preview_images(self) -> torch.Tensor:
        """(P, 3, S, S) uint8: the same photos, centre-cropped, at every step and in every run.
        An unusable held-out photo is passed over for the next one (training skips it later)."""
        images = []
        for i in [*self.val_set.indices, *self.train_set.indices]:
            if len(images) == self.num_preview:
                break
            try:
                images.append(self.dataset.load(i, random_crop=False, size=self.preview_size))
            except Exception as e:  # noqa: BLE001 - as in PhotoFolder.__getitem__
                log.warning("preview photo passed over: %s", e)
        return torch.stack(images)

    def _loader_kwargs(self) -> dict:
        return dict(
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.persistent_workers,
        )

    def train_dataloader(self) -> DataLoader:
        sampler = ResumableSampler(self.train_set.indices, seed=self.seed, shuffle=self.shuffle)
        # drop_last: constant batch shape in training (the sampler drops the DDP remainder).
        return ResumableLoader(
            self.dataset, sampler=sampler, drop_last=True, **self._loader_kwargs()
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, shuffle=False, drop_last=False, **self._loader_kwargs())
