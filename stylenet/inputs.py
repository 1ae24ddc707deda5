"""What infer.py's input= names (a file, a folder, a glob) and where each result goes.

A folder keeps its tree under the output folder; in a batch, a bad file is reported and skipped,
the others are still done.
"""

from __future__ import annotations

import glob
import logging
from collections.abc import Iterator
from pathlib import Path

from stylenet.image import IMAGE_EXTENSIONS, ImageError, check_image_path, list_images
from stylenet.stylize import Stylizer

log = logging.getLogger(__name__)

GLOB_CHARS = "*?["


def find_inputs(spec: str) -> tuple[Path | None, list[Path]]:
    """(base folder whose tree the outputs keep, or None for one file; the input files)."""
    src = Path(spec)
    if not src.exists() and any(c in spec for c in GLOB_CHARS):
        files = sorted(
            p for p in map(Path, glob.glob(spec, recursive=True))
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not files:
            raise ImageError(f"input={spec}: the pattern matches no .jpg/.jpeg/.png/.webp images")
        # The tree is kept below the last folder of the pattern without wildcards.
        fixed = list(parts_before_glob(src.parts))
        return Path(*fixed) if fixed else Path("."), files
    if not src.exists():
        raise ImageError(f"{src}: input not found: check input=...")
    if src.is_file():
        return None, [src]
    files = list_images(src)
    if not files:
        raise ImageError(f"{src}: no .jpg/.jpeg/.png/.webp images in this folder")
    return src, files


def parts_before_glob(parts: tuple[str, ...]) -> Iterator[str]:
    for part in parts:
        if any(c in part for c in GLOB_CHARS):
            return
        yield part


def check_format(fmt: str | None) -> str | None:
    """format=: the extension folder outputs get, or None to keep each input's."""
    if fmt is None:
        return None
    return check_image_path(f"x.{fmt}".lower(), "format", value=fmt).suffix


def stylize_files(stylizer: Stylizer, base: Path, files: list[Path], dst: Path,
                  fmt: str | None = None, overwrite: bool = False, quality: int = 95,
                  progress: bool | None = None) -> list[Path]:
    """Stylize files found under base into the same tree under the folder dst; returns the
    files written. fmt: jpg, png or webp for every output, None keeps each input's format."""
    from tqdm import tqdm

    suffix = check_format(fmt)
    if dst.suffix.lower() in IMAGE_EXTENSIONS:
        raise ImageError(f"output={dst}: a folder or glob input needs an output folder")
    if dst.resolve() == base.resolve() and not overwrite:
        raise ImageError(f"output={dst}: is the input folder, the results would overwrite the "
                         "photos: choose another output folder (or overwrite=true)")
    # An output folder inside the input folder: never stylize earlier results again.
    files = [f for f in files if not f.resolve().is_relative_to(dst.resolve())]
    written, failed = [], []
    for f in tqdm(files, unit="image", disable=None if progress is None else not progress):
        out = dst / f.relative_to(base)
        if suffix is not None:
            out = out.with_suffix(suffix)
        try:
            written.append(stylizer.stylize_file(f, out, overwrite, quality))
        except ImageError as e:
            log.error("%s", e)
            failed.append(f)
    log.info("%d image(s) stylized into %s, %d failed", len(written), dst, len(failed))
    if failed and not written:
        raise ImageError(f"{base}: none of the {len(failed)} images could be stylized (see above)")
    return written
