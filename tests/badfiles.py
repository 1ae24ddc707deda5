"""Generates the photo folders users really have: good photos, photos in odd but usable modes,
and files no loader should crash on. Everything is made here, so the repository holds no blobs.

    python tests/badfiles.py OUT_DIR   # writes a folder to look at by hand
"""

from __future__ import annotations

import io
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def photo(size: tuple[int, int] = (64, 48), seed: int = 0) -> Image.Image:
    """A textured RGB image (smooth colour field plus noise): never near-constant."""
    rng = np.random.default_rng(seed)
    w, h = size
    low = rng.uniform(0, 255, (3, 3, 3))
    field = np.stack([np.kron(low[..., c], np.ones((h // 3 + 1, w // 3 + 1)))[:h, :w]
                      for c in range(3)], -1)
    noise = rng.normal(0, 25, (h, w, 3))
    return Image.fromarray(np.clip(field + noise, 0, 255).astype(np.uint8))


def write_good(folder: Path, n: int, size: tuple[int, int] = (64, 48), prefix: str = "good",
               seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{prefix}_{i:03d}.png"
        photo(size, seed + i).save(path)
        paths.append(path)
    return paths


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height and holds a few compressed zero rows: what a
    decompression bomb looks like from its header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * (3 * width + 1) * 4, 9)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


def _jpeg_bytes(img: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", **kwargs)
    return buf.getvalue()


def write_bad(folder: Path, seed: int = 100) -> dict[str, str]:
    """Files the dataset must skip, one warning each: {file name: why it is bad}."""
    folder.mkdir(parents=True, exist_ok=True)
    big = photo((200, 150), seed)
    png = io.BytesIO()
    big.save(png, format="PNG")
    bad = {
        "truncated.jpg": _jpeg_bytes(big, quality=90)[:600],
        "truncated.png": png.getvalue()[: len(png.getvalue()) // 2],
        "zero_bytes.jpg": b"",
        "text_file.png": b"these are notes, not pixels\n" * 20,
        "web_page.jpg": b"<!DOCTYPE html><html><body>404 Not Found</body></html>",
        "random_bytes.webp": np.random.default_rng(seed).bytes(3000),
        # decompression bombs: PIL's own limit, and ours for training photos (72 Mpx > 67 Mpx)
        "bomb_gigapixel.png": png_header_only(60000, 60000),
        "bomb_72mpx.png": png_header_only(9000, 8000),
    }
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    photo((10, 8), seed).save(folder / "tiny_10x8.png")
    Image.new("RGB", (64, 64), (90, 140, 200)).save(folder / "flat_wallpaper.png")
    rng = np.random.default_rng(seed)
    nearly = 128 + rng.integers(-1, 2, (64, 64, 3))
    Image.fromarray(nearly.astype(np.uint8)).save(folder / "near_constant.png")
    why = {
        "truncated.jpg": "truncated JPEG", "truncated.png": "truncated PNG",
        "zero_bytes.jpg": "zero-byte file", "text_file.png": "text with an image extension",
        "web_page.jpg": "HTML saved as .jpg", "random_bytes.webp": "random bytes",
        "bomb_gigapixel.png": "3.6 Gpx header (decompression bomb)",
        "bomb_72mpx.png": "72 Mpx header (over the training limit)",
        "tiny_10x8.png": "smaller than min_size", "flat_wallpaper.png": "constant colour",
        "near_constant.png": "near-constant colour (std < 2)",
    }
    return why


def write_odd(folder: Path, seed: int = 200) -> dict[str, str]:
    """Files in unusual but valid formats that must be used, not skipped: {name: what}."""
    folder.mkdir(parents=True, exist_ok=True)
    base = photo((64, 48), seed)
    base.convert("L").save(folder / "gray.png")
    base.convert("1").save(folder / "bilevel.png")
    base.convert("CMYK").save(folder / "cmyk.jpg")
    base.convert("P").save(folder / "palette.png")
    pal = base.convert("P")
    pal.info["transparency"] = 0
    pal.save(folder / "palette_transparent.png", transparency=0)
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(base.size))
    rgba.save(folder / "rgba.png")
    rgba.save(folder / "rgba.webp")
    base.convert("LA").save(folder / "gray_alpha.png")
    deep = (np.asarray(base.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(deep).save(folder / "gray_16bit.png")
    exif = base.getexif()
    exif[0x0112] = 6  # shown rotated by 90 degrees
    base.save(folder / "exif_rotated.jpg", exif=exif)
    base.save(folder / "progressive.jpg", progressive=True, quality=80)
    base.save(folder / "gif_named_png.png", format="GIF")
    photo((40, 36), seed + 1).save(folder / "small_40x36.png")  # above min_size: upscaled
    (folder / "a_folder.jpg").mkdir()  # a directory with an image extension: not listed
    return {
        "gray.png": "L", "bilevel.png": "1", "cmyk.jpg": "CMYK", "palette.png": "P",
        "palette_transparent.png": "P + transparency", "rgba.png": "RGBA", "rgba.webp": "RGBA",
        "gray_alpha.png": "LA", "gray_16bit.png": "I;16", "exif_rotated.jpg": "EXIF",
        "progressive.jpg": "progressive JPEG", "gif_named_png.png": "GIF named .png",
        "small_40x36.png": "smaller than the crop",
    }


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "badfiles")
    print("bad:", write_bad(out))
    print("odd:", write_odd(out))
    print("good:", len(write_good(out, 8)))
