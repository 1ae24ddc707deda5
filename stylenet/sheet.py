"""Contact sheet: several models side by side on the same photos, in one image.

Rows: a header with each model's style image, then one row per photo. Columns: the photo, then
each model's output. Every cell is letterboxed into a white square.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import torch

from stylenet.image import ImageError, image_grid, letterbox, read_photo
from stylenet.stylize import Stylizer

log = logging.getLogger(__name__)


def style_cell(meta: dict, size: int) -> torch.Tensor:
    """The model's style image when the file records one we can read, else its name."""
    style = meta.get("style", {})
    if isinstance(style.get("thumbnail"), torch.Tensor):
        return letterbox(style["thumbnail"].float() / 255, size)
    path = style.get("image")
    if path and Path(path).is_file():
        try:
            return letterbox(read_photo(path, size).rgb, size)
        except ImageError:
            pass
    return letterbox(None, size, label=f"style: {style.get('name', '?')}")


def contact_sheet(stylizers: Iterable[Stylizer], files: list[Path], size: int = 256,
                  max_size: int | None = None) -> torch.Tensor:
    """(3, H, W) sheet of the readable photos among files, each stylized by every stylizer
    (taken one at a time: a generator keeps one model in memory); unreadable photos are
    reported and left out."""
    photos = []
    for f in files:
        try:
            photos.append(read_photo(f, max_size).rgb)
        except ImageError as e:
            log.error("%s", e)
    if not photos:
        raise ImageError(f"none of the {len(files)} input files is a readable photo (see above): "
                         "no contact sheet")
    columns = [[letterbox(None, size)] + [letterbox(p, size) for p in photos]]
    for stylizer in stylizers:
        columns.append([style_cell(stylizer.meta, size)]
                       + [letterbox(stylizer(p), size) for p in photos])
    # image_grid fills row by row: interleave the columns.
    cells = [col[r] for r in range(len(photos) + 1) for col in columns]
    return image_grid(cells, nrow=len(columns), padding=4, pad_value=1.0)
