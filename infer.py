"""Stylize photos with a trained model: python infer.py model=... input=... output=...

input: an image, a folder (recursive, the tree is kept), a glob or a video. All the work is done
by stylenet.stylize.Stylizer and stylenet.video; infer(cfg) only maps inputs to outputs and is a
plain function (tests call it); main() only adds Hydra and one-line errors.
"""

from __future__ import annotations

import glob
import logging
import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, ListConfig
from PIL import Image, ImageDraw, ImageOps
from torchvision.transforms.v2 import functional as TF
from torchvision.utils import make_grid

from stylenet.export import ModelFileError
from stylenet.image import IMAGE_EXTENSIONS, ImageError, list_images
from stylenet.stylize import (
    OUTPUT_EXTENSIONS,
    Photo,
    Stylizer,
    check_output,
    check_overwrite,
    read_photo,
    write_photo,
)
from stylenet.video import is_video, stylize_video

log = logging.getLogger("stylenet.infer")

GLOB_CHARS = "*?["


def make_stylizer(cfg: DictConfig, model: str) -> Stylizer:
    return Stylizer(
        model, device=cfg.device, precision=cfg.precision, batch_size=cfg.batch_size,
        tile=cfg.tile, overlap=cfg.overlap, stats=cfg.stats, stats_size=cfg.stats_size,
        max_size=cfg.max_size,
        preserve_color=cfg.preserve_color, strength=cfg.strength,
    )


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
        fixed = list(iter_until_glob(src.parts))
        return Path(*fixed) if fixed else Path("."), files
    if not src.exists():
        raise ImageError(f"{src}: input not found: check input=...")
    if src.is_file():
        return None, [src]
    files = list_images(src)
    if not files:
        raise ImageError(f"{src}: no .jpg/.jpeg/.png/.webp images in this folder")
    return src, files


def iter_until_glob(parts: tuple[str, ...]):
    for part in parts:
        if any(c in part for c in GLOB_CHARS):
            return
        yield part


def check_settings(cfg: DictConfig) -> None:
    """Settings that would only fail after minutes of work fail now, naming the setting."""
    if not 1 <= int(cfg.quality) <= 100:
        raise ValueError(f"quality={cfg.quality}: use 1..100")
    if cfg.format is not None and f".{cfg.format}".lower() not in OUTPUT_EXTENSIONS:
        raise ValueError(f"format={cfg.format}: use jpg, png or webp, or null (keep each input's)")


def infer(cfg: DictConfig) -> list[Path]:
    """Stylize an image, a folder, a glob or a video; returns the files written. In a batch, a
    bad file is reported and skipped; the others are still done."""
    check_settings(cfg)
    models = list(cfg.model) if isinstance(cfg.model, ListConfig) else [cfg.model]
    if cfg.grid:
        return [contact_sheet(cfg, models)]
    if len(models) != 1:
        raise ValueError("model=[...]: several models only make sense with grid=true")
    if is_video(cfg.input):
        return [video(cfg, models[0])]
    base, files = find_inputs(str(cfg.input))
    dst = Path(cfg.output)
    stylizer = make_stylizer(cfg, models[0])
    if base is None:
        if dst.is_dir():
            dst = dst / files[0].name
        written = [stylizer.stylize_file(files[0], dst, cfg.overwrite, cfg.quality)]
    else:
        written = batch(cfg, stylizer, base, files, dst)
    if stylizer.device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(stylizer.device) / 2**30
        log.info("peak GPU memory: %.2f GiB", peak)
    return written


def batch(cfg: DictConfig, stylizer: Stylizer, base: Path, files: list[Path], dst: Path) -> list:
    from tqdm import tqdm

    if dst.suffix.lower() in IMAGE_EXTENSIONS:
        raise ImageError(f"output={dst}: a folder or glob input needs an output folder")
    if dst.resolve() == base.resolve() and not cfg.overwrite:
        raise ImageError(f"output={dst}: is the input folder, the results would overwrite the "
                         "photos: choose another output folder (or overwrite=true)")
    # An output folder inside the input folder: never stylize earlier results again.
    files = [f for f in files if not f.resolve().is_relative_to(dst.resolve())]
    written, failed = [], []
    bar = tqdm(files, unit="image", disable=None if cfg.progress is None else not cfg.progress)
    for f in bar:
        out = dst / f.relative_to(base)
        if cfg.format is not None:
            out = out.with_suffix(f".{cfg.format}".lower())
        try:
            written.append(stylizer.stylize_file(f, out, cfg.overwrite, cfg.quality))
        except ImageError as e:
            log.error("%s", e)
            failed.append(f)
    log.info("%d image(s) stylized into %s, %d failed", len(written), dst, len(failed))
    if failed and not written:
        raise ImageError(f"{base}: none of the {len(failed)} images could be stylized (see above)")
    return written


def video(cfg: DictConfig, model: str) -> Path:
    src, dst = Path(cfg.input), Path(cfg.output)
    if not src.is_file():
        raise ImageError(f"{src}: input not found: check input=...")
    check_overwrite(dst, cfg.overwrite, src)
    if dst.exists() and dst.resolve() == src.resolve():
        # The input is still being read while the output is written.
        raise ImageError(f"{dst}: a video cannot be stylized in place: choose another output")
    stylizer = make_stylizer(cfg, model)
    return stylize_video(stylizer, src, dst, batch_size=cfg.batch_size, progress=cfg.progress)


def contact_sheet(cfg: DictConfig, models: list[str]) -> Path:
    """One image: a header row with each model's style image, then per photo the photo and
    each model's output, all letterboxed into square cells."""
    dst = check_output(cfg.output)
    check_overwrite(dst, cfg.overwrite)
    _, files = find_inputs(str(cfg.input))
    size = int(cfg.grid_size)
    photos = []
    for f in files:
        try:
            photos.append((f, read_photo(f, cfg.max_size).rgb))
        except ImageError as e:
            log.error("%s", e)
    if not photos:
        raise ImageError(f"input={cfg.input}: no readable photos for the contact sheet")
    columns = [[cell(None, size)] + [cell(rgb, size) for _, rgb in photos]]
    for model in models:
        stylizer = make_stylizer(cfg, model)
        column = [style_cell(stylizer.meta, size)]
        column += [cell(stylizer(rgb), size) for _, rgb in photos]
        columns.append(column)
    # make_grid fills row by row: interleave the columns.
    cells = [col[r] for r in range(len(photos) + 1) for col in columns]
    sheet = make_grid(cells, nrow=len(columns), padding=4, pad_value=1.0)
    return write_photo(Photo(sheet), dst, cfg.quality)


def cell(rgb: torch.Tensor | None, size: int, label: str = "") -> torch.Tensor:
    """An image letterboxed on white into a size x size cell (blank when None)."""
    img = Image.new("RGB", (size, size), "white")
    if rgb is not None:
        img = ImageOps.pad(TF.to_pil_image(rgb.clamp(0, 1)), (size, size), color="white")
    if label:
        ImageDraw.Draw(img).text((6, 6), label, fill="black")
    return TF.to_dtype(TF.pil_to_tensor(img), torch.float32, scale=True)


def style_cell(meta: dict, size: int) -> torch.Tensor:
    """The model's style image when the file records one we can read, else its name."""
    style = meta.get("style", {})
    name = str(style.get("name", "?"))
    if isinstance(style.get("thumbnail"), torch.Tensor):
        return cell(style["thumbnail"].float() / 255, size)
    path = style.get("image")
    if path and Path(path).is_file():
        try:
            return cell(read_photo(path, size).rgb, size)
        except ImageError:
            pass
    return cell(None, size, label=f"style: {name}")


@hydra.main(version_base="1.3", config_path="configs/infer", config_name="infer")
def main(cfg: DictConfig) -> None:
    try:
        infer(cfg)
    except (ImageError, ModelFileError, RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
