"""Image files in and out: EXIF orientation, any mode to RGB, alpha, EXIF and colour profiles
kept, size limits, atomic saves, image grids, and the style image as training reads it."""

from __future__ import annotations

import errno
import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps
from torchvision.transforms.v2 import functional as TF
from torchvision.utils import make_grid

from stylenet.util import atomic_write

# What stylenet reads from folders and writes: PIL reads more, but these keep colour and alpha
# handling simple and play everywhere.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
ALPHA_EXTENSIONS = (".png", ".webp")  # JPEG has no alpha channel
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




def check_image_path(path: str | Path, setting: str = "output", value: str | None = None) -> Path:
    """path, if its extension is one stylenet writes; else an ImageError naming the setting
    and its value (default: the path)."""
    path = Path(path)
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise ImageError(f"{setting}={value or path}: unknown image extension: use .jpg, .png "
                         "or .webp")
    return path


def check_overwrite(dst: Path, overwrite: bool, src: Path | None = None) -> None:
    """Refuse to replace an existing file unless asked, saying so when it is the input itself."""
    if dst.exists() and not overwrite:
        same = src is not None and dst.resolve() == Path(src).resolve()
        what = "would overwrite the input" if same else "exists"
        raise ImageError(f"output={dst}: {what}: choose another output or set overwrite=true")


def save_atomic(img: Image.Image, path: str | Path, **save_kwargs) -> Path:
    """Save an image under `path` atomically; the format follows the extension."""
    path = check_image_path(path)
    with atomic_write(path) as f:
        img.save(f, format=Image.registered_extensions()[path.suffix.lower()], **save_kwargs)
    return path


@dataclass
class Photo:
    """An image as read from disk: upright RGB, plus what is reattached on save."""

    rgb: torch.Tensor  # (3, H, W) in 0..1
    alpha: Image.Image | None = None  # the "A" band, same size as rgb
    exif: bytes | None = None  # orientation reset to 1: the pixels are already upright
    icc: bytes | None = None  # colour profile, so the output is interpreted like the input


def read_photo(path: str | Path, max_size: int | None = None) -> Photo:
    """Any image file -> Photo. 16-bit and greyscale inputs are rescaled by open_rgb; alpha is
    read separately because open_rgb composites it away (the RGB then sits on white)."""
    path = Path(path)
    img = open_rgb(path)  # raises ImageError with the file name for unreadable files
    with Image.open(path) as raw:
        exif = raw.getexif()
        icc = raw.info.get("icc_profile")
        alpha = None
        if raw.mode in ("RGBA", "LA", "PA") or "transparency" in raw.info:
            alpha = ImageOps.exif_transpose(raw).convert("RGBA").getchannel("A")
    exif_bytes = None
    if exif:
        exif[0x0112] = 1  # Orientation: the pixels were turned upright above
        exif_bytes = exif.tobytes()
    if max_size and max(img.size) > max_size:
        img = ImageOps.contain(img, (max_size, max_size), Image.Resampling.LANCZOS)
        if alpha is not None:
            alpha = alpha.resize(img.size, Image.Resampling.LANCZOS)
    rgb = TF.to_dtype(TF.pil_to_tensor(img), torch.float32, scale=True)
    return Photo(rgb, alpha, exif_bytes, icc)


def write_photo(photo: Photo, path: str | Path, quality: int = 95) -> Path:
    """Save atomically; alpha, EXIF and colour profile are kept where the format holds them.
    A failed write (full disk, no permission) leaves nothing behind and names the file."""
    path = check_image_path(path)
    img = to_pil(photo.rgb)
    ext = path.suffix.lower()
    if photo.alpha is not None and ext in ALPHA_EXTENSIONS:
        img.putalpha(photo.alpha)
    kwargs = {} if ext == ".png" else {"quality": int(quality)}
    if photo.exif:
        kwargs["exif"] = photo.exif
    if photo.icc:
        kwargs["icc_profile"] = photo.icc
    try:
        return save_atomic(img, path, **kwargs)
    except OSError as e:
        hint = "free some disk space" if e.errno == errno.ENOSPC else "check the folder"
        raise ImageError(
            f"{path}: could not write ({os.strerror(e.errno) if e.errno else e}): "
            f"{hint} or choose another output=..."
        ) from None


def label_draw(img: Image.Image) -> ImageDraw.ImageDraw:
    """A drawing context for labels in Pillow's bitmap font: its FreeType default (Pillow >= 10.1)
    draws a space 2 px wide, which runs the words of a label together."""
    draw = ImageDraw.Draw(img)
    if hasattr(ImageFont, "load_default_imagefont"):
        draw.font = ImageFont.load_default_imagefont()
    return draw


def letterbox(rgb: torch.Tensor | None, size: int, label: str = "") -> torch.Tensor:
    """(3, H, W) in 0..1 fitted onto a white size x size square (blank when None), with an
    optional label in its top-left corner."""
    img = Image.new("RGB", (size, size), "white")
    if rgb is not None:
        img = ImageOps.pad(to_pil(rgb), (size, size), color="white")
    if label:
        label_draw(img).text((6, 6), label, fill="black")
    return TF.to_dtype(TF.pil_to_tensor(img), torch.float32, scale=True)


def image_grid(images: list[torch.Tensor], nrow: int, padding: int = 4,
               pad_value: float = 1.0) -> torch.Tensor:
    """(3, H, W) images of one size in 0..1 -> one (3, H', W') grid, row by row, nrow per row,
    `padding` px of pad_value between and around them."""
    return make_grid([im.detach().float().cpu() for im in images], nrow=nrow, padding=padding,
                     pad_value=pad_value)


def list_images(root: str | Path) -> list[Path]:
    """Image files under root, recursively, sorted (so the order is the same on every machine)."""
    root = Path(root)
    return sorted(
        p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    )


def load_style(style: dict[str, Any]) -> tuple[torch.Tensor, str]:
    """The style image at `style.size` as (1, 3, H, W) in 0..1, and the SHA-256 of its file (read
    once: the hash names the bytes that were used)."""
    path = Path(style["image"])
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageError(f"{path}: {e.strerror.lower()}: check style.image") from None
    image = load_tensor(path, max_side=style.get("size")).unsqueeze(0)
    return image, hashlib.sha256(data).hexdigest()
