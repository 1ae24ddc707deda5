"""Stylize photos with a trained model: python infer.py model=... input=... output=...

infer(cfg) is a plain function (tests call it); main() only adds Hydra and one-line errors.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from stylenet.export import ModelFileError
from stylenet.image import ImageError, list_images
from stylenet.stylize import Stylizer

log = logging.getLogger("stylenet.infer")


def infer(cfg: DictConfig) -> list[Path]:
    """Stylize one image or a folder; returns the files written. In a folder, a bad file is
    reported and skipped; the others are still done."""
    src, dst = Path(cfg.input), Path(cfg.output)
    if not src.exists():
        raise ImageError(f"{src}: input not found: check input=...")
    stylizer = Stylizer(cfg.model, device=cfg.device, precision=cfg.precision)
    if src.is_file():
        return [stylizer.stylize_file(src, dst, overwrite=cfg.overwrite, quality=cfg.quality)]
    files = list_images(src)
    if not files:
        raise ImageError(f"{src}: no .jpg/.jpeg/.png/.webp images in this folder")
    written, failed = [], []
    for f in files:
        try:
            written.append(stylizer.stylize_file(f, dst / f.relative_to(src), overwrite=cfg.overwrite, quality=cfg.quality))
        except ImageError as e:
            log.error("%s", e)
            failed.append(f)
    log.info("%d image(s) stylized into %s, %d failed", len(written), dst, len(failed))
    if failed and not written:
        raise ImageError(f"{src}: none of the {len(failed)} images could be stylized (see above)")
    return written


@hydra.main(version_base="1.3", config_path="configs/infer", config_name="infer")
def main(cfg: DictConfig) -> None:
    try:
        infer(cfg)
    except (ImageError, ModelFileError, RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
