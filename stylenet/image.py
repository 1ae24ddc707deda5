"""Image files in and out: EXIF orientation, any mode to RGB, size limits, atomic saves."""

from __future__ import annotations

import contextlib
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.transforms.v2 import functional as TF

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
# Decompression-bomb guard: PIL warns above ~89 Mpx and fails above twice that; we fail clearly
# above this many pixels (an 8K x 8K photo is 67 Mpx and passes).
MAX_PIXELS = 16384 * 16384


class ImageError(ValueError):
    """An image file that cannot be used; the message names the file and what to do."""


# What a damaged file can make PIL's decoders raise besides OSError: truncated streams (EOFError),
# broken EXIF or chunk tables (struct.error, KeyError, IndexError, TypeError, ZeroDivisionError).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, KeyError, IndexError,
                 TypeError, ZeroDivisionError, Image.DecompressionBombError)


def open_rgb(
    path: str | Path, draft_size: int | None = None, max_pixels: int | None = None
) -> Image.Image:
    """Open any image as upright RGB. draft_size lets JPEG decode at a reduced scale (DCT
    scaling) when the image will be shrunk to at least that shorter side anyway. max_pixels
    (default MAX_PIXELS) refuses larger images from the header alone, before decoding."""
    path = Path(path)
    limit = MAX_PIXELS if max_pixels is None else max_pixels
    try:
        with Image.open(path) as img:
            w, h = img.size
            if w * h > limit:
                raise ImageError(
                    f"{path}: {w}x{h} is larger than the {limit / 1e6:.0f} Mpx limit: "
                    "downscale it first"
                )
            if draft_size and img.format == "JPEG":
                scale = min(w, h) / draft_size
                if scale >= 2:
                    img.draft("RGB", (int(w / scale) + 1, int(h / scale) + 1))
            img = ImageOps.exif_transpose(img)
            return to_rgb(img)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file: check the path") from None
    except DECODE_ERRORS as e:
        raise ImageError(
            f"{path}: not a readable image ({type(e).__name__}: {e}): remove or replace the file"
        ) from None


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB: 16-bit and float greyscale are rescaled, alpha is composited
    over white, palette and CMYK are converted."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        img = Image.fromarray(np.clip(a / top * 255 + 0.5, 0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    img = img.convert("RGB")
    img.load()
    return img


def load_tensor(path: str | Path, max_side: int | None = None) -> torch.Tensor:
    """(3, H, W) float RGB in 0..1; max_side downsizes so that the longer side fits."""
    img = open_rgb(path)
    if max_side and max(img.size) > max_side:
        img = ImageOps.contain(img, (max_side, max_side), Image.Resampling.LANCZOS)
    return TF.to_dtype(TF.pil_to_tensor(img), torch.float32, scale=True)


def to_pil(image: torch.Tensor) -> Image.Image:
    """(3, H, W) float tensor in 0..1 (values outside are clamped) -> RGB PIL image."""
    # Round to the nearest 8-bit value (to_pil_image on floats truncates).
    return TF.to_pil_image(
        image.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
    )


@contextlib.contextmanager
def atomic_write(path: str | Path):
    """Yields a binary file beside `path`; on success it is synced and renamed onto `path`, on
    any error removed: a crash or a full disk never leaves half a file under the real name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates the file readable by its owner only; give it the usual permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable: without it a power cut after os.replace can bring back
    the old name (or none) on some file systems."""
    with contextlib.suppress(OSError):  # not every platform/file system can open a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_atomic(img: Image.Image, path: str | Path, **save_kwargs) -> Path:
    """Save an image under `path` atomically; the format follows the extension."""
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ImageError(f"{path}: unknown image extension: use .jpg, .png or .webp")
    with atomic_write(path) as f:
        img.save(f, format=fmt, **save_kwargs)
    return path


def list_images(root: str | Path) -> list[Path]:
    """Image files under root, recursively, sorted (so the order is the same on every machine)."""
    root = Path(root)
    return sorted(
        p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    )
